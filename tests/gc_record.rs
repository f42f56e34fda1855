//! The access record on real mounts: what a daemon recorded survives an unmount and a
//! SIGKILL, downloads count as use, a held lock keeps a repo; and a `gc` killed midway
//! (checked to be midway) leaves a cache huggingface_hub scans clean, finished by the next
//! run.

mod common;

use common::gc::*;
use common::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PY: &str = "/opt/hfcachefs-e2e/venv-new/bin/python";
const KB: usize = 1024;
const DAY: i64 = 86400;
const BASE: i64 = 1_700_000_000;

fn hex(seed: u64, digits: usize) -> String {
    let mut s = String::new();
    let mut x = seed;
    while s.len() < digits {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(&format!("{:016x}", x));
    }
    s.truncate(digits);
    s
}

/// A commit hash for a test's revision `tag` (the Hub libraries want 40 hex digits).
fn c(tag: &str) -> String {
    let seed = tag.bytes().fold(0xcbf29ce484222325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    hex(seed, 40)
}

fn touch(p: &Path, t: i64) {
    let ts = ts(t, 0);
    utimensat(libc::AT_FDCWD, p, ts, ts, libc::AT_SYMLINK_NOFOLLOW).unwrap();
}

/// One revision `tag` of `repo` made in the store as a download leaves it, everything last
/// changed at `t`: `files` blobs of `size` bytes each (the first a shared payload in
/// `hub/blobs/<2hex>/` when `shared`, the hub >= 1.33 layout), `main` pointing at it.
/// Members may read it (the caller runs `chmod -R a+rX` once).
fn make_rev(m: &Mount, repo: &str, tag: &str, files: usize, size: usize, t: i64, shared: bool) {
    let commit = c(tag);
    let r = m.s(&format!("hub/{repo}"));
    let snap = r.join(format!("snapshots/{commit}"));
    for d in [r.join("blobs"), r.join("refs"), snap.clone()] {
        fs::create_dir_all(d).unwrap();
    }
    fs::create_dir_all(m.s(&format!("hub/.locks/{repo}"))).unwrap();
    for k in 0..files {
        let etag = hex(random_u64(), 64);
        let data = pattern(random_u64(), size);
        let blob = r.join("blobs").join(&etag);
        if shared && k == 0 {
            let dir = m.s(&format!("hub/blobs/{}", &etag[..2]));
            fs::create_dir_all(&dir).unwrap();
            let payload = dir.join(&etag);
            fs::write(&payload, &data).unwrap();
            fs::write(dir.join(format!("{etag}.refs")), repo).unwrap();
            fs::write(m.s("hub/blobs/.huggingface-shared-blobs"), "1\n").unwrap();
            symlink(format!("../../blobs/{}/{etag}", &etag[..2]), &blob).unwrap();
            touch(&payload, t);
        } else {
            fs::write(&blob, &data).unwrap();
        }
        fs::write(m.s(&format!("hub/.locks/{repo}/{etag}.lock")), b"").unwrap();
        touch(&blob, t);
        let link = snap.join(format!("f{k}-{tag}.bin"));
        symlink(format!("../../blobs/{etag}"), &link).unwrap();
        touch(&link, t);
    }
    fs::write(r.join("refs/main"), &commit).unwrap();
    touch(&snap, t);
}

fn readable(m: &Mount) {
    sh(&format!("chmod -R a+rX '{}'", m.s("hub").display()));
}

/// The commits a `gc --json` answer lists as removed, in its order.
fn removed(j: &str) -> Vec<String> {
    let Some(at) = j.find("\"removed\":[") else {
        panic!("no removed list: {j}")
    };
    let list = &j[at..];
    let end = list.find(']').unwrap();
    list[..end]
        .split("\"commit\":\"")
        .skip(1)
        .map(|s| s[..40].to_owned())
        .collect()
}

fn store_bytes(m: &Mount) -> u64 {
    let o = hf(&[
        "gc",
        &m.mnt.display().to_string(),
        "--max-size",
        "1P",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    json_u64(&String::from_utf8_lossy(&o.stdout), "store_bytes")
}

/// `gc --max-size` one byte under the store's size: exactly the least recently used
/// revision goes (each revision here holds far more than a byte). Returns the JSON answer.
fn gc_one(m: &Mount, dry: bool) -> String {
    let max = (store_bytes(m) - 1).to_string();
    let mnt = m.mnt.display().to_string();
    let mut args = vec!["gc", &mnt, "--max-size", &max, "--json"];
    if dry {
        args.push("--dry-run");
    }
    let o = hf(&args);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// huggingface_hub's view of the cache at `hub` (through the mount): no warnings (a ref to
/// a missing snapshot, a broken link), every file of every revision resolves to a file,
/// and every revision loads offline with snapshot_download(local_files_only) and reads in
/// full. Prints `repo@commit` per line.
fn hub_scan(hub: &Path) -> Vec<String> {
    // The daemons drop what eviction removed from their kernels' caches within a tick.
    std::thread::sleep(Duration::from_millis(600));
    let script = r#"
import os, sys
from huggingface_hub import scan_cache_dir, snapshot_download
info = scan_cache_dir(sys.argv[1])
assert not info.warnings, info.warnings
for repo in info.repos:
    for rev in repo.revisions:
        for dirpath, _dirs, names in os.walk(rev.snapshot_path):
            for n in names:
                p = os.path.join(dirpath, n)
                assert os.path.isfile(os.path.realpath(p)), f"{p} does not resolve"
        p = snapshot_download(repo.repo_id, revision=rev.commit_hash, cache_dir=sys.argv[1], local_files_only=True)
        for f in rev.files:
            open(os.path.join(p, f.file_name), "rb").read()
        print(f"{repo.repo_id}@{rev.commit_hash}")
"#;
    let mut c = Command::new(PY);
    c.args(["-c", script, &hub.display().to_string()])
        .env("HF_HUB_OFFLINE", "1");
    let o = run_timeout(c, Duration::from_secs(300));
    assert!(o.status.success(), "hub scan: {}", out_str(&o));
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// Two revisions, `old` (oldest by its files' times) and `new`; `old` read through the
/// mount by a member. The record alone says `old` was used last.
fn read_the_older_of_two(m: &Mount) {
    make_rev(m, "models--o--old", "old1", 2, 20 * KB, BASE + DAY, false);
    make_rev(
        m,
        "models--o--new",
        "new1",
        2,
        20 * KB,
        BASE + 2 * DAY,
        true,
    );
    readable(m);
    // Without a record, the older goes first: what makes the checks below able to fail.
    assert_eq!(removed(&gc_one(m, true)), [c("old1")]);
    let snap = m.p(&format!("hub/models--o--old/snapshots/{}", c("old1")));
    sh_as_ok(
        &m.users.a,
        0o022,
        &format!("cat '{}'/* > /dev/null", snap.display()),
    );
}

fn the_unread_revision_goes_first(m: &Mount) {
    assert!(
        fs::read_dir(m.s(".hfcachefs/access")).is_ok_and(|mut d| d.next().is_some()),
        "an access record in the store"
    );
    let j = gc_one(m, false);
    assert_eq!(removed(&j), [c("new1")], "{j}");
    assert!(fs::symlink_metadata(m.s("hub/models--o--new")).is_err());
    assert_eq!(hub_scan(&m.p("hub")), [format!("o/old@{}", c("old1"))]);
}

#[test]
fn the_access_record_survives_an_unmount() {
    let mut m = Mount::new();
    read_the_older_of_two(&m);
    // At once: the daemon writes its last batch as it stops.
    m.unmount().unwrap();
    m.remount_same();
    the_unread_revision_goes_first(&m);
}

#[test]
fn the_access_record_survives_a_killed_daemon_once_flushed() {
    let mut m = Mount::new();
    read_the_older_of_two(&m);
    // A batch is written within FLUSH_EVERY (2 s) and a tick.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!m.daemon_pids.is_empty());
    for &p in &m.daemon_pids {
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || m
            .daemon_pids
            .iter()
            .all(|p| !pid_alive(*p))),
        "daemon killed"
    );
    sh(&format!("umount -l '{}'", m.mnt.display()));
    assert!(wait_until(Duration::from_secs(10), || !is_mounted(&m.mnt)));
    m.remount_same();
    the_unread_revision_goes_first(&m);
}

#[test]
fn a_download_counts_as_use() {
    let m = Mount::new();
    make_rev(&m, "models--o--x", "x1", 1, 20 * KB, BASE + DAY, false);
    make_rev(&m, "models--o--y", "y1", 1, 20 * KB, BASE + 2 * DAY, false);
    readable(&m);
    // A member downloads z as the Hub libraries do: .incomplete, renamed into blobs/, the
    // snapshot link, the ref.
    let mnt = m.mnt.display().to_string();
    let repo = format!("{mnt}/hub/models--o--z");
    let cz = c("z1");
    sh_as_ok(
        &m.users.a,
        0o022,
        &format!(
            "set -e; mkdir -p {repo}/blobs {repo}/snapshots/{cz} {repo}/refs; \
             head -c 40000 /dev/urandom > {repo}/blobs/e1.incomplete; \
             mv {repo}/blobs/e1.incomplete {repo}/blobs/e1; \
             ln -s ../../blobs/e1 {repo}/snapshots/{cz}/w.bin; printf {cz} > {repo}/refs/main"
        ),
    );
    // Its files' times are made the oldest of all: only the record says it was used last.
    let r = m.s("hub/models--o--z");
    for p in [
        r.join("blobs/e1"),
        r.join(format!("snapshots/{cz}/w.bin")),
        r.join(format!("snapshots/{cz}")),
        r.join("refs/main"),
    ] {
        touch(&p, BASE);
    }
    std::thread::sleep(Duration::from_secs(3));
    let j = gc_one(&m, false);
    assert_eq!(removed(&j), [c("x1")], "the oldest-used, not z: {j}");
    let j = gc_one(&m, false);
    assert_eq!(removed(&j), [c("y1")], "then y, still not z: {j}");
    assert_eq!(hub_scan(&m.p("hub")), [format!("o/z@{cz}")]);
}

#[test]
fn a_held_lock_keeps_its_repo() {
    let m = Mount::new();
    make_rev(&m, "models--o--held", "h1", 1, 20 * KB, BASE + DAY, false);
    make_rev(
        &m,
        "models--o--free",
        "f1",
        1,
        20 * KB,
        BASE + 2 * DAY,
        false,
    );
    readable(&m);
    // A download in progress before any `.incomplete` exists: its lock file, flock'ed
    // through the mount by a member.
    let lock = m.p("hub/.locks/models--o--held/0123abcd.lock");
    let mut c_ = sh_as_cmd(
        &m.users.a,
        0o022,
        &format!(
            "exec flock '{}' -c 'echo locked; exec sleep 120'",
            lock.display()
        ),
    );
    c_.stdout(Stdio::piped());
    let mut holder = ChildGuard::spawn(c_, "lock holder");
    {
        use std::io::{BufRead, BufReader};
        let mut line = String::new();
        BufReader::new(holder.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let mnt = m.mnt.display().to_string();
    let o = hf(&["gc", &mnt, "--max-size", "0", "--json"]);
    let j = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(code(&o), 1, "goal not met: {}", out_str(&o));
    assert_eq!(removed(&j), [c("f1")], "{j}");
    assert!(
        j.contains("download in progress") && j.contains("lock 0123abcd.lock held"),
        "{j}"
    );
    assert!(
        fs::symlink_metadata(m.s(&format!("hub/models--o--held/snapshots/{}", c("h1")))).is_ok()
    );
    assert_eq!(hub_scan(&m.p("hub")), [format!("o/held@{}", c("h1"))]);
    // Released, it goes.
    holder.kill(libc::SIGKILL);
    assert!(holder.wait_timeout(Duration::from_secs(10)).is_some());
    // The kernel tells the daemon of the last close (and so of the lock's end)
    // asynchronously: wait until the store's lock file is free.
    let store_lock = m.s("hub/.locks/models--o--held/0123abcd.lock");
    let free = (0..100).any(|_| {
        let f = fs::File::open(&store_lock).unwrap();
        let ok = flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(
        free,
        "the lock was not released within 5 s of its holder's death"
    );
    let o = hf(&["gc", &mnt, "--max-size", "0", "--json"]);
    let j = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(removed(&j), [c("h1")], "{}", out_str(&o));
    assert!(fs::symlink_metadata(m.s("hub/models--o--held")).is_err());
}

/// Revisions of `N` repos whose snapshots are still in the cache.
fn snapshots_left(m: &Mount, n: usize) -> usize {
    (0..n)
        .filter(|i| {
            fs::symlink_metadata(m.s(&format!(
                "hub/models--o--k{i}/snapshots/{}",
                c(&format!("k{i}"))
            )))
            .is_ok()
        })
        .count()
}

/// Every ref names a snapshot that exists, and every snapshot link reaches a file.
fn assert_consistent(m: &Mount) {
    let o = sh(&format!(
        "cd '{}' && for r in models--*; do for f in $(find $r/refs -type f 2>/dev/null); do \
           [ -d \"$r/snapshots/$(cat $f)\" ] || echo \"dangling ref $f\"; done; \
           find $r/snapshots -type l ! -exec test -e {{}} \\; -print | sed 's/^/broken /'; done",
        m.s("hub").display()
    ));
    let bad = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(bad.trim().is_empty(), "{bad}");
}

#[test]
fn gc_killed_midway_leaves_a_clean_cache_and_the_next_run_finishes() {
    const N: usize = 200;
    let m = Mount::new();
    let t0 = Instant::now();
    for i in 0..N {
        make_rev(
            &m,
            &format!("models--o--k{i}"),
            &format!("k{i}"),
            2,
            2 * KB,
            BASE + i as i64,
            i % 2 == 0,
        );
    }
    readable(&m);
    let mnt = m.mnt.display().to_string();
    let trash = m.s(".hfcachefs/trash");
    let mut c_ = Command::new(BIN);
    c_.args(["gc", &mnt, "--max-size", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut g = ChildGuard::spawn(c_, "gc");
    // Stopped the moment its trash holds something, then killed there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut caught = false;
    while Instant::now() < deadline && g.running() {
        if fs::read_dir(&trash).is_ok_and(|mut d| d.next().is_some()) {
            g.kill(libc::SIGSTOP);
            caught = true;
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    g.kill(libc::SIGKILL);
    assert!(g.wait_timeout(Duration::from_secs(10)).is_some());
    assert!(
        caught,
        "gc ended before its trash was seen holding anything"
    );
    let in_trash = fs::read_dir(&trash).unwrap().count();
    let left = snapshots_left(&m, N);
    assert!(
        in_trash > 0 && left > 0 && left < N,
        "killed midway: {in_trash} entries in the trash, {left} of {N} revisions left"
    );
    eprintln!(
        "{:?}: killed with {left} of {N} revisions left, {in_trash} in the trash",
        t0.elapsed()
    );
    assert_consistent(&m);
    // What huggingface_hub sees at once: only complete revisions, exactly those left.
    let seen = hub_scan(&m.p("hub"));
    assert_eq!(seen.len(), left, "{seen:?}");
    eprintln!("{:?}: scanned", t0.elapsed());

    let marker = fs::symlink_metadata(m.s("hub/blobs/.huggingface-shared-blobs")).unwrap();
    let marker = (std::os::unix::fs::MetadataExt::blocks(&marker) * 512).to_string();
    let o = hf(&["gc", &mnt, "--max-size", &marker]);
    assert_eq!(code(&o), 0, "{}", out_str(&o));
    assert!(out_str(&o).contains("goal met"), "{}", out_str(&o));
    assert!(store_bytes(&m) <= marker.parse().unwrap());
    assert!(
        fs::read_dir(&trash).unwrap().next().is_none(),
        "trash emptied, and kept"
    );
    assert_eq!(snapshots_left(&m, N), 0);
    assert_consistent(&m);
    assert_eq!(hub_scan(&m.p("hub")), Vec::<String>::new());
}
