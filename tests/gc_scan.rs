//! What `hfcachefs gc` sees and accepts, on real mounts: every hub cache of the store (a
//! team's `HF_HOME/hub` deeper down too), snapshot links a member planted, files hard-linked
//! outside the store, pinned revisions under `--older-than`, and which paths and flags it
//! takes.

mod common;

use common::gc::*;
use common::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Output;

const KB: usize = 1024;
const DAY: i64 = 86400;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A commit hash for a test's revision `tag`.
fn c(tag: &str) -> String {
    sha256(tag.as_bytes())[..40].to_owned()
}

fn touch(p: &Path, t: i64) {
    let ts = ts(t, 0);
    utimensat(libc::AT_FDCWD, p, ts, ts, libc::AT_SYMLINK_NOFOLLOW).unwrap();
}

/// One revision `tag` of `repo` in the hub cache `hub` (a path below the store), as a
/// download leaves it, everything last changed at `t`: one file of `size` bytes, its blob
/// in the repo, or (`shared`) a link to a payload in `<hub>/blobs/<2hex>/`; `main`
/// pointing at it. Returns the file's blob (the payload, when shared).
fn make_rev(
    m: &Mount,
    hub: &str,
    repo: &str,
    tag: &str,
    size: usize,
    t: i64,
    shared: bool,
) -> String {
    let commit = c(tag);
    let r = m.s(&format!("{hub}/{repo}"));
    let snap = r.join(format!("snapshots/{commit}"));
    for d in [r.join("blobs"), r.join("refs"), snap.clone()] {
        fs::create_dir_all(d).unwrap();
    }
    let data = pattern(t as u64 ^ random_u64(), size);
    let etag = sha256(&data);
    let blob = r.join(format!("blobs/{etag}"));
    let file = if shared {
        let dir = format!("{hub}/blobs/{}", &etag[..2]);
        fs::create_dir_all(m.s(&dir)).unwrap();
        let payload = format!("{dir}/{etag}");
        fs::write(m.s(&payload), &data).unwrap();
        fs::write(m.s(&format!("{payload}.refs")), repo).unwrap();
        fs::write(
            m.s(&format!("{hub}/blobs/.huggingface-shared-blobs")),
            "1\n",
        )
        .unwrap();
        symlink(format!("../../blobs/{}/{etag}", &etag[..2]), &blob).unwrap();
        touch(&m.s(&payload), t);
        payload
    } else {
        fs::write(&blob, &data).unwrap();
        format!("{hub}/{repo}/blobs/{etag}")
    };
    touch(&blob, t);
    let link = snap.join(format!("own-{tag}.bin"));
    symlink(format!("../../blobs/{etag}"), &link).unwrap();
    touch(&link, t);
    fs::write(r.join("refs/main"), &commit).unwrap();
    touch(&snap, t);
    let top = hub.split('/').next().unwrap();
    sh(&format!("chmod -R a+rX '{}'", m.s(top).display()));
    file
}

/// The bytes a dry run says removing `commit` frees.
fn bytes_of(j: &str, commit: &str) -> u64 {
    let at = j.find(commit).unwrap_or_else(|| panic!("{commit} in {j}"));
    json_u64(&j[at..], "bytes")
}

