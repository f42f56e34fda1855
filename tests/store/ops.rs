//! Fixed cases of the policy and of symlink safety, checked on the store's disk.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};

use hfcachefs::claim::{self, CreateError};
use hfcachefs::fs::ROOT_ID;
use hfcachefs::fs::store::{Caller, NO_HANDLE, SetAttr};
use hfcachefs::policy::{Others, Policy};
use hfcachefs::sys::{self, Name};

use crate::harness::{Attr, GID, Harness, KERNEL, caller};

const REG: u32 = libc::S_IFREG;
const DIR: u32 = libc::S_IFDIR;
const LNK: u32 = libc::S_IFLNK;
const FIFO: u32 = libc::S_IFIFO;

fn attr(kind: u32, mode: u32, uid: u32, size: Option<u64>) -> Attr {
    Attr {
        kind,
        mode,
        uid,
        gid: GID,
        size,
    }
}

/// Makes a file, a FIFO, a directory with a file in it and a symlink, each named with `tag`.
fn make_all(h: &Harness, tag: &str, who: Caller, umask: u32) {
    let s = &h.store;
    let name = |stem: &str| format!("{stem}-{tag}");
    let flags = libc::O_CREAT | libc::O_WRONLY;
    let (e, fh) = s
        .create(ROOT_ID, OsStr::new(&name("file")), 0o666, umask, flags, who)
        .unwrap();
    h.hold(&e);
    s.release(fh);
    let fifo = OsStr::new(&name("fifo")).to_owned();
    h.hold(&s.mknod(ROOT_ID, &fifo, FIFO | 0o644, umask, who).unwrap());
    let dir = h.hold(
        &s.mkdir(ROOT_ID, OsStr::new(&name("dir")), 0o777, umask, who)
            .unwrap(),
    );
    let (e, fh) = s
        .create(dir, OsStr::new("inner"), 0o644, umask, flags, who)
        .unwrap();
    h.hold(&e);
    s.release(fh);
    let link = OsStr::new(&name("link")).to_owned();
    h.hold(&s.symlink(ROOT_ID, &link, OsStr::new("file"), who).unwrap());
}

/// Releases every reference the test held and checks the store is back to its root alone
/// and that nothing on disk breaks the policy.
fn finish(h: &Harness) {
    h.forget_all();
    assert_eq!(
        h.store.inode_count().0,
        1,
        "lookup counts must return to zero"
    );
    assert_eq!(h.violations(), Vec::<String>::new());
}

#[test]
fn creates_under_umask_022_and_077_get_group_bits_and_the_group() {
    let h = Harness::new(Others::None);
    // A member through the policy's group, and one whose primary group is their own.
    let (a, b) = (caller(50001, GID), caller(50002, 50002));
    make_all(&h, "a", a, 0o022);
    make_all(&h, "b", b, 0o077);
    let disk = h.on_disk();
    for (tag, uid) in [("a", 50001), ("b", 50002)] {
        let at = |stem: &str| disk[&format!("{stem}-{tag}")].clone();
        assert_eq!(at("file"), attr(REG, 0o660, uid, Some(0)));
        assert_eq!(at("fifo"), attr(FIFO, 0o660, uid, None));
        assert_eq!(at("dir"), attr(DIR, 0o2770, uid, None));
        let inner = &disk[&format!("dir-{tag}/inner")];
        assert_eq!(*inner, attr(REG, 0o660, uid, Some(0)));
        assert_eq!(at("link"), attr(LNK, 0o777, uid, None));
    }
    // What the store reports is what is on disk.
    let id = h.resolve(&["dir-b", "inner"]).unwrap();
    let st = h.store.getattr(id).unwrap().st;
    assert_eq!(Attr::of_stat(&st), disk["dir-b/inner"]);
    finish(&h);
}

