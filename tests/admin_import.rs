//! `hfcachefs import` and `hfcachefs stats` with real users' caches: two users' overlapping
//! caches of one model (different revisions) end up as one copy of each blob, both
//! revisions work through the mount for both users, the reported savings are right, a
//! re-run changes nothing, an interrupted run is finished by the next, `--move` deletes
//! only verified sources, and nothing outside a source is followed.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const REPO: &str = "hub/models--org--shared";

fn hf(args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    run_timeout(c, Duration::from_secs(90))
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The number after `label` in a summary line (`bytes saved by deduplication: 123 (...)`).
#[track_caller]
fn number_after(t: &str, label: &str) -> u64 {
    let at = t
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in\n{t}"));
    t[at + label.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in\n{t}"))
}

/// One user's `HF_HOME`, built as they would have it (umask 022), owned by them.
struct Cache {
    home: PathBuf,
}

impl Cache {
    fn new(home: PathBuf) -> Cache {
        fs::create_dir_all(home.join(REPO).join("blobs")).unwrap();
        fs::create_dir_all(home.join("hub/.locks/models--org--shared")).unwrap();
        Cache { home }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }

    fn blob(&self, name: &str, data: &[u8]) {
        write_file(&self.p(&format!("{REPO}/blobs/{name}")), data).unwrap();
    }

    /// A revision whose files point at blobs, and a ref to it written at `ref_age` ago.
    fn revision(&self, rev: &str, files: &[(&str, &str)], ref_name: &str, ref_age: u64) {
        let snap = self.p(&format!("{REPO}/snapshots/{rev}"));
        fs::create_dir_all(&snap).unwrap();
        for (file, blob) in files {
            symlink(format!("../../blobs/{blob}"), snap.join(file)).unwrap();
        }
        let refs = self.p(&format!("{REPO}/refs"));
        fs::create_dir_all(&refs).unwrap();
        write_file(&refs.join(ref_name), rev.as_bytes()).unwrap();
        let age = format!("{ref_age} seconds ago");
        run_ok(cmd(
            "touch",
            &["-d", &age, refs.join(ref_name).to_str().unwrap()],
        ));
    }

    fn own(&self, u: &User) {
        run_ok(cmd(
            "chown",
            &[
                "-R",
                &format!("{}:{}", u.uid, u.gid),
                self.home.to_str().unwrap(),
            ],
        ));
        run_ok(cmd(
            "chmod",
            &["-R", "u+rwX,go+rX,go-w", self.home.to_str().unwrap()],
        ));
    }
}

/// A tmpfs, so that one user's cache is on another filesystem than the store.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: PathBuf) -> Tmpfs {
        fs::create_dir(&dir).unwrap();
        run_ok(cmd(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=64m,mode=0755",
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        ));
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = fs::remove_dir(&self.0);
    }
}

fn read_as(user: &User, path: &Path) -> Vec<u8> {
    let p = path.to_path_buf();
    as_user(user, 0o022, move || fs::read(&p))
        .unwrap_or_else(|e| panic!("{} reads {}: {e}", user.name, path.display()))
}

