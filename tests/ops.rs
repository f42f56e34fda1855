//! Every filesystem operation through a real hfcachefs mount (as root unless noted), checked
//! against the store on disk.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ------------------------------------------------------------------ lookup / getattr

#[test]
fn lookup_and_getattr_match_store() {
    let m = Mount::new();
    let g = m.users.gid;
    write_file(&m.p("f"), b"hello").ctx("write f");
    fs::create_dir(m.p("d")).ctx("mkdir d");

    let a = m.mst("f");
    let s = m.sst("f");
    assert!(a.is_file());
    assert_eq!(a.size, 5);
    assert_eq!(
        (a.size, a.nlink, a.mtime, a.uid),
        (s.size, s.nlink, s.mtime, s.uid),
        "mount vs store attributes"
    );
    assert_eq!(a.gid, g, "group reported through the mount");
    assert_ne!(a.ino, 0);
    assert_eq!(m.mst("f").ino, a.ino, "stable inode number");
    assert!(m.mst("d").is_dir());
    assert_ne!(m.mst("d").ino, a.ino);

    let root = stf(&m.mnt).ctx("stat mount root");
    assert!(root.is_dir());
    assert_eq!(root.gid, g, "mount root reported with the configured group");

    assert_errno(lst(&m.p("missing")), &[libc::ENOENT], "lstat missing");
    assert_errno(lst(&m.p("missing/x")), &[libc::ENOENT], "lstat missing/x");
    assert_errno(lst(&m.p("f/x")), &[libc::ENOTDIR], "lstat file/x");

    // Attributes of an entry changed directly in the store become visible (attr timeout).
    write_file(&m.s("f"), b"hello, world").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || m.mst("f").size == 12),
        "size change in store not seen through mount"
    );
}

#[test]
fn entries_created_in_store_are_visible() {
    let m = Mount::new();
    fs::create_dir_all(m.s("x/y")).unwrap();
    write_file(&m.s("x/y/z"), b"from the store").unwrap();
    assert_eq!(fs::read(m.p("x/y/z")).ctx("read x/y/z"), b"from the store");
    assert_eq!(names(&m.p("x")).unwrap(), vec!["y"]);
}

// ------------------------------------------------------------------ setattr

#[test]
fn setattr_chmod_chown_truncate() {
    let m = Mount::new();
    let u = m.users;
    write_file(&m.p("f"), b"0123456789").ctx("write f");

    chmod(&m.p("f"), 0o640).ctx("chmod 640");
    assert_eq!(
        m.sst("f").perm(),
        0o660,
        "chmod 640 is stored as 660 (group mirrors owner)"
    );
    assert_eq!(m.mst("f").perm(), 0o660);
    chmod(&m.p("f"), 0o750).ctx("chmod 750");
    assert_eq!(m.sst("f").perm(), 0o770);

    // chown (root may give the file away); the group stays the configured one.
    lchown(&m.p("f"), u.a.uid, u32::MAX).ctx("chown to A");
    assert_store(&m, "f", u.a.uid, u.gid, 0o770);
    assert_eq!(m.mst("f").uid, u.a.uid);
    lchown(&m.p("f"), u.b.uid, u.gid).ctx("chown to B:group");
    assert_store(&m, "f", u.b.uid, u.gid, 0o770);
    lchown(&m.p("f"), u32::MAX, u32::MAX).ctx("chown -1 -1");

    // truncate (path), ftruncate (fd), shrink and grow.
    truncate(&m.p("f"), 4).ctx("truncate 4");
    assert_eq!(fs::read(m.p("f")).unwrap(), b"0123");
    assert_eq!(m.sst("f").size, 4);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.p("f"))
        .ctx("open for ftruncate");
    f.set_len(1 << 20).ctx("ftruncate grow");
    drop(f);
    let data = fs::read(m.p("f")).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert_eq!(&data[..4], b"0123");
    assert!(data[4..].iter().all(|b| *b == 0));
    assert_eq!(m.sst("f").size, 1 << 20);
    truncate(&m.p("f"), 0).ctx("truncate 0");
    assert_eq!(m.mst("f").size, 0);
    assert_errno(
        truncate(&m.p("missing"), 0),
        &[libc::ENOENT],
        "truncate missing",
    );
    fs::create_dir(m.p("d")).unwrap();
    assert_errno(truncate(&m.p("d"), 0), &[libc::EISDIR], "truncate dir");
}

#[test]
fn utimens_set_now_omit() {
    let m = Mount::new();
    write_file(&m.p("f"), b"x").ctx("write f");
    let p = m.p("f");
    let (at, mt) = ((1_000_000_000, 123_456_789), (1_100_000_000, 987_654_321));

    utimensat(libc::AT_FDCWD, &p, ts(at.0, at.1), ts(mt.0, mt.1), 0).ctx("utimensat explicit");
    let s = m.mst("f");
    assert_eq!(
        (s.atime, s.mtime),
        (at, mt),
        "explicit times through the mount"
    );
    let s = m.sst("f");
    assert_eq!((s.atime, s.mtime), (at, mt), "explicit times in the store");

    // atime OMIT, mtime NOW
    let before = now_secs();
    utimensat(
        libc::AT_FDCWD,
        &p,
        ts(0, libc::UTIME_OMIT),
        ts(0, libc::UTIME_NOW),
        0,
    )
    .ctx("utimensat OMIT/NOW");
    let s = m.sst("f");
    assert_eq!(s.atime, at, "UTIME_OMIT must keep atime");
    assert!(
        s.mtime.0 >= before - 1 && s.mtime.0 <= now_secs() + 1,
        "UTIME_NOW mtime: {:?}",
        s.mtime
    );
    assert_eq!(m.mst("f").mtime, s.mtime);

    // atime NOW, mtime OMIT
    utimensat(libc::AT_FDCWD, &p, ts(at.0, at.1), ts(mt.0, mt.1), 0).unwrap();
    utimensat(
        libc::AT_FDCWD,
        &p,
        ts(0, libc::UTIME_NOW),
        ts(0, libc::UTIME_OMIT),
        0,
    )
    .ctx("utimensat NOW/OMIT");
    let s = m.sst("f");
    assert_eq!(s.mtime, mt, "UTIME_OMIT must keep mtime");
    assert!(s.atime.0 >= before - 1, "UTIME_NOW atime: {:?}", s.atime);

    // both OMIT: nothing changes
    let s0 = m.sst("f");
    utimensat(
        libc::AT_FDCWD,
        &p,
        ts(0, libc::UTIME_OMIT),
        ts(0, libc::UTIME_OMIT),
        0,
    )
    .ctx("utimensat OMIT/OMIT");
    let s1 = m.sst("f");
    assert_eq!((s0.atime, s0.mtime), (s1.atime, s1.mtime));

    // futimens on an open fd
    let f = fs::File::open(&p).unwrap();
    futimens(f.as_raw_fd(), ts(5, 6), ts(7, 8)).ctx("futimens");
    drop(f);
    let s = m.sst("f");
    assert_eq!((s.atime, s.mtime), ((5, 6), (7, 8)));

    // AT_SYMLINK_NOFOLLOW changes the link, not its target.
    symlink("f", &m.p("l")).ctx("symlink");
    let target_before = m.sst("f");
    utimensat(
        libc::AT_FDCWD,
        &m.p("l"),
        ts(300, 0),
        ts(400, 0),
        libc::AT_SYMLINK_NOFOLLOW,
    )
    .ctx("utimensat nofollow");
    assert_eq!(m.sst("l").mtime, (400, 0), "symlink mtime in store");
    assert_eq!(
        m.sst("f").mtime,
        target_before.mtime,
        "target must be untouched"
    );
}