#[test]
fn others_read_gives_outsiders_at_most_read_and_traverse() {
    let h = Harness::new(Others::Read);
    make_all(&h, "a", caller(50001, GID), 0o022);
    make_all(&h, "b", caller(50002, GID), 0o077);
    make_all(&h, "c", caller(50003, GID), 0o000);
    let disk = h.on_disk();
    assert_eq!(disk["file-a"], attr(REG, 0o664, 50001, Some(0)));
    assert_eq!(disk["dir-a"], attr(DIR, 0o2775, 50001, None));
    assert_eq!(disk["file-b"], attr(REG, 0o660, 50002, Some(0)));
    assert_eq!(disk["dir-b"], attr(DIR, 0o2770, 50002, None));
    // Asked for others' write, got read only.
    assert_eq!(disk["file-c"], attr(REG, 0o664, 50003, Some(0)));
    assert_eq!(disk["dir-c"], attr(DIR, 0o2775, 50003, None));
    finish(&h);
}

#[test]
fn chmod_cannot_take_group_access_away() {
    let h = Harness::new(Others::None);
    let a = caller(50001, GID);
    make_all(&h, "a", a, 0o022);
    let file = h.resolve(&["file-a"]).unwrap();
    let dir = h.resolve(&["dir-a"]).unwrap();
    let link = h.resolve(&["link-a"]).unwrap();
    let chmod = |id, mode| {
        let set = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        Attr::of_stat(&h.store.setattr(id, None, set).unwrap().st)
    };
    let file_modes = [(0o600, 0o660), (0o4755, 0o770), (0o1644, 0o660), (0o000, 0)];
    let dir_modes = [
        (0o700, 0o2770),
        (0o1777, 0o2770),
        (0o500, 0o2550),
        (0o777, 0o2770),
    ];
    let cases = [
        (file, "file-a", REG, file_modes),
        (dir, "dir-a", DIR, dir_modes),
    ];
    for (id, path, kind, modes) in cases {
        for (mode, want) in modes {
            let size = (kind == REG).then_some(0);
            let want = attr(kind, want, 50001, size);
            assert_eq!(chmod(id, mode), want, "chmod {mode:o} {path}");
            assert_eq!(h.on_disk()[path], want, "chmod {mode:o} {path}");
        }
    }
    // A symlink has no mode of its own to change.
    assert_eq!(chmod(link, 0o600), attr(LNK, 0o777, 50001, None));
    finish(&h);
}

#[test]
fn chgrp_to_another_group_is_refused_and_chown_keeps_the_mode() {
    let h = Harness::new(Others::None);
    make_all(&h, "a", caller(50001, GID), 0o022);
    let dir = h.resolve(&["dir-a"]).unwrap();
    let set = |uid, gid| SetAttr {
        uid,
        gid,
        ..SetAttr::default()
    };
    let s = &h.store;
    assert_eq!(
        s.setattr(dir, None, set(None, Some(0))).err(),
        Some(libc::EPERM)
    );
    let both = set(Some(50002), Some(GID + 1));
    assert_eq!(s.setattr(dir, None, both).err(), Some(libc::EPERM));
    assert_eq!(h.on_disk()["dir-a"], attr(DIR, 0o2770, 50001, None));
    s.setattr(dir, None, set(None, Some(GID))).unwrap();
    // chown clears setgid; the store puts the policy's mode back.
    s.setattr(dir, None, set(Some(50002), None)).unwrap();
    assert_eq!(h.on_disk()["dir-a"], attr(DIR, 0o2770, 50002, None));
    finish(&h);
}

