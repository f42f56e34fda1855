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

/// A Xet file's hash (64 hex digits) and a commit id (40), made of one repeated byte.
fn xet_hash(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

fn commit(seed: u8) -> String {
    format!("{seed:02x}").repeat(20)
}

/// One user's `HF_HOME` as huggingface_hub >= 1.33 makes it: each Xet file once, a payload
/// `hub/blobs/<2hex>/<hash>` (read-only, with `.lock` and a `.refs` list of the repo links),
/// the marker, and repo blobs linking to payloads (other files stay regular blobs).
struct Cache26 {
    home: PathBuf,
}

impl Cache26 {
    fn new(home: PathBuf) -> Cache26 {
        fs::create_dir_all(home.join("hub/blobs")).unwrap();
        fs::create_dir_all(home.join("hub/.locks")).unwrap();
        let c = Cache26 { home };
        let marker = c.p("hub/blobs/.huggingface-shared-blobs");
        write_file(&marker, b"1\n").unwrap();
        fs::set_permissions(&marker, fs::Permissions::from_mode(0o444)).unwrap();
        c
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }

    /// `hub/blobs/<2hex>/<hash>` with its lock and its list of the repo links to it.
    fn payload(&self, hash: &str, data: &[u8], links: &[&str]) {
        let dir = self.p(&format!("hub/blobs/{}", &hash[..2]));
        fs::create_dir_all(&dir).unwrap();
        write_file(&dir.join(hash), data).unwrap();
        fs::set_permissions(dir.join(hash), fs::Permissions::from_mode(0o444)).unwrap();
        let list: String = links.iter().map(|l| format!("{l}\n")).collect();
        for (name, content) in [
            (format!("{hash}.lock"), ""),
            (format!("{hash}.refs"), &list),
        ] {
            write_file(&dir.join(&name), content.as_bytes()).unwrap();
            fs::set_permissions(dir.join(&name), fs::Permissions::from_mode(0o666)).unwrap();
        }
    }

    fn repo_dir(&self, repo: &str, sub: &str) -> PathBuf {
        let d = self.p(&format!("hub/{repo}/{sub}"));
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// The repo blob `etag`, a link to the payload `hash`.
    fn link_blob(&self, repo: &str, etag: &str, hash: &str) {
        let target = format!("../../blobs/{}/{hash}", &hash[..2]);
        symlink(target, self.repo_dir(repo, "blobs").join(etag)).unwrap();
    }

    /// A regular repo blob (not a Xet file, or a repo of the old layout).
    fn blob(&self, repo: &str, etag: &str, data: &[u8]) {
        write_file(&self.repo_dir(repo, "blobs").join(etag), data).unwrap();
    }

    /// A snapshot whose files (paths may be nested) link to blobs, and `refs/main` to it.
    fn snapshot(&self, repo: &str, rev: &str, files: &[(&str, &str)]) {
        let snap = self.repo_dir(repo, &format!("snapshots/{rev}"));
        for (file, etag) in files {
            let at = snap.join(file);
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            let ups = "../".repeat(2 + file.matches('/').count());
            symlink(format!("{ups}blobs/{etag}"), at).unwrap();
        }
        write_file(&self.repo_dir(repo, "refs").join("main"), rev.as_bytes()).unwrap();
    }

    /// The cached tree listing of a commit (`trees/<commit>.json`), as hub 2.x writes it.
    fn tree(&self, repo: &str, rev: &str, files: &[(&str, usize, Option<&str>)]) {
        let entries: Vec<String> = files
            .iter()
            .map(|(path, size, xet)| {
                let xet = xet
                    .map(|h| format!(", \"xet_hash\": \"{h}\""))
                    .unwrap_or_default();
                format!(
                    "\"{path}\": {{\"size\": {size}, \"blob_id\": \"{}\"{xet}}}",
                    "0".repeat(40)
                )
            })
            .collect();
        let json = format!(
            "{{\"format_version\": 1, \"files\": {{{}}}}}",
            entries.join(", ")
        );
        write_file(
            &self.repo_dir(repo, "trees").join(format!("{rev}.json")),
            json.as_bytes(),
        )
        .unwrap();
    }

    fn own(&self, u: &User) {
        let owner = format!("{}:{}", u.uid, u.gid);
        run_ok(cmd("chown", &["-R", &owner, self.home.to_str().unwrap()]));
    }
}

/// The hub 2.x Python, if this machine has one.
fn hub_python() -> Option<&'static str> {
    [
        "/opt/hfcachefs-e2e-xet/venv-new/bin/python",
        "/opt/hfcachefs-e2e/venv-new/bin/python",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

/// Runs huggingface_hub's `snapshot_download(repo, revision=rev, local_files_only=True)` as
/// `user` with `HF_HOME` the mount and no network, for each `(repo, rev)`: the bytes of the
/// snapshot it returns, or the name of the error it raised. `None` without a hub Python.
fn snapshot_downloads(m: &Mount, user: &User, wanted: &[(&str, &str)]) -> Option<Vec<String>> {
    let py = hub_python()?;
    let script = m.base.fresh("check").with_extension("py");
    let code = r#"
import os, sys
from huggingface_hub import snapshot_download
for arg in sys.argv[1:]:
    repo, rev = arg.split("@")
    try:
        p = snapshot_download(repo, revision=rev, local_files_only=True)
    except Exception as e:
        print(type(e).__name__)
        continue
    n = 0
    for d, _, files in os.walk(p):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                n += len(fh.read())
    print(n)
"#;
    write_file(&script, code.as_bytes()).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let args: Vec<String> = wanted.iter().map(|(r, v)| format!("'{r}@{v}'")).collect();
    let o = sh_as(
        user,
        0o022,
        &format!(
            "HOME=/tmp HF_HOME='{}' HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 '{py}' '{}' {}",
            m.mnt.display(),
            script.display(),
            args.join(" ")
        ),
    );
    assert!(o.status.success(), "{py}: {}", out_str(&o));
    Some(text(&o).lines().map(str::to_owned).collect())
}

#[test]
fn import_brings_shared_payloads_once_and_every_snapshot_resolves() {
    let m = Mount::new();
    let u = m.users;
    let store = m.store.display().to_string();
    let tmpfs = Tmpfs::new(m.base.fresh("tmpfs"));
    let (w, t, p3, old) = (
        pattern(11, 1 << 20),
        pattern(12, 64 << 10),
        pattern(13, 32 << 10),
        pattern(14, 16 << 10),
    );
    let (hw, ht, h3) = (xet_hash(0xaa), xet_hash(0xab), xet_hash(0x3c));
    let (r1, r1b, r0, r2, r3) = (commit(1), commit(2), commit(3), commit(4), commit(5));
    let (xa, xb, xc, old_repo) = (
        "models--org--xa",
        "models--org--xb",
        "models--org--xc",
        "models--org--old",
    );

    // A, on the store's filesystem: the weights shared by two repos, and a repo of the
    // old layout beside them.
    let a = Cache26::new(m.base.fresh("home-a").join(".cache/huggingface"));
    write_file(
        &a.p("hub/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    a.payload(
        &hw,
        &w,
        &[&format!("{xa}/blobs/ew"), &format!("{xb}/blobs/ew")],
    );
    a.payload(&ht, &t, &[&format!("{xa}/blobs/et")]);
    a.link_blob(xa, "ew", &hw);
    a.link_blob(xa, "et", &ht);
    a.blob(xa, "c1", b"{\"a\": 1}");
    let xa_r1 = [
        ("model.safetensors", "ew"),
        ("tokenizer.json", "et"),
        ("config.json", "c1"),
    ];
    a.snapshot(xa, &r1, &xa_r1);
    a.tree(
        xa,
        &r1,
        &[
            ("model.safetensors", w.len(), Some(&hw)),
            ("tokenizer.json", t.len(), Some(&ht)),
            ("config.json", 8, None),
        ],
    );
    a.link_blob(xb, "ew", &hw);
    a.snapshot(
        xb,
        &r1b,
        &[("model.safetensors", "ew"), ("sub/w.bin", "ew")],
    );
    a.blob(old_repo, "o1", &old);
    a.snapshot(old_repo, &r0, &[("x.bin", "o1")]);
    write_file(&a.p(&format!("hub/blobs/{}/{hw}.lock", &hw[..2])), b"").unwrap();
    a.own(&u.a);

    // B, on another filesystem: the same weights, a repo of A's at another commit, and a
    // repo of its own.
    let b = Cache26::new(tmpfs.0.join("home-b/.cache/huggingface"));
    b.payload(
        &hw,
        &w,
        &[&format!("{xa}/blobs/ew"), &format!("{xc}/blobs/ew")],
    );
    b.payload(&h3, &p3, &[&format!("{xc}/blobs/e3")]);
    b.link_blob(xa, "ew", &hw);
    b.blob(xa, "c2", b"{\"b\": 2}");
    b.snapshot(
        xa,
        &r2,
        &[("model.safetensors", "ew"), ("config.json", "c2")],
    );
    b.link_blob(xc, "ew", &hw);
    b.link_blob(xc, "e3", &h3);
    b.snapshot(xc, &r3, &[("a.bin", "ew"), ("b.bin", "e3")]);
    b.tree(
        xc,
        &r3,
        &[
            ("a.bin", w.len(), Some(&hw)),
            ("b.bin", p3.len(), Some(&h3)),
        ],
    );
    b.own(&u.b);
    let (a_home, b_home) = (a.home.display().to_string(), b.home.display().to_string());

    // The dry run plans the payloads, and changes nothing.
    let (before_store, before_a, before_b) = (
        snapshot(&m.store, false),
        snapshot(&a.home, false),
        snapshot(&b.home, false),
    );
    let dry = hf(&["import", &a_home, &b_home, "--store", &store, "--dry-run"]);
    assert!(dry.status.success(), "{}", out_str(&dry));
    assert_same_snapshot(&before_store, &snapshot(&m.store, false), "dry run (store)");
    assert_same_snapshot(&before_a, &snapshot(&a.home, false), "dry run (A)");
    assert_same_snapshot(&before_b, &snapshot(&b.home, false), "dry run (B)");

    let o = hf(&["import", &a_home, &b_home, "--store", &store]);
    assert!(o.status.success(), "{}", out_str(&o));
    let out = text(&o);
    for (what, s) in [("dry run", &text(&dry)), ("import", &out)] {
        assert!(
            s.contains("shared payloads: 3 imported, 1 deduplicated, 0 already in the store; 6 repo blobs link to them"),
            "{what}\n{s}"
        );
        assert!(s.contains("repos: 4 (4 new"), "{what}\n{s}");
        assert!(
            !s.contains("left alone") && !s.contains("error"),
            "{what}\n{s}"
        );
        // The bytes are the payloads' (and the few small files'): B's weights, and its
        // marker, are what deduplication saved.
        assert_eq!(
            number_after(s, "bytes saved by deduplication:"),
            (w.len() + 2) as u64,
            "{what}\n{s}"
        );
        let payloads = (w.len() + t.len() + p3.len() + old.len()) as u64;
        let imported = number_after(s, "bytes imported:");
        assert!(
            imported >= payloads && imported < payloads + 4096,
            "{what}: {imported} imported, payloads and blobs {payloads}\n{s}"
        );
    }

    // Each payload once, with its list of links merged; no lock files.
    let shard = |h: &str| format!("hub/blobs/{}", &h[..2]);
    for h in [&hw, &ht, &h3] {
        let mut n = names(&m.s(&shard(h))).unwrap();
        n.sort();
        assert_eq!(n, [h.to_string(), format!("{h}.refs")], "{}", shard(h));
    }
    let payload = |h: &str| format!("{}/{h}", shard(h));
    assert_store(&m, &payload(&hw), u.a.uid, u.gid, 0o440);
    assert_store(&m, &payload(&h3), u.b.uid, u.gid, 0o440);
    assert_store(&m, "hub/blobs", u.a.uid, u.gid, 0o2770);
    assert_eq!(
        m.sst(&payload(&hw)).ino,
        lst(&a.p(&payload(&hw))).unwrap().ino,
        "A's payload is hard-linked"
    );
    assert_eq!(
        fs::read(m.s(&payload(&h3))).unwrap(),
        p3,
        "B's is a verified copy"
    );
    assert_eq!(
        fs::read_to_string(m.s(&format!("{}.refs", payload(&hw)))).unwrap(),
        format!("{xa}/blobs/ew\n{xb}/blobs/ew\n{xc}/blobs/ew\n"),
        "the union of both lists"
    );
    assert_store(&m, &format!("{}.refs", payload(&hw)), u.b.uid, u.gid, 0o660);
    assert_eq!(
        fs::read(m.s("hub/blobs/.huggingface-shared-blobs")).unwrap(),
        b"1\n"
    );
    assert!(m.s("hub/CACHEDIR.TAG").is_file());
    assert!(m.s(&format!("hub/{xa}/trees/{r1}.json")).is_file());
    assert!(m.s(&format!("hub/{xc}/trees/{r3}.json")).is_file());
    assert_eq!(
        fs::read_link(m.s(&format!("hub/{xa}/blobs/ew"))).unwrap(),
        PathBuf::from(format!("../../blobs/aa/{hw}")),
        "links stay relative"
    );
    assert_eq!(
        fs::read(m.s(&format!("hub/{xa}/refs/main"))).unwrap(),
        r2.as_bytes()
    );

    // Every snapshot entry reads its bytes through the mount, for the other member.
    let config = |s: &str| s.as_bytes().to_vec();
    let expect: [(&User, &str, &str, &str, Vec<u8>); 8] = [
        (&u.b, xa, &r1, "model.safetensors", w.clone()),
        (&u.b, xa, &r1, "tokenizer.json", t.clone()),
        (&u.b, xa, &r1, "config.json", config("{\"a\": 1}")),
        (&u.b, xb, &r1b, "model.safetensors", w.clone()),
        (&u.b, xb, &r1b, "sub/w.bin", w.clone()),
        (&u.b, old_repo, &r0, "x.bin", old.clone()),
        (&u.a, xa, &r2, "config.json", config("{\"b\": 2}")),
        (&u.a, xc, &r3, "b.bin", p3.clone()),
    ];
    for (user, repo, rev, file, data) in &expect {
        let p = m.p(&format!("hub/{repo}/snapshots/{rev}/{file}"));
        assert!(
            read_as(user, &p) == *data,
            "{} reads {}",
            user.name,
            p.display()
        );
    }
    assert_eq!(
        read_as(&u.a, &m.p(&format!("hub/{xc}/snapshots/{r3}/a.bin"))),
        w
    );

    // huggingface_hub, offline, finds every snapshot complete.
    let sizes = snapshot_downloads(
        &m,
        &u.b,
        &[
            ("org/xa", &r1),
            ("org/xa", &r2),
            ("org/xb", &r1b),
            ("org/xc", &r3),
            ("org/old", &r0),
        ],
    );
    if let Some(sizes) = sizes {
        let want = [
            w.len() + t.len() + 8,
            w.len() + 8,
            2 * w.len(),
            w.len() + p3.len(),
            old.len(),
        ]
        .map(|n| n.to_string());
        assert_eq!(sizes, want);
    }

    // A re-run changes nothing.
    let before_store = snapshot(&m.store, false);
    let o = hf(&["import", &a_home, &b_home, "--store", &store]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert!(
        text(&o).contains("shared payloads: 0 imported, 2 deduplicated, 2 already"),
        "{}",
        out_str(&o)
    );
    assert_same_snapshot(&before_store, &snapshot(&m.store, false), "re-run");
}

#[test]
fn import_names_a_repo_it_cannot_complete_and_move_keeps_what_it_links_to() {
    let m = Mount::new();
    let u = m.users;
    let store = m.store.display().to_string();
    let (w, p4, p5) = (
        pattern(21, 256 << 10),
        pattern(22, 8 << 10),
        pattern(23, 4 << 10),
    );
    let (hw, h4, h5) = (xet_hash(0x77), xet_hash(0x44), xet_hash(0x55));
    let (rg, rb) = (commit(6), commit(7));
    let (good, broken) = ("models--org--good", "models--org--broken");

    // Two repos share the weights; the broken one links to a payload its cache lacks.
    let d = Cache26::new(m.base.fresh("home-d").join(".cache/huggingface"));
    d.payload(
        &hw,
        &w,
        &[&format!("{good}/blobs/ew"), &format!("{broken}/blobs/ew")],
    );
    d.payload(&h4, &p4, &[&format!("{good}/blobs/e4")]);
    d.link_blob(good, "ew", &hw);
    d.link_blob(good, "e4", &h4);
    d.snapshot(good, &rg, &[("model.bin", "ew"), ("extra.bin", "e4")]);
    d.link_blob(broken, "ew", &hw);
    d.link_blob(broken, "eg", &h5);
    d.snapshot(broken, &rb, &[("model.bin", "ew"), ("gone.bin", "eg")]);
    d.tree(
        broken,
        &rb,
        &[
            ("model.bin", w.len(), Some(&hw)),
            ("gone.bin", p5.len(), Some(&h5)),
        ],
    );
    d.own(&u.a);
    let home = d.home.display().to_string();
    let shard = |h: &str| format!("hub/blobs/{}", &h[..2]);
    let payload = |h: &str| format!("{}/{h}", shard(h));

    let before_store = snapshot(&m.store, false);
    let before_d = snapshot(&d.home, false);
    let dry = hf(&["import", &home, "--store", &store, "--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", out_str(&dry));
    assert_same_snapshot(&before_store, &snapshot(&m.store, false), "dry run (store)");
    assert_same_snapshot(&before_d, &snapshot(&d.home, false), "dry run (source)");

    let o = hf(&["import", &home, "--store", &store, "--move"]);
    assert_eq!(o.status.code(), Some(1), "{}", out_str(&o));
    let gone = format!(
        "snapshots/{rb}/gone.bin: its blob blobs/eg links to the shared payload ../../blobs/55/{h5}, which is missing"
    );
    for (what, out, verb) in [
        ("dry run", &dry, "would be incomplete"),
        ("import", &o, "incomplete"),
    ] {
        let t = text(out);
        assert!(
            t.contains(&format!("INCOMPLETE repos (snapshot entries resolving to no file in the store, see the errors): {broken}\n")),
            "{what}: the summary names the repo\n{t}"
        );
        assert!(
            t.contains(&format!(
                "error: hub/{broken}: {verb}: 1 of 2 snapshot entries resolve to no complete file in the store: {gone}"
            )),
            "{what}: and the entry\n{t}"
        );
        assert!(!t.contains(&format!("hub/{good}:")), "{what}\n{t}");
    }

    // The good repo moved, and the payload only it links to; the broken repo stays whole in
    // the source, with the weights it links to, their list and the marker.
    assert!(lst(&d.p(&format!("hub/{good}"))).is_err(), "{good} moved");
    assert!(lst(&d.p(&payload(&h4))).is_err(), "only {good} links to it");
    assert!(lst(&d.p(&format!("{}.refs", payload(&h4)))).is_err());
    assert!(
        d.p(&format!("{}.lock", payload(&h4))).exists(),
        "locks stay"
    );
    for kept in [
        format!("hub/{broken}/snapshots/{rb}/model.bin"),
        format!("hub/{broken}/snapshots/{rb}/gone.bin"),
        format!("hub/{broken}/blobs/ew"),
        format!("hub/{broken}/refs/main"),
        payload(&hw),
        format!("{}.refs", payload(&hw)),
        "hub/blobs/.huggingface-shared-blobs".into(),
    ] {
        assert!(lst(&d.p(&kept)).is_ok(), "{kept} stays in the source");
    }
    assert_eq!(fs::read(d.p(&payload(&hw))).unwrap(), w);
    assert_eq!(fs::read(m.s(&payload(&hw))).unwrap(), w);
    assert_eq!(fs::read(m.s(&payload(&h4))).unwrap(), p4);
    assert_eq!(
        read_as(&u.b, &m.p(&format!("hub/{good}/snapshots/{rg}/extra.bin"))),
        p4
    );
    if let Some(r) = snapshot_downloads(&m, &u.b, &[("org/good", &rg), ("org/broken", &rb)]) {
        assert_eq!(
            r,
            [
                (w.len() + p4.len()).to_string(),
                "IncompleteSnapshotError".into()
            ],
            "huggingface_hub agrees on which repo is incomplete"
        );
    }

    // Once the source has the missing payload, a re-run completes the repo and moves the rest.
    d.payload(&h5, &p5, &[&format!("{broken}/blobs/eg")]);
    d.own(&u.a);
    let o = hf(&["import", &home, "--store", &store, "--move"]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert!(!text(&o).contains("INCOMPLETE"), "{}", out_str(&o));
    for h in [&hw, &h5] {
        assert!(lst(&d.p(&payload(h))).is_err(), "{h} moved");
    }
    assert!(lst(&d.p(&format!("hub/{broken}"))).is_err());
    assert!(
        lst(&d.p("hub/blobs/.huggingface-shared-blobs")).is_err(),
        "the marker goes with the last payload"
    );
    assert!(m.s("hub/blobs/.huggingface-shared-blobs").is_file());
    // The mount remembered the miss for up to entry_timeout (1 s).
    let gone_bin = m.p(&format!("hub/{broken}/snapshots/{rb}/gone.bin"));
    let g = gone_bin.clone();
    let seen = wait_until(Duration::from_secs(5), || {
        let g = g.clone();
        as_user(&u.b, 0o022, move || fs::metadata(&g).is_ok())
    });
    assert!(seen, "{} never appeared", gone_bin.display());
    assert_eq!(read_as(&u.b, &gone_bin), p5);
    if let Some(r) = snapshot_downloads(&m, &u.b, &[("org/broken", &rb)]) {
        assert_eq!(r, [(w.len() + p5.len()).to_string()]);
    }
}