// ------------------------------------------------------------------ readdir

#[test]
fn readdir_many_entries() {
    let m = Mount::new();
    fs::create_dir(m.p("d")).ctx("mkdir d");
    let n = 2000;
    let mut expected = BTreeSet::new();
    for i in 0..n {
        // Long names so the listing needs many FUSE readdir buffers.
        let name = format!("entry-{i:05}-{}", "x".repeat(60));
        fs::File::create(m.p(&format!("d/{name}"))).ctx("create entry");
        expected.insert(name);
    }
    fs::create_dir(m.p("d/subdir")).unwrap();
    symlink("subdir", &m.p("d/link")).unwrap();
    expected.insert("subdir".into());
    expected.insert("link".into());

    // std read_dir (readdir or readdirplus)
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for e in fs::read_dir(m.p("d")).ctx("read_dir") {
        let e = e.ctx("read_dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type().unwrap();
        match name.as_str() {
            "subdir" => assert!(ft.is_dir(), "subdir type"),
            "link" => assert!(ft.is_symlink(), "link type"),
            _ => assert!(ft.is_file(), "{name} type"),
        }
        seen.insert(name);
        count += 1;
    }
    assert_eq!(count, expected.len(), "no duplicates");
    assert_eq!(seen, expected);

    // raw getdents includes . and ..; a second pass after rewind sees the same.
    let raw = list_dir_raw(&m.p("d"), false).ctx("getdents");
    assert!(raw.contains(&".".to_string()) && raw.contains(&"..".to_string()));
    assert_eq!(raw.len(), expected.len() + 2);

    // readdir + stat of every entry (what `ls -l` does)
    for name in &expected {
        lst(&m.p(&format!("d/{name}"))).ctx("lstat listed entry");
    }

    // The store has the same entries.
    let store: BTreeSet<String> = names(&m.s("d")).unwrap().into_iter().collect();
    assert_eq!(store, expected);

    // Removing entries while listing is reflected in a fresh listing.
    for i in 0..n / 2 {
        fs::remove_file(m.p(&format!("d/entry-{i:05}-{}", "x".repeat(60)))).unwrap();
    }
    assert_eq!(names(&m.p("d")).unwrap().len(), n / 2 + 2);
}

#[test]
fn readdir_rewind_and_seek() {
    let m = Mount::new();
    fs::create_dir(m.p("d")).unwrap();
    for i in 0..300 {
        fs::File::create(m.p(&format!("d/file-{i:04}-{}", "y".repeat(40)))).unwrap();
    }
    let c = cs(m.p("d"));
    unsafe {
        let dir = libc::opendir(c.as_ptr());
        assert!(!dir.is_null(), "opendir");
        let mut first = Vec::new();
        let mut mid_pos = 0;
        let mut after_mid = Vec::new();
        let mut i = 0;
        loop {
            let ent = libc::readdir(dir);
            if ent.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            if i == 150 {
                mid_pos = libc::telldir(dir);
            }
            if i > 150 {
                after_mid.push(name.clone());
            }
            first.push(name);
            i += 1;
        }
        assert_eq!(first.len(), 302);
        libc::rewinddir(dir);
        let mut second = Vec::new();
        loop {
            let ent = libc::readdir(dir);
            if ent.is_null() {
                break;
            }
            second.push(
                std::ffi::CStr::from_ptr((*ent).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        assert_eq!(first, second, "listing after rewinddir");
        libc::seekdir(dir, mid_pos);
        let mut again = Vec::new();
        loop {
            let ent = libc::readdir(dir);
            if ent.is_null() {
                break;
            }
            again.push(
                std::ffi::CStr::from_ptr((*ent).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        assert_eq!(again, after_mid, "listing after seekdir(telldir())");
        libc::closedir(dir);
    }
}

// ------------------------------------------------------------------ mkdir / rmdir

#[test]
fn mkdir_rmdir_and_errors() {
    let m = Mount::new();
    mkdir(&m.p("d"), 0o755).ctx("mkdir d");
    assert!(m.sst("d").is_dir());
    assert_errno(mkdir(&m.p("d"), 0o755), &[libc::EEXIST], "mkdir existing");
    write_file(&m.p("d/f"), b"x").unwrap();
    assert_errno(
        mkdir(&m.p("d/f"), 0o755),
        &[libc::EEXIST],
        "mkdir over file",
    );
    assert_errno(
        mkdir(&m.p("d/f/sub"), 0o755),
        &[libc::ENOTDIR],
        "mkdir under file",
    );
    assert_errno(
        mkdir(&m.p("nope/sub"), 0o755),
        &[libc::ENOENT],
        "mkdir under missing",
    );
    assert_errno(
        rmdir(&m.p("d")),
        &[libc::ENOTEMPTY, libc::EEXIST],
        "rmdir non-empty",
    );
    assert_errno(rmdir(&m.p("d/f")), &[libc::ENOTDIR], "rmdir file");
    assert_errno(rmdir(&m.p("missing")), &[libc::ENOENT], "rmdir missing");
    assert_errno(unlink(&m.p("d")), &[libc::EISDIR], "unlink dir");
    unlink(&m.p("d/f")).ctx("unlink d/f");
    rmdir(&m.p("d")).ctx("rmdir d");
    assert!(lst(&m.s("d")).is_err(), "d gone from store");
    assert_errno(lst(&m.p("d")), &[libc::ENOENT], "d gone from mount");

    fs::create_dir_all(m.p("a/b/c/d/e")).ctx("mkdir -p");
    assert!(m.sst("a/b/c/d/e").is_dir());
    // fsyncdir
    let d = open(&m.p("a/b"), libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx("open dir");
    cvt(unsafe { libc::fsync(d.as_raw_fd()) }).ctx("fsync dir");
    cvt(unsafe { libc::fdatasync(d.as_raw_fd()) }).ctx("fdatasync dir");
    fs::remove_dir_all(m.p("a")).ctx("rm -r a");
    assert!(lst(&m.s("a")).is_err());
}

// ------------------------------------------------------------------ create/open/read/write

#[test]
fn create_open_read_write_flush_fsync() {
    let m = Mount::new();
    let p = m.p("f");
    let fd = open(&p, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o644).ctx("create O_EXCL");
    assert_eq!(write_fd(fd.as_raw_fd(), b"hello world").ctx("write"), 11);
    assert_eq!(pwrite_fd(fd.as_raw_fd(), b"WORLD", 6).ctx("pwrite"), 5);
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).ctx("fsync");
    cvt(unsafe { libc::fdatasync(fd.as_raw_fd()) }).ctx("fdatasync");
    assert_eq!(
        pread_fd(fd.as_raw_fd(), 100, 0).ctx("pread"),
        b"hello WORLD"
    );
    assert_eq!(pread_fd(fd.as_raw_fd(), 3, 8).ctx("pread mid"), b"RLD");
    assert_eq!(pread_fd(fd.as_raw_fd(), 10, 100).ctx("pread past EOF"), b"");
    // data is in the store once written (flush/release path)
    drop(fd);
    assert_eq!(
        fs::read(m.s("f")).unwrap(),
        b"hello WORLD",
        "store content after close"
    );

    assert_errno(
        open(&p, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644),
        &[libc::EEXIST],
        "O_EXCL existing",
    );
    assert_errno(
        open(&m.p("missing"), libc::O_RDONLY, 0),
        &[libc::ENOENT],
        "open missing",
    );
    assert_errno(
        open(&p, libc::O_RDONLY | libc::O_DIRECTORY, 0),
        &[libc::ENOTDIR],
        "O_DIRECTORY on file",
    );
    fs::create_dir(m.p("d")).unwrap();
    assert_errno(
        open(&m.p("d"), libc::O_RDWR, 0),
        &[libc::EISDIR],
        "open dir O_RDWR",
    );
    assert_errno(
        open(&m.p("f/x"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        &[libc::ENOTDIR],
        "create under file",
    );

    // O_APPEND
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .ctx("open append");
    f.write_all(b"!!").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"hello WORLD!!");

    // read with a plain File, seek
    let mut f = fs::File::open(&p).unwrap();
    f.seek(SeekFrom::Start(6)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "WORLD!!");

    // O_TRUNC
    let f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .ctx("open O_TRUNC");
    drop(f);
    assert_eq!(m.sst("f").size, 0);
    assert_eq!(m.mst("f").size, 0);

    // Two fds on one file see each other's writes.
    let f1 = open(&p, libc::O_RDWR, 0).unwrap();
    let f2 = open(&p, libc::O_RDWR, 0).unwrap();
    pwrite_fd(f1.as_raw_fd(), b"abc", 0).unwrap();
    assert_eq!(pread_fd(f2.as_raw_fd(), 10, 0).unwrap(), b"abc");
}

#[test]
fn unlink_and_open_unlinked_file() {
    let m = Mount::new();
    write_file(&m.p("f"), b"still here").unwrap();
    let fd = open(&m.p("f"), libc::O_RDWR, 0).ctx("open f");
    unlink(&m.p("f")).ctx("unlink f");
    assert_errno(lst(&m.p("f")), &[libc::ENOENT], "lstat after unlink");
    assert!(lst(&m.s("f")).is_err(), "gone from store");
    assert_errno(unlink(&m.p("f")), &[libc::ENOENT], "unlink twice");
    // The open file keeps working.
    assert_eq!(
        pread_fd(fd.as_raw_fd(), 100, 0).ctx("read unlinked"),
        b"still here"
    );
    pwrite_fd(fd.as_raw_fd(), b"STILL", 0).ctx("write unlinked");
    assert_eq!(pread_fd(fd.as_raw_fd(), 100, 0).unwrap(), b"STILL here");
    drop(fd);
    // A new file with the same name is a new file.
    write_file(&m.p("f"), b"new").unwrap();
    assert_eq!(fs::read(m.p("f")).unwrap(), b"new");
}

// ------------------------------------------------------------------ mknod

#[test]
fn mknod_fifo_and_regular_ok_devices_eperm() {
    let m = Mount::new();
    mknod(&m.p("fifo"), libc::S_IFIFO | 0o644, 0).ctx("mknod fifo");
    assert!(m.sst("fifo").is_fifo(), "fifo in store");
    assert!(m.mst("fifo").is_fifo(), "fifo through mount");
    assert!(
        fs::symlink_metadata(m.p("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // The FIFO works (O_RDWR on a FIFO never blocks on Linux).
    let fd = open(&m.p("fifo"), libc::O_RDWR | libc::O_NONBLOCK, 0).ctx("open fifo");
    write_fd(fd.as_raw_fd(), b"ping").unwrap();
    let mut buf = [0u8; 4];
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
    assert_eq!((n, &buf), (4, b"ping"));
    drop(fd);

    let c = cs(m.p("fifo2"));
    cvt(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }).ctx("mkfifo");
    assert!(m.sst("fifo2").is_fifo());

    mknod(&m.p("reg"), libc::S_IFREG | 0o644, 0).ctx("mknod regular");
    assert!(m.sst("reg").is_file());

    let dev = libc::makedev(1, 3); // /dev/null
    assert_errno(
        mknod(&m.p("null"), libc::S_IFCHR | 0o666, dev),
        &[libc::EPERM],
        "mknod char device as root",
    );
    assert!(lst(&m.s("null")).is_err(), "no char device in the store");
    assert_errno(
        mknod(&m.p("blk"), libc::S_IFBLK | 0o600, libc::makedev(7, 0)),
        &[libc::EPERM],
        "mknod block device",
    );
    assert!(lst(&m.s("blk")).is_err(), "no block device in the store");
    assert_errno(
        mknod(&m.p("fifo"), libc::S_IFIFO | 0o644, 0),
        &[libc::EEXIST],
        "mknod existing",
    );
}

// ------------------------------------------------------------------ rename

#[test]
fn rename_plain_and_over_existing() {
    let m = Mount::new();
    write_file(&m.p("a"), b"A").unwrap();
    rename(&m.p("a"), &m.p("b")).ctx("rename a b");
    assert!(lst(&m.s("a")).is_err());
    assert_eq!(fs::read(m.s("b")).unwrap(), b"A");
    assert_errno(lst(&m.p("a")), &[libc::ENOENT], "old name");
    assert_eq!(fs::read(m.p("b")).unwrap(), b"A");

    write_file(&m.p("c"), b"C").unwrap();
    let fd_c = open(&m.p("c"), libc::O_RDONLY, 0).unwrap();
    rename(&m.p("b"), &m.p("c")).ctx("rename over existing");
    assert_eq!(fs::read(m.p("c")).unwrap(), b"A");
    assert_eq!(fs::read(m.s("c")).unwrap(), b"A");
    assert!(lst(&m.s("b")).is_err());
    assert_eq!(
        pread_fd(fd_c.as_raw_fd(), 10, 0).unwrap(),
        b"C",
        "replaced file still readable via open fd"
    );
    assert_eq!(names(&m.p("")).unwrap(), vec!["c"]);

    // across directories
    fs::create_dir_all(m.p("d1/x")).unwrap();
    fs::create_dir(m.p("d2")).unwrap();
    rename(&m.p("c"), &m.p("d1/x/c")).ctx("rename into subdir");
    rename(&m.p("d1/x"), &m.p("d2/y")).ctx("move dir");
    assert_eq!(fs::read(m.p("d2/y/c")).unwrap(), b"A");
    assert_eq!(fs::read(m.s("d2/y/c")).unwrap(), b"A");
    assert_errno(
        rename(&m.p("nope"), &m.p("x")),
        &[libc::ENOENT],
        "rename missing",
    );
    // rename onto itself is a no-op
    rename(&m.p("d2/y/c"), &m.p("d2/y/c")).ctx("rename to itself");
    assert_eq!(fs::read(m.p("d2/y/c")).unwrap(), b"A");
}

#[test]
fn rename_directory_errors() {
    let m = Mount::new();
    fs::create_dir_all(m.p("full/inner")).unwrap();
    fs::create_dir(m.p("empty")).unwrap();
    fs::create_dir(m.p("src")).unwrap();
    write_file(&m.p("file"), b"f").unwrap();
    assert_errno(
        rename(&m.p("src"), &m.p("full")),
        &[libc::ENOTEMPTY, libc::EEXIST],
        "dir over non-empty dir",
    );
    assert_errno(
        rename(&m.p("src"), &m.p("file")),
        &[libc::ENOTDIR],
        "dir over file",
    );
    assert_errno(
        rename(&m.p("file"), &m.p("empty")),
        &[libc::EISDIR],
        "file over dir",
    );
    assert_errno(
        rename(&m.p("full"), &m.p("full/inner/x")),
        &[libc::EINVAL],
        "dir into its own subdir",
    );
    rename(&m.p("src"), &m.p("empty")).ctx("dir over empty dir");
    assert!(m.sst("empty").is_dir());
    assert!(lst(&m.s("src")).is_err());
}

#[test]
fn rename_noreplace() {
    let m = Mount::new();
    write_file(&m.p("x"), b"X").unwrap();
    write_file(&m.p("y"), b"Y").unwrap();
    assert_errno(
        rename2(&m.p("x"), &m.p("y"), libc::RENAME_NOREPLACE),
        &[libc::EEXIST],
        "RENAME_NOREPLACE over existing",
    );
    assert_eq!(fs::read(m.p("x")).unwrap(), b"X");
    assert_eq!(fs::read(m.p("y")).unwrap(), b"Y");
    assert_eq!(fs::read(m.s("y")).unwrap(), b"Y");
    rename2(&m.p("x"), &m.p("z"), libc::RENAME_NOREPLACE).ctx("RENAME_NOREPLACE to new name");
    assert_eq!(fs::read(m.s("z")).unwrap(), b"X");
    assert!(lst(&m.s("x")).is_err());
}

#[test]
fn rename_exchange() {
    let m = Mount::new();
    write_file(&m.p("x"), b"X").unwrap();
    fs::create_dir(m.p("d")).unwrap();
    write_file(&m.p("d/y"), b"Y").unwrap();
    rename2(&m.p("x"), &m.p("d/y"), libc::RENAME_EXCHANGE).ctx("RENAME_EXCHANGE");
    assert_eq!(fs::read(m.p("x")).unwrap(), b"Y");
    assert_eq!(fs::read(m.p("d/y")).unwrap(), b"X");
    assert_eq!(fs::read(m.s("x")).unwrap(), b"Y");
    assert_eq!(fs::read(m.s("d/y")).unwrap(), b"X");
    // file <-> directory
    rename2(&m.p("x"), &m.p("d"), libc::RENAME_EXCHANGE).ctx("RENAME_EXCHANGE file/dir");
    assert!(m.sst("x").is_dir());
    assert!(m.mst("x").is_dir());
    assert_eq!(fs::read(m.p("d")).unwrap(), b"Y");
    assert_eq!(fs::read(m.p("x/y")).unwrap(), b"X");
    assert_errno(
        rename2(&m.p("x/y"), &m.p("missing"), libc::RENAME_EXCHANGE),
        &[libc::ENOENT],
        "exchange with missing",
    );
}

// ------------------------------------------------------------------ symlink / readlink / link

#[test]
fn symlinks_hf_cache_layout() {
    let m = Mount::new();
    let repo = "hub/models--org--name";
    let etag = "3f4a2e1bd84d1c2a9e8f7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e";
    fs::create_dir_all(m.p(&format!("{repo}/blobs"))).unwrap();
    fs::create_dir_all(m.p(&format!("{repo}/snapshots/abc123/sub/dir"))).unwrap();
    let blob = pattern(7, 100_000);
    write_file(&m.p(&format!("{repo}/blobs/{etag}")), &blob).unwrap();

    let link = m.p(&format!("{repo}/snapshots/abc123/model.safetensors"));
    let target = format!("../../blobs/{etag}");
    symlink(&target, &link).ctx("symlink");
    assert_eq!(readlink(&link).ctx("readlink"), target);
    assert!(lst(&link).unwrap().is_symlink());
    assert_eq!(lst(&link).unwrap().size, target.len() as u64);
    assert_eq!(
        readlink(&m.s(&format!("{repo}/snapshots/abc123/model.safetensors"))).unwrap(),
        target,
        "store link"
    );
    assert_eq!(fs::read(&link).ctx("read through symlink"), blob);
    assert_eq!(stf(&link).unwrap().size, blob.len() as u64);

    let deep = m.p(&format!("{repo}/snapshots/abc123/sub/dir/f.json"));
    symlink(&format!("../../../../blobs/{etag}"), &deep).ctx("nested symlink");
    assert_eq!(fs::read(&deep).ctx("read nested"), blob);

    assert_errno(
        symlink("x", &link),
        &[libc::EEXIST],
        "symlink over existing",
    );
    assert_errno(
        readlink(&m.p(&format!("{repo}/blobs/{etag}"))),
        &[libc::EINVAL],
        "readlink on a file",
    );

    // dangling link
    symlink("../nowhere", &m.p("dangling")).unwrap();
    assert!(lst(&m.p("dangling")).unwrap().is_symlink());
    assert_errno(stf(&m.p("dangling")), &[libc::ENOENT], "stat dangling");

    // long target
    let long = "a/".repeat(1500) + "end";
    symlink(&long, &m.p("long")).ctx("long symlink");
    assert_eq!(readlink(&m.p("long")).unwrap(), long);

    // unlink + replace the pointer like huggingface_hub does
    unlink(&link).ctx("unlink symlink");
    symlink(&target, &link).ctx("re-create symlink");
    assert_eq!(fs::read(&link).unwrap(), blob);
    // Symlinks are listed with the right type.
    let ft = fs::read_dir(m.p(&format!("{repo}/snapshots/abc123")))
        .unwrap()
        .flatten()
        .find(|e| e.file_name() == "model.safetensors")
        .unwrap()
        .file_type()
        .unwrap();
    assert!(ft.is_symlink());
}

#[test]
fn hard_link() {
    let m = Mount::new();
    write_file(&m.p("f"), b"data").unwrap();
    fs::create_dir(m.p("d")).unwrap();
    link(&m.p("f"), &m.p("d/g")).ctx("link");
    assert_eq!(m.mst("f").nlink, 2);
    assert_eq!(m.mst("d/g").nlink, 2);
    assert_eq!(m.sst("f").nlink, 2);
    assert_eq!(m.sst("f").ino, m.sst("d/g").ino, "one inode in the store");
    assert_eq!(
        m.mst("f").ino,
        m.mst("d/g").ino,
        "one inode through the mount"
    );
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.p("d/g"))
        .unwrap();
    f.write_all(b"+more").unwrap();
    drop(f);
    assert_eq!(fs::read(m.p("f")).unwrap(), b"data+more");
    assert_errno(
        link(&m.p("f"), &m.p("d/g")),
        &[libc::EEXIST],
        "link onto existing",
    );
    assert_errno(
        link(&m.p("d"), &m.p("dlink")),
        &[libc::EPERM],
        "link a directory",
    );
    assert_errno(
        link(&m.p("missing"), &m.p("x")),
        &[libc::ENOENT],
        "link missing",
    );
    unlink(&m.p("f")).unwrap();
    assert_eq!(m.mst("d/g").nlink, 1);
    assert_eq!(fs::read(m.p("d/g")).unwrap(), b"data+more");
}

// ------------------------------------------------------------------ statfs

#[test]
fn statfs_reports_the_store_filesystem() {
    let m = Mount::new();
    let a = statvfs(&m.mnt).ctx("statvfs mount");
    let s = statvfs(&m.store).unwrap();
    let total = |v: &libc::statvfs| v.f_blocks as u128 * v.f_frsize as u128;
    let (ta, tsz) = (total(&a), total(&s));
    assert!(ta > 0, "total size through the mount is 0");
    assert!(
        ta.abs_diff(tsz) * 100 <= tsz,
        "total size: mount {ta} vs store {tsz}"
    );
    assert_eq!(a.f_namemax, s.f_namemax, "name max");
    let free = |v: &libc::statvfs| v.f_bavail as u128 * v.f_frsize as u128;
    assert!(
        free(&a).abs_diff(free(&s)) * 20 <= tsz,
        "available: mount {} vs store {}",
        free(&a),
        free(&s)
    );
    assert!(a.f_files > 0);
}

// ------------------------------------------------------------------ fallocate / lseek / copy_file_range

#[test]
fn fallocate_allocate_and_keep_size() {
    let m = Mount::new();
    let fd = open(&m.p("f"), libc::O_CREAT | libc::O_RDWR, 0o644).unwrap();
    fallocate(fd.as_raw_fd(), 0, 0, 1 << 20).ctx("fallocate 1 MiB");
    assert_eq!(m.sst("f").size, 1 << 20);
    assert_eq!(fst(fd.as_raw_fd()).unwrap().size, 1 << 20);
    assert!(
        m.sst("f").blocks >= 2048,
        "blocks allocated in store: {}",
        m.sst("f").blocks
    );
    fallocate(fd.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20)
        .ctx("fallocate KEEP_SIZE");
    assert_eq!(m.sst("f").size, 1 << 20, "KEEP_SIZE keeps the size");
    assert!(
        m.sst("f").blocks >= 4096,
        "blocks after KEEP_SIZE: {}",
        m.sst("f").blocks
    );
    assert_eq!(pread_fd(fd.as_raw_fd(), 16, 4096).unwrap(), vec![0u8; 16]);
}

#[test]
fn fallocate_punch_hole() {
    let m = Mount::new();
    write_file(&m.p("f"), &vec![0xABu8; 1 << 20]).unwrap();
    let fd = open(&m.p("f"), libc::O_RDWR, 0).unwrap();
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).unwrap();
    let blocks_before = m.sst("f").blocks;
    fallocate(
        fd.as_raw_fd(),
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        65536,
        262144,
    )
    .ctx("fallocate PUNCH_HOLE");
    let data = pread_fd(fd.as_raw_fd(), 1 << 20, 0).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert!(data[..65536].iter().all(|b| *b == 0xAB));
    assert!(
        data[65536..65536 + 262144].iter().all(|b| *b == 0),
        "hole reads as zeros"
    );
    assert!(data[65536 + 262144..].iter().all(|b| *b == 0xAB));
    assert!(
        m.sst("f").blocks < blocks_before,
        "store blocks {} !< {blocks_before}",
        m.sst("f").blocks
    );
}

#[test]
fn lseek_data_and_hole() {
    let m = Mount::new();
    let fd = open(&m.p("sparse"), libc::O_CREAT | libc::O_RDWR, 0o644).unwrap();
    let eight = 8 << 20;
    pwrite_fd(fd.as_raw_fd(), &[1u8; 4096], 0).unwrap();
    pwrite_fd(fd.as_raw_fd(), &[2u8; 4096], eight).unwrap();
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).unwrap();
    let sfd = open(&m.s("sparse"), libc::O_RDONLY, 0).unwrap();
    for (off, whence, name) in [
        (0, libc::SEEK_DATA, "SEEK_DATA 0"),
        (0, libc::SEEK_HOLE, "SEEK_HOLE 0"),
        (4096, libc::SEEK_DATA, "SEEK_DATA 4096"),
        (eight, libc::SEEK_HOLE, "SEEK_HOLE 8M"),
        (100, libc::SEEK_HOLE, "SEEK_HOLE 100"),
    ] {
        let want = lseek(sfd.as_raw_fd(), off, whence).unwrap();
        let got = lseek(fd.as_raw_fd(), off, whence).ctx(name);
        assert_eq!(got, want, "{name}: mount vs store");
    }
    assert_eq!(lseek(fd.as_raw_fd(), 0, libc::SEEK_HOLE).unwrap(), 4096);
    assert_eq!(lseek(fd.as_raw_fd(), 4096, libc::SEEK_DATA).unwrap(), eight);
    assert_errno(
        lseek(fd.as_raw_fd(), eight + 4096, libc::SEEK_DATA),
        &[libc::ENXIO],
        "SEEK_DATA at EOF",
    );
    assert_eq!(
        lseek(fd.as_raw_fd(), 0, libc::SEEK_END).unwrap(),
        eight + 4096
    );
    assert_eq!(lseek(fd.as_raw_fd(), 10, libc::SEEK_SET).unwrap(), 10);
    assert_eq!(lseek(fd.as_raw_fd(), 5, libc::SEEK_CUR).unwrap(), 15);
}

#[test]
fn copy_file_range_through_mount() {
    let m = Mount::new();
    let data = pattern(42, 3 * (1 << 20) + 777);
    write_file(&m.p("src"), &data).unwrap();
    let src = open(&m.p("src"), libc::O_RDONLY, 0).unwrap();
    let dst = open(
        &m.p("dst"),
        libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
        0o644,
    )
    .unwrap();
    let mut left = data.len();
    while left > 0 {
        let n = copy_file_range(src.as_raw_fd(), None, dst.as_raw_fd(), None, left)
            .ctx("copy_file_range");
        assert!(n > 0, "copy_file_range returned 0 with {left} bytes left");
        left -= n;
    }
    drop(dst);
    assert_eq!(
        fs::read(m.p("dst")).unwrap(),
        data,
        "copy through the mount"
    );
    assert_eq!(fs::read(m.s("dst")).unwrap(), data, "copy in the store");

    // explicit offsets
    write_file(&m.p("dst2"), &[b'.'; 100]).unwrap();
    let dst2 = open(&m.p("dst2"), libc::O_WRONLY, 0).unwrap();
    let n = copy_file_range(src.as_raw_fd(), Some(5), dst2.as_raw_fd(), Some(10), 50)
        .ctx("copy_file_range offsets");
    assert_eq!(n, 50);
    drop(dst2);
    let got = fs::read(m.p("dst2")).unwrap();
    assert_eq!(&got[..10], &[b'.'; 10]);
    assert_eq!(&got[10..60], &data[5..55]);
    assert_eq!(&got[60..], &[b'.'; 40]);
}

// ------------------------------------------------------------------ xattrs

#[test]
fn user_xattrs() {
    let m = Mount::new();
    write_file(&m.p("f"), b"x").unwrap();
    fs::create_dir(m.p("d")).unwrap();
    for rel in ["f", "d"] {
        let p = m.p(rel);
        lsetxattr(&p, "user.hf.etag", b"abc123", 0).ctx("setxattr user.*");
        assert_eq!(lgetxattr(&p, "user.hf.etag").ctx("getxattr"), b"abc123");
        assert_eq!(lgetxattr_size(&p, "user.hf.etag").ctx("getxattr size"), 6);
        assert!(
            llistxattr(&p)
                .ctx("listxattr")
                .contains(&"user.hf.etag".to_string())
        );
        assert_eq!(
            lgetxattr(&m.s(rel), "user.hf.etag").ctx("xattr in store"),
            b"abc123"
        );
        assert_errno(
            lsetxattr(&p, "user.hf.etag", b"x", libc::XATTR_CREATE),
            &[libc::EEXIST],
            "XATTR_CREATE existing",
        );
        lsetxattr(&p, "user.hf.etag", b"replaced", libc::XATTR_REPLACE).ctx("XATTR_REPLACE");
        assert_eq!(lgetxattr(&p, "user.hf.etag").unwrap(), b"replaced");
        assert_errno(
            lsetxattr(&p, "user.nope", b"x", libc::XATTR_REPLACE),
            &[libc::ENODATA],
            "XATTR_REPLACE missing",
        );
        let big = pattern(3, 4000);
        lsetxattr(&p, "user.big", &big, 0).ctx("big xattr");
        assert_eq!(lgetxattr(&p, "user.big").unwrap(), big);
        lremovexattr(&p, "user.hf.etag").ctx("removexattr");
        assert_errno(
            lgetxattr(&p, "user.hf.etag"),
            &[libc::ENODATA],
            "getxattr removed",
        );
        assert_errno(
            lremovexattr(&p, "user.hf.etag"),
            &[libc::ENODATA],
            "removexattr missing",
        );
        assert!(
            !llistxattr(&p)
                .unwrap()
                .contains(&"user.hf.etag".to_string())
        );
        assert_errno(
            lgetxattr(&m.s(rel), "user.hf.etag"),
            &[libc::ENODATA],
            "removed in store",
        );
    }
}

#[test]
fn security_and_trusted_xattrs_refused() {
    let m = Mount::new();
    write_file(&m.p("f"), b"x").unwrap();
    let refused = [libc::EPERM, libc::EOPNOTSUPP, libc::EACCES];
    for name in ["security.evil", "trusted.evil", "security.capability"] {
        let r = lsetxattr(
            &m.p("f"),
            name,
            b"\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            0,
        );
        assert_errno(r, &refused, &format!("setxattr {name} as root"));
        assert_errno(
            lgetxattr(&m.s("f"), name),
            &[libc::ENODATA],
            &format!("{name} must not reach the store"),
        );
    }
    fs::create_dir(m.p("d")).unwrap();
    assert_errno(
        lsetxattr(&m.p("d"), "trusted.overlay.opaque", b"y", 0),
        &refused,
        "trusted.* on a dir",
    );
    assert_errno(
        lgetxattr(&m.s("d"), "trusted.overlay.opaque"),
        &[libc::ENODATA],
        "trusted.* must not reach the store",
    );
    // A member cannot either.
    let p = m.p("f");
    let r = as_user(&m.users.a, 0o022, move || {
        lsetxattr(&p, "security.evil", b"x", 0)
    });
    assert_errno(r, &refused, "setxattr security.* as member");
}

// ------------------------------------------------------------------ large files / mmap

#[test]
fn large_file_write_read_checksum() {
    let m = Mount::new();
    let size = 64usize << 20;
    let chunk = 1usize << 20;
    let mut want = Checksum::new();
    {
        let mut f = fs::File::create(m.p("big")).ctx("create big");
        for i in 0..size / chunk {
            let data = pattern(i as u64 + 1000, chunk);
            want.update(&data);
            f.write_all(&data).ctx("write big");
        }
        f.sync_all().ctx("fsync big");
    }
    assert_eq!(m.mst("big").size, size as u64);
    assert_eq!(m.sst("big").size, size as u64);
    assert_eq!(
        checksum_file(&m.p("big"), 128 << 10).ctx("read back"),
        want.value(),
        "mount content"
    );
    assert_eq!(
        checksum_file(&m.s("big"), 1 << 20).unwrap(),
        want.value(),
        "store content"
    );
    // odd-sized reads at odd offsets
    let fd = open(&m.p("big"), libc::O_RDONLY, 0).unwrap();
    // straddles the boundary between chunk 33 and chunk 34
    let off = 34 * (1 << 20) - 12345;
    let got = pread_fd(fd.as_raw_fd(), 70_001, off as i64).unwrap();
    let mut expect = pattern(33 + 1000, chunk)[chunk - 12345..].to_vec();
    expect.extend_from_slice(&pattern(34 + 1000, chunk)[..70_001 - expect.len()]);
    assert_eq!(got, expect);
}

fn mmap_check(m: &Mount, rel: &str, data: &[u8], flags: i32) {
    let fd = open(&m.p(rel), libc::O_RDONLY, 0).unwrap();
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            flags,
            fd.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let s = std::slice::from_raw_parts(p as *const u8, data.len());
        let ok = s == data;
        libc::munmap(p, data.len());
        assert!(ok, "mmap contents differ (flags {flags})");
    }
}

#[test]
fn mmap_read() {
    let m = Mount::new();
    let data = pattern(9, 3 * (1 << 20) + 123);
    write_file(&m.p("weights.safetensors"), &data).unwrap();
    mmap_check(&m, "weights.safetensors", &data, libc::MAP_PRIVATE);
    mmap_check(&m, "weights.safetensors", &data, libc::MAP_SHARED);
    // a file written directly in the store
    let data2 = pattern(10, 1 << 20);
    write_file(&m.s("arrow"), &data2).unwrap();
    mmap_check(&m, "arrow", &data2, libc::MAP_PRIVATE);
}

#[test]
fn mmap_shared_write() {
    let m = Mount::new();
    let len = 1usize << 20;
    write_file(&m.p("f"), &vec![0u8; len]).unwrap();
    let data = pattern(11, len);
    let fd = open(&m.p("f"), libc::O_RDWR, 0).unwrap();
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap shared rw: {}",
            std::io::Error::last_os_error()
        );
        std::ptr::copy_nonoverlapping(data.as_ptr(), p as *mut u8, len);
        assert_eq!(
            libc::msync(p, len, libc::MS_SYNC),
            0,
            "msync: {}",
            std::io::Error::last_os_error()
        );
        libc::munmap(p, len);
    }
    drop(fd);
    assert_eq!(
        fs::read(m.s("f")).unwrap(),
        data,
        "store content after msync"
    );
    assert_eq!(
        fs::read(m.p("f")).unwrap(),
        data,
        "mount content after msync"
    );
}

// ------------------------------------------------------------------ forget / concurrency

#[test]
fn forget_and_lookup_again() {
    let m = Mount::new();
    fs::create_dir(m.p("d")).unwrap();
    for i in 0..200 {
        write_file(&m.p(&format!("d/f{i}")), format!("content {i}").as_bytes()).unwrap();
    }
    let held = open(&m.p("d/f7"), libc::O_RDONLY, 0).unwrap();
    // Make the kernel forget cached dentries/inodes (sends FORGET / BATCH_FORGET).
    let _ = fs::write("/proc/sys/vm/drop_caches", b"2");
    for i in 0..200 {
        assert_eq!(
            fs::read(m.p(&format!("d/f{i}"))).ctx("read after forget"),
            format!("content {i}").as_bytes()
        );
    }
    assert_eq!(pread_fd(held.as_raw_fd(), 100, 0).unwrap(), b"content 7");
    assert_eq!(names(&m.p("d")).unwrap().len(), 200);
    let _ = fs::write("/proc/sys/vm/drop_caches", b"2");
    drop(held);
    let _ = fs::write("/proc/sys/vm/drop_caches", b"2");
    assert_eq!(fs::read(m.p("d/f7")).unwrap(), b"content 7");
}

#[test]
fn concurrent_operations_from_many_threads() {
    let m = Mount::new();
    let mnt = m.mnt.clone();
    timed("concurrent ops", move || {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let mnt = mnt.clone();
                std::thread::spawn(move || {
                    let dir = mnt.join(format!("t{t}"));
                    fs::create_dir(&dir).unwrap();
                    for i in 0..100 {
                        let p = dir.join(format!("f{i}"));
                        let data = pattern((t * 1000 + i) as u64, 10_000 + i);
                        write_file(&p, &data).unwrap();
                        assert_eq!(fs::read(&p).unwrap(), data);
                        if i % 3 == 0 {
                            fs::rename(&p, dir.join(format!("r{i}"))).unwrap();
                        }
                        if i % 5 == 0 {
                            let _ = fs::remove_file(dir.join(format!("f{i}")));
                        }
                    }
                    names(&dir).unwrap().len()
                })
            })
            .collect();
        for h in hs {
            assert!(h.join().unwrap() > 0);
        }
    });
}

// ------------------------------------------------------------------ one inode, many opens

#[test]
fn mixed_access_modes_on_one_inode() {
    let m = Mount::new();
    // read-only open first, then writers
    write_file(&m.p("f"), b"hello").unwrap();
    let r = open(&m.p("f"), libc::O_RDONLY, 0).unwrap();
    assert_eq!(pread_fd(r.as_raw_fd(), 100, 0).unwrap(), b"hello");
    let w = open(&m.p("f"), libc::O_WRONLY, 0).ctx("O_WRONLY while an O_RDONLY open exists");
    pwrite_fd(w.as_raw_fd(), b"HE", 0).ctx("write on the O_WRONLY open");
    let a = open(&m.p("f"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    write_fd(a.as_raw_fd(), b"!").ctx("write on the O_APPEND open");
    let rw = open(&m.p("f"), libc::O_RDWR, 0).unwrap();
    assert_eq!(pread_fd(rw.as_raw_fd(), 100, 0).unwrap(), b"HEllo!");
    assert_eq!(
        pread_fd(r.as_raw_fd(), 100, 0).unwrap(),
        b"HEllo!",
        "the read-only open sees the writes"
    );
    assert_errno(
        write_fd(r.as_raw_fd(), b"x"),
        &[libc::EBADF],
        "write on an O_RDONLY fd",
    );
    drop((r, w, a, rw));
    assert_eq!(fs::read(m.s("f")).unwrap(), b"HEllo!");

    // write-only open first, then a reader
    let w = open(&m.p("g"), libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap();
    write_fd(w.as_raw_fd(), b"written first").unwrap();
    let r = open(&m.p("g"), libc::O_RDONLY, 0).ctx("O_RDONLY while an O_WRONLY open exists");
    assert_eq!(
        pread_fd(r.as_raw_fd(), 100, 0).ctx("read while a write-only open exists"),
        b"written first"
    );
    assert_errno(
        pread_fd(w.as_raw_fd(), 10, 0),
        &[libc::EBADF],
        "read on an O_WRONLY fd",
    );
    // O_TRUNC by a second open while the others are live
    let t = open(&m.p("g"), libc::O_WRONLY | libc::O_TRUNC, 0).unwrap();
    assert_eq!(fst(r.as_raw_fd()).unwrap().size, 0);
    write_fd(t.as_raw_fd(), b"new").unwrap();
    assert_eq!(pread_fd(r.as_raw_fd(), 100, 0).unwrap(), b"new");
    drop((w, r, t));

    // Different users on one inode: A reads, B writes, A sees B's data.
    let u = m.users;
    let p = m.p("shared");
    as_user(&u.a, 0o022, move || write_file(&p, b"aaaa").unwrap());
    let p = m.p("shared");
    let ra = as_user(&u.a, 0o022, move || open(&p, libc::O_RDONLY, 0).unwrap());
    let p = m.p("shared");
    as_user(&u.b, 0o077, move || {
        let fd = open(&p, libc::O_RDWR, 0).ctx("B opens A's file O_RDWR");
        pwrite_fd(fd.as_raw_fd(), b"bb", 1).ctx("B writes");
    });
    assert_eq!(pread_fd(ra.as_raw_fd(), 10, 0).unwrap(), b"abba");
}

#[test]
fn two_daemons_close_to_open_consistency() {
    let m1 = Mount::new();
    let m2 = m1.second();
    write_file(&m1.p("f"), b"version-1").unwrap();
    assert_eq!(fs::read(m2.p("f")).unwrap(), b"version-1");
    // same size, new content, written through the other daemon
    write_file(&m1.p("f"), b"version-2").unwrap();
    assert_eq!(
        fs::read(m2.p("f")).unwrap(),
        b"version-2",
        "re-open through mount 2 after a write through mount 1"
    );
    // grows: the new size shows within the attribute timeout
    write_file(&m1.p("f"), b"version-3 is longer").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || fs::read(m2.p("f"))
            .map(|d| d == b"version-3 is longer")
            .unwrap_or(false)),
        "mount 2 never saw the longer content"
    );
    // rename-over (how huggingface_hub publishes a blob) is seen by the other daemon
    write_file(&m1.p("f.incomplete"), b"final").unwrap();
    rename(&m1.p("f.incomplete"), &m1.p("f")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || fs::read(m2.p("f"))
            .map(|d| d == b"final")
            .unwrap_or(false)),
        "mount 2 never saw the renamed-over file"
    );
    // an entry deleted through one daemon disappears from the other
    unlink(&m1.p("f")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || lst(&m2.p("f")).is_err()),
        "mount 2 still sees a deleted file"
    );
    // an entry created through one daemon appears in the other (negative entries expire)
    assert!(lst(&m2.p("late")).is_err());
    write_file(&m1.p("late"), b"late").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || lst(&m2.p("late")).is_ok()),
        "mount 2 never saw a new file"
    );
}