#[test]
fn names_swapped_for_symlinks_are_never_followed() {
    let h = Harness::new(Others::None);
    let a = caller(50001, GID);
    let s = &h.store;
    let rdwr = libc::O_CREAT | libc::O_RDWR;
    let old_dir = h.hold(&s.mkdir(ROOT_ID, OsStr::new("d"), 0o777, 0o022, a).unwrap());
    let (e, fh) = s
        .create(ROOT_ID, OsStr::new("f"), 0o666, 0o022, rdwr, a)
        .unwrap();
    h.hold(&e);
    s.release(fh);
    let secret = h.outside().join("secret");
    fs::write(&secret, "secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    // A member renames symlinks to outside the store over both names (through the mount
    // they would be theirs and the group's).
    let store = h.store_dir();
    for (name, target) in [("d", h.outside()), ("f", secret.clone())] {
        fs::rename(store.join(name), store.join(format!("{name}.old"))).unwrap();
        symlink(&target, store.join(name)).unwrap();
        lchown(store.join(name), Some(50002), Some(GID)).unwrap();
    }

    // The directory's old node still reaches the directory, wherever it went.
    let (e, fh) = s
        .create(old_dir, OsStr::new("x"), 0o666, 0o022, rdwr, a)
        .unwrap();
    h.hold(&e);
    s.release(fh);
    assert!(store.join("d.old/x").exists());
    // Looked up again, the name is the symlink itself: nothing goes through it.
    let d = h.resolve(&["d"]).unwrap();
    let y = OsStr::new("y");
    assert_eq!(s.mkdir(d, y, 0o777, 0, a).err(), Some(libc::ENOTDIR));
    assert_eq!(s.mknod(d, y, REG | 0o666, 0, a).err(), Some(libc::ENOTDIR));
    assert_eq!(s.create(d, y, 0o666, 0, rdwr, a).err(), Some(libc::ENOTDIR));
    assert_eq!(s.symlink(d, y, y, a).err(), Some(libc::ENOTDIR));
    assert_eq!(
        s.lookup(d, OsStr::new("secret"), a).err(),
        Some(libc::ENOTDIR)
    );
    assert_eq!(s.opendir(d).err(), Some(libc::ENOTDIR));
    let readdir = s.readdir(d, NO_HANDLE, 0, true, a, |_| {
        panic!("listed through a symlink")
    });
    assert_eq!(readdir.err(), Some(libc::ENOTDIR));
    // A create that finds the file's symlink opens nothing and truncates nothing.
    let trunc = rdwr | libc::O_TRUNC;
    let found = s.create(ROOT_ID, OsStr::new("f"), 0o666, 0, trunc, a);
    assert_eq!(found.err(), Some(libc::ELOOP));
    let f = h.resolve(&["f"]).unwrap();
    assert_eq!(s.open(f, libc::O_RDWR).err(), Some(libc::ELOOP));
    let chmod = SetAttr {
        mode: Some(0o666),
        ..SetAttr::default()
    };
    s.setattr(f, None, chmod).unwrap();
    let truncate = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(s.setattr(f, None, truncate).err(), Some(libc::EINVAL));

    let outside: Vec<_> = fs::read_dir(h.outside())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["secret"]);
    assert_eq!(fs::read_to_string(&secret).unwrap(), "secret");
    assert_eq!(
        fs::metadata(&secret).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let outside_dir = fs::metadata(h.outside()).unwrap().permissions().mode();
    assert_eq!(outside_dir & 0o7777, 0o700);
    finish(&h);
}

#[test]
fn a_name_taken_by_someone_else_is_never_handed_over() {
    let h = Harness::new(Others::None);
    let (a, b, outsider) = (caller(50001, GID), caller(50002, GID), caller(50003, 50003));
    let s = &h.store;
    let flags = libc::O_CREAT | libc::O_RDWR;
    let (e, fh) = s
        .create(ROOT_ID, OsStr::new("f"), 0o600, 0o077, flags, b)
        .unwrap();
    let f = h.hold(&e);
    s.release(fh);
    let dir = h.hold(&s.mkdir(ROOT_ID, OsStr::new("d"), 0o700, 0o077, b).unwrap());
    let taken = OsStr::new("f");
    assert_eq!(
        s.mknod(ROOT_ID, taken, FIFO | 0o600, 0, a).err(),
        Some(libc::EEXIST)
    );
    assert_eq!(
        s.mkdir(ROOT_ID, taken, 0o777, 0, a).err(),
        Some(libc::EEXIST)
    );
    assert_eq!(
        s.symlink(ROOT_ID, taken, taken, a).err(),
        Some(libc::EEXIST)
    );
    let excl = flags | libc::O_EXCL;
    assert_eq!(
        s.create(ROOT_ID, taken, 0o666, 0, excl, a).err(),
        Some(libc::EEXIST)
    );
    assert_eq!(s.link(dir, ROOT_ID, taken, KERNEL).err(), Some(libc::EPERM));
    let (e, fh) = s.create(dir, OsStr::new("g"), 0o666, 0, flags, a).unwrap();
    let g = h.hold(&e);
    s.release(fh);
    assert_eq!(s.link(g, ROOT_ID, taken, KERNEL).err(), Some(libc::EEXIST));
    // Opening the existing file is checked as open(2) would: an outsider gets nothing.
    let open = s.create(ROOT_ID, taken, 0o666, 0, flags, outsider);
    assert_eq!(open.err(), Some(libc::EACCES));
    // A member gets the file as it is, not made anew.
    let (e, fh) = s.create(ROOT_ID, taken, 0o666, 0o022, flags, a).unwrap();
    assert_eq!(h.hold(&e), f);
    s.release(fh);
    assert_eq!(h.on_disk()["f"], attr(REG, 0o660, 50002, Some(0)));
    finish(&h);
}

#[test]
fn a_failed_hand_over_leaves_nothing_root_owned() {
    let h = Harness::new(Others::None);
    let policy = Policy {
        gid: GID,
        others: Others::None,
    };
    let path = std::ffi::CString::new(h.store_dir().into_os_string().into_encoded_bytes());
    let dir = sys::open_root(&path.unwrap()).unwrap();
    let dir = dir.as_fd();
    let name = Name::new(OsStr::new("made")).unwrap();
    let make: [(u32, &dyn Fn() -> sys::SysResult<()>); 3] = [
        (DIR, &|| sys::mkdir_at(dir, &name, 0o700)),
        (FIFO, &|| sys::mknod_at(dir, &name, FIFO | 0o600)),
        (LNK, &|| sys::symlink_at(c"target", dir, &name)),
    ];
    for (kind, make) in make {
        // The hand-over fails after the owner changed, as a chmod failing would.
        let made = claim::create(
            dir,
            &name,
            kind,
            make,
            |_, _| true,
            |h| {
                claim::give(h, &policy, Some(50001), Some(GID), Some(0o660))?;
                Err(libc::EIO)
            },
        );
        assert_eq!(
            made.err(),
            Some(CreateError::Sys(libc::EIO)),
            "kind {kind:o}"
        );
        assert!(h.on_disk().is_empty(), "kind {kind:o} left behind");
    }
    finish(&h);
}

#[test]
fn device_nodes_and_foreign_xattr_namespaces_are_refused() {
    let h = Harness::new(Others::None);
    let a = caller(50001, GID);
    let s = &h.store;
    for kind in [libc::S_IFCHR, libc::S_IFBLK, libc::S_IFSOCK] {
        let made = s.mknod(ROOT_ID, OsStr::new("dev"), kind | 0o666, 0, a);
        assert_eq!(made.err(), Some(libc::EPERM), "kind {kind:o}");
    }
    assert!(h.on_disk().is_empty());
    make_all(&h, "a", a, 0o022);
    let file = h.resolve(&["file-a"]).unwrap();
    for name in [
        "security.capability",
        "trusted.x",
        "system.posix_acl_access",
    ] {
        let set = s.setxattr(file, OsStr::new(name), b"x", 0);
        assert_eq!(set.err(), Some(libc::EPERM), "{name}");
    }
    s.setxattr(file, OsStr::new("user.x"), b"x", 0).unwrap();
    assert_eq!(s.getxattr(file, OsStr::new("user.x"), 8).unwrap(), b"x");
    finish(&h);
}