#[test]
fn hub_caches_deeper_in_the_store_are_evicted_too() {
    // `hub/` and a team's `team/hub/`, each with both layouts; by last use: a (hub), b
    // (team), c (hub), d (team). Making room for two frees a and b, whichever cache they
    // are in.
    let m = Mount::new();
    let a = make_rev(&m, "hub", "models--o--a", "a1", 100 * KB, 1_000_000, false);
    let b = make_rev(
        &m,
        "team/hub",
        "models--o--b",
        "b1",
        100 * KB,
        2_000_000,
        true,
    );
    let cc = make_rev(&m, "hub", "models--o--c", "c1", 100 * KB, 3_000_000, true);
    let d = make_rev(
        &m,
        "team/hub",
        "models--o--d",
        "d1",
        100 * KB,
        4_000_000,
        false,
    );
    let mnt = m.mnt.display().to_string();
    let dry = hf(&["gc", &mnt, "--older-than", "1d", "--dry-run", "--json"]);
    assert_eq!(code(&dry), 0, "{}", out_str(&dry));
    let j = stdout(&dry);
    let total = json_u64(&j, "store_bytes");
    // Every revision is seen, in both caches, oldest first.
    let order: Vec<usize> = ["a1", "b1", "c1", "d1"]
        .iter()
        .map(|t| j.find(&c(t)).unwrap_or_else(|| panic!("{t} in {j}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{j}");
    assert!(j.contains("\"repo\":\"team/hub/models--o--b\""), "{j}");

    let max = (total - 150 * KB as u64).to_string();
    let o = hf(&["gc", &mnt, "--max-size", &max, "--json"]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    assert!(stdout(&o).contains("\"met\":true"), "{}", out_str(&o));
    for (gone, file) in [("hub/models--o--a", &a), ("team/hub/models--o--b", &b)] {
        assert!(!exists(&m.s(gone)), "{gone}: {}", out_str(&o));
        assert!(!exists(&m.s(file)), "{file}");
    }
    for (kept, file) in [("hub/models--o--c", &cc), ("team/hub/models--o--d", &d)] {
        assert!(exists(&m.s(kept)), "{kept}: {}", out_str(&o));
        assert!(exists(&m.s(file)), "{file}");
    }
    // The team cache itself stays, and nothing was made in it.
    assert!(exists(&m.s("team/hub/blobs")));
    assert!(!exists(&m.s("team/.hfcachefs")) && !exists(&m.s("team/hub/.hfcachefs")));
}

#[test]
fn gc_takes_a_mountpoint_or_its_store_and_nothing_below() {
    let m = Mount::new();
    make_rev(&m, "hub", "models--o--a", "a1", 10 * KB, 1_000_000, false);
    make_rev(&m, "hub", "models--o--b", "b1", 10 * KB, 1_000_000, false);
    let mnt = m.mnt.display().to_string();
    let store = m.store.display().to_string();
    let o = hf(&["pin", "o/a", &mnt]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    let outside = m.base.fresh("elsewhere");
    fs::create_dir(&outside).unwrap();
    let outside = outside.display().to_string();
    // Below the mount or the store, or a directory no mount serves: refused, in one line
    // naming the mountpoint, and nothing is made there.
    for bad in [
        format!("{mnt}/hub"),
        format!("{mnt}/hub/models--o--b"),
        format!("{store}/hub"),
        format!("{store}/.hfcachefs"),
        format!("{mnt}/hub/../hub"),
    ] {
        let o = hf(&["gc", &bad, "--older-than", "1d"]);
        assert_eq!(code(&o), 2, "{bad}: {}", out_str(&o));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        assert!(err.contains(&format!("hfcachefs gc {mnt}")), "{bad}: {err}");
        assert!(stdout(&o).is_empty(), "{bad}: {}", out_str(&o));
    }
    let o = hf(&["gc", &outside, "--older-than", "1d", "--dry-run"]);
    assert_eq!(code(&o), 2, "{}", out_str(&o));
    assert!(out_str(&o).contains("neither an hfcachefs mountpoint nor the store"));
    assert!(!exists(&m.s("hub/.hfcachefs")) && !exists(&Path::new(&outside).join(".hfcachefs")));
    assert!(exists(&m.s("hub/models--o--b")), "nothing was removed");
    // A member looks through the mount, not at the store.
    let u = users();
    let member = sh_as(
        &u.a,
        0o022,
        &format!("'{BIN}' gc '{store}' --older-than 1d --dry-run"),
    );
    assert_eq!(member.status.code(), Some(2), "{}", out_str(&member));
    assert!(out_str(&member).contains(&format!("hfcachefs gc {mnt} --dry-run")));
    // The store of the running mount is the mount's: its pins hold.
    let o = hf(&["gc", &store, "--older-than", "1d"]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    assert!(
        out_str(&o).contains(&format!("models--o--a@{}: pinned", c("a1"))),
        "{}",
        out_str(&o)
    );
    assert!(exists(&m.s("hub/models--o--a")));
    assert!(!exists(&m.s("hub/models--o--b")));
}

#[test]
fn planted_snapshot_links_do_not_stop_eviction() {
    // Links whose target ends in a name no blob has: the parent directory, the directory
    // itself, a name longer than a directory entry can be, a lock. They name no blob: the
    // revision goes with them, and nothing outside its repo's blobs is touched.
    let m = Mount::new();
    make_rev(&m, "hub", "models--o--a", "a1", 10 * KB, 1_000_000, false);
    make_rev(&m, "hub", "models--o--b", "b1", 10 * KB, 2_000_000, true);
    let long = "x".repeat(300);
    for (repo, tag) in [("models--o--a", "a1"), ("models--o--b", "b1")] {
        let snap = m.s(&format!("hub/{repo}/snapshots/{}", c(tag)));
        for (n, target) in [
            ("up", "../../blobs/..".to_owned()),
            ("dot", "../../blobs/.".to_owned()),
            ("long", format!("../../blobs/{long}")),
            ("lock", "../../blobs/x.lock".to_owned()),
        ] {
            symlink(&target, snap.join(n)).unwrap();
            touch(&snap.join(n), 1_000_000);
        }
        touch(&snap, 1_000_000);
    }
    let mnt = m.mnt.display().to_string();
    for _ in 0..2 {
        let o = hf(&["gc", &mnt, "--older-than", "1d"]);
        assert_eq!(code(&o), 0, "{}", out_str(&o));
        assert!(o.stderr.is_empty(), "{}", out_str(&o));
    }
    let left = sh(&format!("cd '{}' && find hub | sort", m.s("").display()));
    assert!(!exists(&m.s("hub/models--o--a")), "{}", out_str(&left));
    assert!(!exists(&m.s("hub/models--o--b")), "{}", out_str(&left));
    assert!(exists(&m.s("hub")) && exists(&m.s("hub/blobs")));
}

#[test]
fn a_file_linked_outside_the_store_frees_nothing() {
    // `import` without `--move` on the same filesystem leaves the file's other link where
    // it was: removing the revision frees nothing of it.
    let m = Mount::new();
    let a = make_rev(&m, "hub", "models--o--a", "a1", 100 * KB, 1_000_000, false);
    let b = make_rev(&m, "hub", "models--o--b", "b1", 100 * KB, 2_000_000, true);
    let ref_disk = fs::metadata(m.s("hub/models--o--a/refs/main"))
        .unwrap()
        .blocks()
        * 512;
    let mnt = m.mnt.display().to_string();
    let dry = |m: &Mount| {
        let o = hf(&["gc", &mnt, "--older-than", "1d", "--dry-run", "--json"]);
        assert_eq!(code(&o), 0, "{}", out_str(&o));
        let j = stdout(&o);
        let disk = |f: &str| fs::metadata(m.s(f)).unwrap().blocks() * 512;
        (j, disk(&a), disk(&b))
    };
    let (j, a_disk, _) = dry(&m);
    assert_eq!(bytes_of(&j, &c("a1")), a_disk + ref_disk, "{j}");
    // One link outside the store for each layout's file.
    let outside = m.base.store.parent().unwrap();
    fs::hard_link(m.s(&a), outside.join("a.bin")).unwrap();
    fs::hard_link(m.s(&b), outside.join("b.bin")).unwrap();
    let (j, _, _) = dry(&m);
    assert_eq!(bytes_of(&j, &c("a1")), ref_disk, "only its ref: {j}");
    let hint = fs::metadata(m.s(&format!("{b}.refs"))).unwrap().blocks() * 512;
    assert_eq!(
        bytes_of(&j, &c("b1")),
        ref_disk + hint,
        "its ref and the payload's hint: {j}"
    );
    // Still removed with their revisions; the other links keep the bytes.
    let o = hf(&["gc", &mnt, "--max-size", "0"]);
    assert!(o.stderr.is_empty(), "{}", out_str(&o));
    assert!(!exists(&m.s("hub/models--o--a")) && !exists(&m.s(&b)));
    assert_eq!(
        fs::metadata(outside.join("a.bin")).unwrap().len(),
        100 * KB as u64
    );
}

#[test]
fn older_than_keeps_pinned_revisions_and_meets_the_goal() {
    let m = Mount::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    make_rev(
        &m,
        "hub",
        "models--o--a",
        "a1",
        10 * KB,
        now - 10 * DAY,
        false,
    );
    make_rev(
        &m,
        "hub",
        "models--o--b",
        "b1",
        10 * KB,
        now - 9 * DAY,
        false,
    );
    make_rev(
        &m,
        "hub",
        "models--o--c",
        "c1",
        10 * KB,
        now - 8 * DAY,
        false,
    );
    make_rev(&m, "hub", "models--o--n", "n1", 10 * KB, now, false);
    let mnt = m.mnt.display().to_string();
    for p in ["o/a", "o/c"] {
        let o = hf(&["pin", p, &mnt]);
        assert_eq!(code(&o), 0, "{}", out_str(&o));
    }
    let o = hf(&["gc", &mnt, "--older-than", "7d"]);
    let text = out_str(&o);
    assert_eq!(
        code(&o),
        0,
        "pinned revisions are the administrator's choice: {text}"
    );
    assert!(
        text.contains(&format!("models--o--a@{}: pinned", c("a1"))),
        "{text}"
    );
    assert!(text.contains("goal met"), "{text}");
    assert!(!exists(&m.s("hub/models--o--b")), "{text}");
    assert!(exists(&m.s("hub/models--o--a")) && exists(&m.s("hub/models--o--n")));
    let last = fs::read_to_string(m.s(".hfcachefs/last-eviction")).unwrap();
    assert!(last.trim_end().ends_with("goal met"), "{last}");

    // A download in progress into an old revision's repo is in the way: not met, and why.
    // (A file opened through the mount is in the way too, but opening it is a use: it is
    // no longer old.)
    let o = hf(&["unpin", "o/c", &mnt]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    fs::write(m.s("hub/models--o--c/blobs/feed.incomplete"), b"partial").unwrap();
    let o = hf(&["gc", &mnt, "--older-than", "7d"]);
    let text = out_str(&o);
    assert_eq!(code(&o), 1, "{text}");
    assert!(
        text.contains(&format!("models--o--c@{}: download in progress", c("c1"))),
        "{text}"
    );
    assert!(text.contains("goal not met"), "{text}");
    assert!(exists(&m.s("hub/models--o--c")) && exists(&m.s("hub/models--o--a")));
}

#[test]
fn a_goal_is_given_once() {
    let m = Mount::new();
    let mnt = m.mnt.display().to_string();
    let flags: [&[&str]; 4] = [
        &["--max-size", "1G", "--max-size", "2G"],
        &["--max-size=1G", "--max-size", "1G"],
        &["--older-than", "1d", "--older-than", "2d"],
        &["--max-size", "1G", "--free", "1G"],
    ];
    for bad in flags {
        let mut args = vec!["gc", &mnt, "--dry-run"];
        args.extend(bad.iter().copied());
        let o = hf(&args);
        assert_eq!(code(&o), 2, "{bad:?}: {}", out_str(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).lines().count(),
            1,
            "{bad:?}"
        );
        assert!(o.stdout.is_empty(), "{bad:?}");
    }
    let o = hf(&[
        "gc",
        &mnt,
        "--dry-run",
        "--max-size",
        "1G",
        "--max-size",
        "1G",
    ]);
    assert!(
        out_str(&o).contains("--max-size given more than once"),
        "{}",
        out_str(&o)
    );
    let o = hf(&["gc", &mnt, "--dry-run", "--max-size", "1G"]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
}

/// A killed run's trash, across two hub caches holding a repo of the same name: each entry
/// names its hub cache, and the next run sweeps each in its own (an older run's entry,
/// which names none, in `hub/`); what it leaves (a locked blob) is listed under its hub
/// cache, and swept there by the run after.
#[test]
fn a_killed_run_across_hub_caches_is_finished_in_each() {
    let m = Mount::new();
    let mnt = m.mnt.display().to_string();
    let ha = make_rev(&m, "hub", "models--o--a", "ha", 20 * KB, 1_000_000, false);
    let ta = make_rev(
        &m,
        "team/hub",
        "models--o--a",
        "ta",
        20 * KB,
        1_000_000,
        true,
    );
    let tp = make_rev(
        &m,
        "team/hub",
        "models--o--p",
        "tp",
        20 * KB,
        1_000_000,
        true,
    );
    let old = make_rev(
        &m,
        "hub",
        "models--o--old",
        "old",
        20 * KB,
        1_000_000,
        false,
    );
    let hk = make_rev(&m, "hub", "models--o--k", "hk", 20 * KB, 1_000_000, false);
    let tk = make_rev(
        &m,
        "team/hub",
        "models--o--k",
        "tk",
        20 * KB,
        1_000_000,
        true,
    );
    let o = hf(&["gc", &mnt, "--max-size", "1P"]);
    assert_eq!(code(&o), 0, "makes .hfcachefs: {}", out_str(&o));
    // The trash is made by the first run, and kept (a full disk may not let a run make it).
    let trash = m.s(".hfcachefs/trash");
    let meta = fs::symlink_metadata(&trash).expect("the trash is there");
    assert!(meta.is_dir() && meta.mode() & 0o7777 == 0o700 && meta.uid() == 0);
    // Refs gone, snapshots moved: `team/hub` escaped as one name.
    let killed = |hub: &str, repo: &str, tag: &str, entry: String| {
        fs::remove_file(m.s(&format!("{hub}/{repo}/refs/main"))).unwrap();
        fs::rename(
            m.s(&format!("{hub}/{repo}/snapshots/{}", c(tag))),
            trash.join(entry),
        )
        .unwrap();
    };
    killed(
        "hub",
        "models--o--a",
        "ha",
        format!("snap@hub@models--o--a@{}@1.0", c("ha")),
    );
    killed(
        "team/hub",
        "models--o--a",
        "ta",
        format!("snap@team%2Fhub@models--o--a@{}@1.0", c("ta")),
    );
    killed(
        "hub",
        "models--o--old",
        "old",
        format!("snap@models--o--old@{}@1.0", c("old")),
    );
    // p's run got further: its blob gone, its payload listed.
    killed(
        "team/hub",
        "models--o--p",
        "tp",
        format!("snap@team%2Fhub@models--o--p@{}@1.0", c("tp")),
    );
    let tp_name = Path::new(&tp)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    fs::remove_file(m.s(&format!("team/hub/models--o--p/blobs/{tp_name}"))).unwrap();
    fs::write(
        trash.join("payloads@team%2Fhub@@@1.0"),
        format!("{}/{tp_name}\n", &tp_name[..2]),
    )
    .unwrap();

    // l's blob is locked by a download: left, listed in the trash under team/hub.
    let tl = make_rev(
        &m,
        "team/hub",
        "models--o--l",
        "tl",
        20 * KB,
        1_000_000,
        false,
    );
    killed(
        "team/hub",
        "models--o--l",
        "tl",
        format!("snap@team%2Fhub@models--o--l@{}@1.0", c("tl")),
    );
    let tl_name = Path::new(&tl)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let locks = m.s("team/hub/.locks/models--o--l");
    fs::create_dir_all(&locks).unwrap();
    let lock = open(
        &locks.join(format!("{tl_name}.lock")),
        libc::O_RDONLY | libc::O_CREAT,
        0o660,
    )
    .unwrap();
    flock(lock.as_raw_fd(), libc::LOCK_EX).unwrap();

    let o = hf(&["gc", &mnt, "--max-size", "1P"]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        err.trim_end(),
        format!(
            "hfcachefs gc: team/hub: models--o--l/blobs/{tl_name}: left for a later run \
             (its download lock is held)"
        ),
        "{}",
        out_str(&o)
    );
    assert!(exists(&m.s(&tl)), "a locked blob stays");
    let listed: Vec<String> = fs::read_dir(&trash)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        listed.len() == 1 && listed[0].starts_with("blobs@team%2Fhub@models--o--l@"),
        "{listed:?}"
    );
    for (repo, file) in [
        ("hub/models--o--a", &ha),
        ("team/hub/models--o--a", &ta),
        ("team/hub/models--o--p", &tp),
        ("hub/models--o--old", &old),
    ] {
        assert!(!exists(&m.s(repo)), "{repo} emptied and removed");
        assert!(!exists(&m.s(file)), "{file} swept");
    }
    assert!(!exists(&m.s(&format!("{tp}.refs"))), "its hint too");
    for (repo, file) in [("hub/models--o--k", &hk), ("team/hub/models--o--k", &tk)] {
        assert!(exists(&m.s(repo)) && exists(&m.s(file)), "{repo} untouched");
    }

    // Released: the next run removes it, from team/hub.
    drop(lock);
    let o = hf(&["gc", &mnt, "--max-size", "1P"]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    assert!(o.stderr.is_empty(), "{}", out_str(&o));
    assert!(!exists(&m.s(&tl)) && !exists(&m.s("team/hub/models--o--l")));
    assert!(fs::read_dir(&trash).unwrap().next().is_none());
}