/// A file another daemon created behind this mount's cached negative entry: the kernel
/// sends a create, the daemon finds the file, and O_TRUNC must still empty it.
#[test]
fn create_over_a_file_made_behind_a_negative_entry_truncates() {
    let m1 = Mount::new();
    let m2 = m1.second();
    assert!(fs::metadata(m1.p("x")).is_err(), "x must not exist yet");
    fs::write(m2.p("x"), vec![b'o'; 10_000]).unwrap();
    // Within entry_timeout, mount 1 still believes x is absent and sends CREATE.
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(m1.p("x"))
        .unwrap();
    std::io::Write::write_all(&mut f, &[b'n'; 1000]).unwrap();
    drop(f);
    assert_eq!(fs::read(m1.s("x")).unwrap(), vec![b'n'; 1000]);
}

/// A cache with more entries than the daemon may hold descriptors: walked twice with every
/// entry stat'ed and read, nothing fails with EMFILE (inode descriptors are closed and
/// reopened by file handle), and the daemon's descriptors stay within its limit.
#[test]
fn walk_more_entries_than_the_daemon_may_keep_descriptors() {
    let m = Mount::with_nofile_limit("", 256);
    for d in 0..30 {
        let dir = m.s(&format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..50 {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    for pass in 0..2 {
        let mut seen = 0;
        for d in 0..30 {
            for f in 0..50 {
                let p = m.p(&format!("d{d}/f{f}"));
                let data =
                    fs::read(&p).unwrap_or_else(|e| panic!("pass {pass}: {}: {e}", p.display()));
                assert_eq!(data, format!("{d}/{f}").into_bytes());
                seen += 1;
            }
        }
        assert_eq!(seen, 1500);
    }
    let pid = m.daemon_pids[0];
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    assert!(
        fds <= 256,
        "daemon holds {fds} descriptors, over its limit of 256"
    );
}
