//! What the kernel may cache, and for how long: content-addressed names (blobs, snapshot
//! entries) longer than the rest, and directory listings kept between opens but refreshed
//! when the directory changes. Real mounts; the store is changed behind the mount's back,
//! as another host or an administrator would.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::thread::sleep;
use std::time::Duration;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// Names of a small hub repo: the content-addressed ones (blob, snapshot link, missing-file
/// marker, lock file), then the ref.
const FIXED: [&str; 4] = [
    "hub/models--org--model/blobs/e7a9",
    "hub/models--org--model/snapshots/0123456789abcdef0123456789abcdef01234567/model.bin",
    "hub/models--org--model/.no_exist/0123456789abcdef0123456789abcdef01234567/extra.json",
    "hub/.locks/models--org--model/e7a9.lock",
];
const REF: &str = "hub/models--org--model/refs/main";

/// Makes the repo through the mount.
fn hub_repo(m: &Mount) {
    for rel in FIXED.iter().chain([&REF]) {
        fs::create_dir_all(m.p(rel).parent().unwrap()).unwrap();
    }
    write_file(&m.p(FIXED[0]), b"weights").unwrap();
    symlink("../../blobs/e7a9", m.p(FIXED[1])).unwrap();
    write_file(&m.p(FIXED[2]), b"").unwrap();
    write_file(&m.p(FIXED[3]), b"").unwrap();
    write_file(&m.p(REF), REV.as_bytes()).unwrap();
}

/// For each name (FIXED, then REF): does the mount still show it 2.5 s after it was removed
/// from the store directly (past the 1 s default timeout)?
fn still_seen_after_removal(m: &Mount) -> Vec<bool> {
    let all: Vec<&str> = FIXED.iter().copied().chain([REF]).collect();
    for rel in &all {
        lst(&m.p(rel)).unwrap_or_else(|e| panic!("{rel} through the mount: {e}"));
    }
    for rel in &all {
        fs::remove_file(m.s(rel)).unwrap();
    }
    sleep(Duration::from_millis(2500));
    all.iter().map(|rel| lst(&m.p(rel)).is_ok()).collect()
}

#[test]
fn content_addressed_names_are_cached_longer_than_refs() {
    let m = Mount::new();
    hub_repo(&m);
    assert_eq!(
        still_seen_after_removal(&m),
        [true, true, true, true, false],
        "(blob, snapshot link, .no_exist marker, lock, ref) still seen: only the ref may have expired"
    );
}

#[test]
fn content_timeout_zero_caches_them_like_the_rest() {
    let m = Mount::with_opts("content_timeout=0");
    hub_repo(&m);
    assert_eq!(still_seen_after_removal(&m), [false; 5]);
}

/// An in-progress download is not content-addressed yet: its size changes.
#[test]
fn incomplete_blobs_keep_the_short_timeout() {
    let m = Mount::new();
    hub_repo(&m);
    let part = "hub/models--org--model/blobs/f00d.incomplete";
    write_file(&m.p(part), b"1234").unwrap();
    assert_eq!(lst(&m.p(part)).unwrap().size, 4);
    fs::write(m.s(part), b"12345678").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || lst(&m.p(part))
            .map(|s| s.size == 8)
            .unwrap_or(false)),
        "the growing .incomplete file kept its old size"
    );
}

/// Listings are cached between opens (the kernel does not open directories on a local
/// store), yet changes made through the mount show at once and changes in the store show
/// once the directory's attributes expire.
#[test]
fn directory_listings_follow_changes() {
    let m = Mount::new();
    fs::create_dir(m.p("d")).unwrap();
    write_file(&m.p("d/a"), b"a").unwrap();
    assert_eq!(names(&m.p("d")).unwrap(), vec!["a"]);
    write_file(&m.p("d/b"), b"b").unwrap();
    assert_eq!(names(&m.p("d")).unwrap(), vec!["a", "b"], "own create");
    fs::remove_file(m.p("d/a")).unwrap();
    assert_eq!(names(&m.p("d")).unwrap(), vec!["b"], "own unlink");
    // Behind the mount's back: an mtime a second later, so the change is visible by it.
    sleep(Duration::from_millis(1100));
    fs::write(m.s("d/c"), b"c").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || names(&m.p("d")).unwrap()
            == vec!["b", "c"]),
        "a file made in the store never showed in the listing: {:?}",
        names(&m.p("d"))
    );
    // fsync of a directory the kernel did not open.
    let d = fs::File::open(m.p("d")).unwrap();
    d.sync_all().unwrap();
}

/// With no caching (as on a shared store), directories are opened and read afresh.
#[test]
fn uncached_mount_lists_store_changes_at_once() {
    let m = Mount::with_opts("entry_timeout=0,attr_timeout=0");
    fs::create_dir(m.p("d")).unwrap();
    assert!(names(&m.p("d")).unwrap().is_empty());
    fs::write(m.s("d/new"), b"x").unwrap();
    assert_eq!(names(&m.p("d")).unwrap(), vec!["new"]);
    let d = fs::File::open(m.p("d")).unwrap();
    d.sync_all().unwrap();
}