#[test]
fn import_merges_two_users_overlapping_caches_once() {
    let m = Mount::new();
    let u = m.users;
    let store = m.store.display().to_string();
    let tmpfs = Tmpfs::new(m.base.fresh("tmpfs"));

    let weights = pattern(1, 1 << 20);
    let tokenizer = pattern(2, 64 << 10);
    // A: revision r1, on the store's filesystem (hard links).
    let a = Cache::new(m.base.fresh("home-a").join(".cache/huggingface"));
    a.blob("c1", b"{\"rev\": 1}");
    a.blob("w", &weights);
    a.blob("t", &tokenizer);
    a.blob("half.incomplete", b"partial");
    a.revision(
        "r1",
        &[
            ("config.json", "c1"),
            ("model.bin", "w"),
            ("tokenizer.json", "t"),
        ],
        "main",
        7200,
    );
    fs::create_dir_all(a.p(&format!("{REPO}/.no_exist/r1"))).unwrap();
    write_file(&a.p(&format!("{REPO}/.no_exist/r1/README.md")), b"").unwrap();
    write_file(&a.p("hub/.locks/models--org--shared/w.lock"), b"").unwrap();
    write_file(&a.p("token"), b"hf_secret").unwrap();
    fs::create_dir_all(a.p("modules/code")).unwrap();
    fs::create_dir_all(a.p("datasets/json/default")).unwrap();
    write_file(&a.p("datasets/json/default/data.arrow"), b"arrow").unwrap();
    // Never followed: a directory symlink out of the cache and a snapshot file pointing at
    // a root-only file; a planted hard link to a root-owned file is refused.
    symlink("/etc", a.p(&format!("{REPO}/snapshots/r1/etc"))).unwrap();
    symlink("/etc/shadow", a.p(&format!("{REPO}/snapshots/r1/shadow"))).unwrap();
    let rootfile = m.base.fresh("rootfile");
    write_file(&rootfile, b"root's").unwrap();
    fs::set_permissions(&rootfile, fs::Permissions::from_mode(0o600)).unwrap();
    a.own(&u.a);
    fs::hard_link(&rootfile, a.p(&format!("{REPO}/blobs/planted"))).unwrap();

    // B: revision r2, sharing the weights and tokenizer, on another filesystem (copies).
    let b = Cache::new(tmpfs.0.join("home-b/.cache/huggingface"));
    b.blob("c2", b"{\"rev\": 2}");
    b.blob("w", &weights);
    b.blob("t", &tokenizer);
    b.revision(
        "r2",
        &[
            ("config.json", "c2"),
            ("model.bin", "w"),
            ("tokenizer.json", "t"),
        ],
        "main",
        60,
    );
    b.own(&u.b);
    let (a_home, b_home) = (a.home.display().to_string(), b.home.display().to_string());
    let before_a = snapshot(&a.home, false);
    let before_b = snapshot(&b.home, false);

    // Dry run: the plan, and nothing changes.
    let before_store = snapshot(&m.store, false);
    let dry = hf(&["import", &a_home, &b_home, "--store", &store, "--dry-run"]);
    assert!(dry.status.success(), "{}", out_str(&dry));
    assert_same_snapshot(&before_store, &snapshot(&m.store, false), "dry run (store)");
    assert_same_snapshot(&before_a, &snapshot(&a.home, false), "dry run (source A)");

    let o = hf(&["import", &a_home, &b_home, "--store", &store]);
    assert!(o.status.success(), "{}", out_str(&o));
    let t = text(&o);
    let shared = (weights.len() + tokenizer.len()) as u64;
    assert_eq!(
        number_after(&t, "bytes saved by deduplication:"),
        shared,
        "{t}"
    );
    assert_eq!(
        number_after(&text(&dry), "bytes saved by deduplication:"),
        shared,
        "dry run\n{}",
        text(&dry)
    );
    assert!(t.contains("repos: 1 (1 new"), "{t}");
    assert!(t.contains("blobs: 4 imported, 2 deduplicated"), "{t}");
    assert!(
        t.contains("never copied") && t.contains("modules: not part of the shared cache"),
        "{t}"
    );
    assert!(t.contains("planted: not imported"), "{t}");

    // One copy of each blob, owned by who brought it, with the group and the policy's mode.
    let mut blobs = names(&m.s(&format!("{REPO}/blobs"))).unwrap();
    blobs.sort();
    assert_eq!(blobs, ["c1", "c2", "t", "w"]);
    assert_store(&m, &format!("{REPO}/blobs/c1"), u.a.uid, u.gid, 0o660);
    assert_store(&m, &format!("{REPO}/blobs/w"), u.a.uid, u.gid, 0o660);
    assert_store(&m, &format!("{REPO}/blobs/c2"), u.b.uid, u.gid, 0o660);
    assert_store(&m, REPO, u.a.uid, u.gid, 0o2770);
    assert_eq!(
        m.sst(&format!("{REPO}/blobs/w")).ino,
        lst(&a.p(&format!("{REPO}/blobs/w"))).unwrap().ino,
        "A's blob is hard-linked"
    );
    assert_ne!(
        m.sst(&format!("{REPO}/blobs/c2")).dev,
        lst(&b.p(&format!("{REPO}/blobs/c2"))).unwrap().dev
    );
    assert_eq!(
        fs::read(m.s(&format!("{REPO}/blobs/c2"))).unwrap(),
        b"{\"rev\": 2}",
        "B's blob is a verified copy"
    );
    // The newest ref wins; markers and datasets come along; tokens, code, locks do not.
    assert_eq!(fs::read(m.s(&format!("{REPO}/refs/main"))).unwrap(), b"r2");
    assert!(m.s(&format!("{REPO}/.no_exist/r1/README.md")).exists());
    assert_eq!(
        fs::read(m.s("datasets/json/default/data.arrow")).unwrap(),
        b"arrow"
    );
    for absent in [
        "token",
        "modules",
        "hub/.locks",
        &format!("{REPO}/blobs/half.incomplete"),
    ] {
        assert!(lst(&m.s(absent)).is_err(), "{absent} must not be imported");
    }
    assert!(m.sst(&format!("{REPO}/snapshots/r1/etc")).is_symlink());
    assert!(m.sst(&format!("{REPO}/snapshots/r1/shadow")).is_symlink());
    assert!(lst(&m.s(&format!("{REPO}/blobs/planted"))).is_err());

    // Both revisions work through the mount, for both users.
    for user in [&u.a, &u.b] {
        let r1 = m.p(&format!("{REPO}/snapshots/r1"));
        let r2 = m.p(&format!("{REPO}/snapshots/r2"));
        assert_eq!(read_as(user, &r1.join("config.json")), b"{\"rev\": 1}");
        assert_eq!(read_as(user, &r2.join("config.json")), b"{\"rev\": 2}");
        assert_eq!(read_as(user, &r1.join("model.bin")), weights);
        assert_eq!(read_as(user, &r2.join("tokenizer.json")), tokenizer);
    }

    // stats sees the sharing: two revisions use the same weights and tokenizer.
    let s = hf(&["stats", &m.mnt.display().to_string(), "--json"]);
    assert!(s.status.success(), "{}", out_str(&s));
    let j = text(&s);
    assert!(
        j.contains(&format!("\"snapshot_shared_bytes\":{shared}")),
        "{j}"
    );
    assert!(j.contains("\"repo_count\":1"), "{j}");
    assert!(j.contains("{\"name\":\"models--org--shared\""), "{j}");
    assert!(j.contains(&format!("\"uid\":{}", u.b.uid)), "{j}");
    let human = hf(&["stats", &store]);
    assert!(
        text(&human).contains("models--org--shared  (2 revisions"),
        "{}",
        out_str(&human)
    );

    // A re-run changes nothing.
    let before_store = snapshot(&m.store, false);
    let o = hf(&["import", &a_home, &b_home, "--store", &store]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert!(text(&o).contains("blobs: 0 imported"), "{}", out_str(&o));
    assert_same_snapshot(&before_store, &snapshot(&m.store, false), "re-run");
    assert_same_snapshot(
        &before_b,
        &snapshot(&b.home, false),
        "source B without --move",
    );

    // An interrupted run left a directory made but not handed over (root's, 0700), and
    // there is a file named like the temporary copies of older versions: the next run
    // hands the directory over, and neither publishes nor removes the file.
    b.blob("c3", b"three");
    b.revision("r3", &[("config.json", "c3")], "pr3", 60);
    b.own(&u.b);
    let r3 = m.s(&format!("{REPO}/snapshots/r3"));
    fs::create_dir(&r3).unwrap();
    fs::set_permissions(&r3, fs::Permissions::from_mode(0o700)).unwrap();
    write_file(&m.s(&format!("{REPO}/blobs/.c3.hfcachefs-import")), b"thr").unwrap();
    // --move: B's files go once the store holds them; B's directory tree goes when empty.
    let o = hf(&["import", &b_home, "--store", &store, "--move"]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert_eq!(
        fs::read(m.s(&format!("{REPO}/blobs/c3"))).unwrap(),
        b"three"
    );
    assert_eq!(
        fs::read(m.s(&format!("{REPO}/blobs/.c3.hfcachefs-import"))).unwrap(),
        b"thr"
    );
    assert_store(&m, &format!("{REPO}/snapshots/r3"), u.b.uid, u.gid, 0o2770);
    assert!(
        m.sst(&format!("{REPO}/snapshots/r3/config.json"))
            .is_symlink()
    );
    assert!(
        lst(&b.p(REPO)).is_err(),
        "B's repo removed by --move: {:?}",
        names(&b.p("hub"))
    );
    assert!(
        b.p("hub/.locks").exists(),
        "lock files are not imported, so not removed"
    );
    assert_eq!(
        read_as(&u.b, &m.p(&format!("{REPO}/snapshots/r2/model.bin"))),
        weights
    );
}

#[test]
fn import_refuses_bad_sources_and_usage() {
    let m = Mount::new();
    let store = m.store.display().to_string();
    let plain = m.base.fresh("plain");
    fs::create_dir(&plain).unwrap();
    let o = hf(&["import", plain.to_str().unwrap(), "--store", &store]);
    assert_eq!(o.status.code(), Some(1), "{}", out_str(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not look like a Hugging Face cache"));
    let link = m.base.fresh("link");
    symlink(&plain, &link).unwrap();
    let o = hf(&["import", link.to_str().unwrap(), "--store", &store]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is a symlink"),
        "{}",
        out_str(&o)
    );
    assert_eq!(hf(&["import", "--store", &store]).status.code(), Some(2));
    assert_eq!(hf(&["import", "x", "--bogus"]).status.code(), Some(2));
    let o = sh_as(
        &m.users.a,
        0o022,
        &format!("'{BIN}' import /tmp --store '{store}'"),
    );
    assert_eq!(o.status.code(), Some(2), "non-root: {}", out_str(&o));
}

#[test]
fn import_follows_only_roots_symlinks_on_the_way_to_a_source() {
    let m = Mount::new();
    let u = m.users;
    let store = m.store.display().to_string();
    let own_dir = |dir: &Path, user: &User, mode: u32| {
        lchown(dir, user.uid, user.gid).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    };

    // Bob's private cache.
    let bob_home = m.base.fresh("home-bob");
    let bob = Cache::new(bob_home.join(".cache/huggingface"));
    bob.blob("private", b"bob's private weights");
    bob.revision("rb", &[("model.bin", "private")], "main", 60);
    bob.own(&u.b);
    own_dir(&bob_home, &u.b, 0o700);
    own_dir(&bob_home.join(".cache"), &u.b, 0o700);
    let before_bob = snapshot(&bob_home, false);

    // Alice makes her ~/.cache a symlink to Bob's and asks root to import her cache.
    let alice_home = m.base.fresh("home-alice");
    fs::create_dir(&alice_home).unwrap();
    own_dir(&alice_home, &u.a, 0o755);
    symlink(bob_home.join(".cache"), alice_home.join(".cache")).unwrap();
    lchown(&alice_home.join(".cache"), u.a.uid, u.a.gid).unwrap();
    let src = alice_home.join(".cache/huggingface");
    let before_store = snapshot(&m.store, false);
    for extra in [None, Some("--move")] {
        let mut args = vec!["import", src.to_str().unwrap(), "--store", &store];
        args.extend(extra);
        let o = hf(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", out_str(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let link = alice_home.join(".cache").display().to_string();
        assert!(
            err.contains(&format!("{link} is a symlink owned by {}", u.a.name))
                && err.lines().count() == 1,
            "{args:?}: the refusal names the symlink and its owner in one line\n{}",
            out_str(&o)
        );
        assert_same_snapshot(&before_store, &snapshot(&m.store, false), "refused import");
        assert_same_snapshot(&before_bob, &snapshot(&bob_home, false), "Bob's cache");
    }
    assert!(lst(&m.s(REPO)).is_err(), "nothing of Bob's in the store");

    // A symlink root made on the way (like /home -> /data/home) is followed.
    let carol_home = m.base.fresh("home-carol");
    let carol = Cache::new(carol_home.join(".cache/huggingface"));
    carol.blob("c", b"carol's config");
    carol.revision("rc", &[("config.json", "c")], "main", 60);
    carol.own(&u.a);
    own_dir(&carol_home, &u.a, 0o755);
    let homes = m.base.fresh("homes");
    symlink(&m.base.dir, &homes).unwrap();
    let via = homes
        .join(carol_home.file_name().unwrap())
        .join(".cache/huggingface");
    let o = hf(&["import", via.to_str().unwrap(), "--store", &store]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert_eq!(
        fs::read(m.s(&format!("{REPO}/blobs/c"))).unwrap(),
        b"carol's config"
    );
    assert!(lst(&m.s(&format!("{REPO}/blobs/private"))).is_err());
}

#[test]
fn import_never_hands_over_what_a_member_renames_into_the_store() {
    let m = Mount::new();
    let u = m.users;
    let store = m.store.display().to_string();
    let mnt = m.mnt.display().to_string();
    let tmpfs = Tmpfs::new(m.base.fresh("tmpfs"));
    // B's cache on another filesystem: its large blob is copied, which takes a while.
    let b = Cache::new(tmpfs.0.join("home-b/.cache/huggingface"));
    let big = pattern(7, 32 << 20);
    b.blob("big", &big);
    b.revision("r", &[("model.bin", "big")], "main", 60);
    b.own(&u.b);
    // Member A keeps renaming files of theirs over the names import used to write its
    // temporary copies under, in the live store.
    sh_as_ok(
        &u.a,
        0o022,
        &format!("mkdir -p '{mnt}/{REPO}/blobs' '{mnt}/{REPO}/refs'"),
    );
    let script = format!(
        "cd '{mnt}/{REPO}' && while :; do \
         echo evil > blobs/x && mv -f blobs/x blobs/.big.hfcachefs-import; \
         echo evil > refs/x && mv -f refs/x refs/.main.hfcachefs-import; done"
    );
    let mut swapper = ChildGuard::spawn(sh_as_cmd(&u.a, 0o022, &script), "swapper");
    assert!(
        wait_until(Duration::from_secs(10), || lst(
            &m.s(&format!("{REPO}/blobs/.big.hfcachefs-import"))
        )
        .is_ok()),
        "the swapper did not start"
    );
    let o = hf(&["import", &b.home.display().to_string(), "--store", &store]);
    assert!(swapper.running(), "the swapper stopped early");
    drop(swapper);
    assert!(o.status.success(), "{}", out_str(&o));
    assert_eq!(
        checksum_file(&m.s(&format!("{REPO}/blobs/big")), 1 << 20).unwrap(),
        checksum(&big),
        "the store's blob is the verified copy"
    );
    assert_store(&m, &format!("{REPO}/blobs/big"), u.b.uid, u.gid, 0o660);
    assert_eq!(fs::read(m.s(&format!("{REPO}/refs/main"))).unwrap(), b"r");
    assert_store(&m, &format!("{REPO}/refs/main"), u.b.uid, u.gid, 0o660);
    for name in ["blobs/.big.hfcachefs-import", "refs/.main.hfcachefs-import"] {
        let st = m.sst(&format!("{REPO}/{name}"));
        assert_eq!(st.uid, u.a.uid, "{name}: A's own file, not given away");
    }
    assert_eq!(
        read_as(&u.a, &m.p(&format!("{REPO}/snapshots/r/model.bin"))),
        big
    );
}

#[test]
fn import_compares_files_whose_names_do_not_vouch_for_their_content() {
    let m = Mount::new();
    let u = m.users;
    let store = m.store.display().to_string();
    let mnt = m.mnt.display().to_string();
    // The store has two dataset files; A's cache has files of the same names and sizes,
    // one with the same bytes and one with others.
    sh_as_ok(
        &u.b,
        0o022,
        &format!(
            "mkdir -p '{mnt}/datasets/x' && printf same! > '{mnt}/datasets/x/same.arrow' && printf AAAAA > '{mnt}/datasets/x/diff.arrow'"
        ),
    );
    let a = Cache::new(m.base.fresh("home-a").join(".cache/huggingface"));
    fs::create_dir_all(a.p("datasets/x")).unwrap();
    write_file(&a.p("datasets/x/same.arrow"), b"same!").unwrap();
    write_file(&a.p("datasets/x/diff.arrow"), b"BBBBB").unwrap();
    a.own(&u.a);
    let home = a.home.display().to_string();

    let dry = hf(&["import", &home, "--store", &store, "--dry-run"]);
    let o = hf(&["import", &home, "--store", &store, "--move"]);
    assert!(o.status.success(), "{}", out_str(&o));
    for (what, out) in [("dry run", &dry), ("import", &o)] {
        let t = text(out);
        assert_eq!(
            number_after(&t, "bytes saved by deduplication:"),
            5,
            "{what}: only the same bytes count as saved\n{t}"
        );
        assert!(
            t.contains("other files: 0 imported, 1 already in the store")
                && t.contains("datasets/x/diff.arrow: the store has a different entry there"),
            "{what}\n{t}"
        );
    }
    assert_eq!(fs::read(m.s("datasets/x/diff.arrow")).unwrap(), b"AAAAA");
    assert_eq!(
        fs::read(a.p("datasets/x/diff.arrow")).unwrap(),
        b"BBBBB",
        "--move keeps a source the store does not hold"
    );
    assert!(
        lst(&a.p("datasets/x/same.arrow")).is_err(),
        "--move removes a source the store holds"
    );
}

#[test]
fn import_leaves_a_source_nested_deeper_than_any_cache() {
    let m = Mount::new();
    let u = m.users;
    let store = m.store.display().to_string();
    let a = Cache::new(m.base.fresh("home-a").join(".cache/huggingface"));
    a.blob("c", b"config");
    a.revision("r", &[("config.json", "c")], "main", 60);
    let deep: PathBuf = std::iter::repeat_n("d", 1100).collect();
    fs::create_dir_all(a.p("datasets/nest").join(&deep)).unwrap();
    a.own(&u.a);
    // At most 1024 open files, a common default.
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(["import", a.home.to_str().unwrap(), "--store", &store]);
    let o = run_timeout(c, Duration::from_secs(90));
    assert!(o.status.success(), "{}", out_str(&o));
    assert!(text(&o).contains("levels; not imported"), "{}", out_str(&o));
    assert_eq!(
        fs::read(m.s(&format!("{REPO}/blobs/c"))).unwrap(),
        b"config"
    );
}
