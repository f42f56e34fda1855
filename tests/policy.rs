//! Ownership and permission policy, exercised as real users (members A with umask 022 and B
//! with umask 077, outsider C) and checked on the store (the on-disk truth).

mod common;

use common::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

/// Mode the policy stores for a file created/chmod'ed with `mode` (others=none).
fn mirrored(mode: u32) -> u32 {
    let owner = mode & 0o700;
    owner | (owner >> 3)
}

fn create(p: PathBuf, mode: u32) -> std::io::Result<()> {
    open(&p, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, mode).map(drop)
}

// ------------------------------------------------------------------ creation

#[test]
fn files_created_by_members_get_caller_owner_group_and_mirrored_mode() {
    let m = Mount::new();
    let u = m.users;
    let modes = [
        0o666, 0o644, 0o640, 0o600, 0o755, 0o777, 0o700, 0o750, 0o444,
    ];
    for (user, umask) in [(&u.a, 0o022), (&u.b, 0o077)] {
        let mnt = m.mnt.clone();
        let name = user.name.clone();
        as_user(user, umask, move || {
            for mode in modes {
                create(mnt.join(format!("{name}-{mode:o}")), mode).ctx("create as member");
            }
        });
        for mode in modes {
            let rel = format!("{}-{mode:o}", user.name);
            // The umask (022 or 077) never touches owner bits, so the stored mode is the
            // requested owner bits mirrored to group, others cleared.
            assert_store(&m, &rel, user.uid, u.gid, mirrored(mode));
            let r = m.mst(&rel);
            assert_eq!(
                (r.uid, r.gid, r.perm()),
                (user.uid, u.gid, mirrored(mode)),
                "mnt/{rel} reported"
            );
        }
    }
}

#[test]
fn dirs_created_by_members_are_setgid_group_rwx() {
    let m = Mount::new();
    let u = m.users;
    for (user, umask) in [(&u.a, 0o022), (&u.b, 0o077)] {
        let mnt = m.mnt.clone();
        let name = user.name.clone();
        as_user(user, umask, move || {
            for mode in [0o777, 0o755, 0o750, 0o700] {
                mkdir(&mnt.join(format!("{name}-d{mode:o}")), mode).ctx("mkdir as member");
            }
            // nested (makedirs-style)
            fs::create_dir_all(mnt.join(format!("{name}-x/y/z"))).ctx("mkdir -p as member");
        });
        for mode in [0o777, 0o755, 0o750, 0o700] {
            assert_store(
                &m,
                &format!("{}-d{mode:o}", user.name),
                user.uid,
                u.gid,
                0o2770,
            );
        }
        for rel in ["x", "x/y", "x/y/z"] {
            assert_store(&m, &format!("{}-{rel}", user.name), user.uid, u.gid, 0o2770);
        }
    }
    // A's dir made with umask 022 is fully usable by B: create inside it.
    let mnt = m.mnt.clone();
    let a_name = u.a.name.clone();
    as_user(&u.b, 0o077, move || {
        fs::write(mnt.join(format!("{a_name}-d755/from-b")), b"b").ctx("B writes into A's dir");
        mkdir(&mnt.join(format!("{a_name}-d755/dir-b")), 0o700).ctx("B mkdir in A's dir");
    });
    assert_store(
        &m,
        &format!("{}-d755/from-b", u.a.name),
        u.b.uid,
        u.gid,
        0o660,
    );
    assert_store(
        &m,
        &format!("{}-d755/dir-b", u.a.name),
        u.b.uid,
        u.gid,
        0o2770,
    );
}

#[test]
fn symlinks_and_fifos_get_caller_owner_and_group() {
    let m = Mount::new();
    let u = m.users;
    for (user, umask) in [(&u.a, 0o022), (&u.b, 0o077)] {
        let mnt = m.mnt.clone();
        let name = user.name.clone();
        as_user(user, umask, move || {
            symlink("../../blobs/abc", &mnt.join(format!("{name}-link"))).ctx("symlink as member");
            mknod(&mnt.join(format!("{name}-fifo")), libc::S_IFIFO | 0o666, 0)
                .ctx("mkfifo as member");
            mknod(&mnt.join(format!("{name}-reg")), libc::S_IFREG | 0o644, 0)
                .ctx("mknod reg as member");
        });
        let l = m.sst(&format!("{}-link", user.name));
        assert!(l.is_symlink());
        assert_eq!(
            (l.uid, l.gid),
            (user.uid, u.gid),
            "symlink owner/group in store"
        );
        let r = m.mst(&format!("{}-link", user.name));
        assert_eq!(
            (r.uid, r.gid),
            (user.uid, u.gid),
            "symlink owner/group reported"
        );
        assert!(m.sst(&format!("{}-fifo", user.name)).is_fifo());
        assert_store(&m, &format!("{}-fifo", user.name), user.uid, u.gid, 0o660);
        assert_store(&m, &format!("{}-reg", user.name), user.uid, u.gid, 0o660);
    }
    // Device nodes are refused for members too (kernel or daemon).
    let mnt = m.mnt.clone();
    let r = as_user(&u.a, 0o022, move || {
        mknod(&mnt.join("dev"), libc::S_IFCHR | 0o666, libc::makedev(1, 3))
    });
    assert_errno(r, &[libc::EPERM], "mknod char device as member");
}

#[test]
fn root_creations_get_configured_group() {
    let m = Mount::new();
    let g = m.users.gid;
    let mnt = m.mnt.clone();
    as_root_umask(0o022, move || {
        create(mnt.join("f"), 0o644).unwrap();
        mkdir(&mnt.join("d"), 0o755).unwrap();
        symlink("f", &mnt.join("l")).unwrap();
    });
    assert_store(&m, "f", 0, g, 0o660);
    assert_store(&m, "d", 0, g, 0o2770);
    assert_eq!(m.sst("l").gid, g);
}

#[test]
fn hard_link_keeps_target_attributes() {
    let m = Mount::new();
    let u = m.users;
    let mnt = m.mnt.clone();
    as_user(&u.a, 0o022, move || create(mnt.join("f"), 0o644).unwrap());
    let mnt = m.mnt.clone();
    as_user(&u.b, 0o077, move || {
        link(&mnt.join("f"), &mnt.join("g")).ctx("B links A's file")
    });
    assert_store(&m, "g", u.a.uid, u.gid, 0o660);
    assert_eq!(m.sst("g").nlink, 2);
}

#[test]
fn setuid_setgid_never_stored_on_create() {
    let m = Mount::new();
    let u = m.users;
    let mnt = m.mnt.clone();
    as_user(&u.a, 0o022, move || {
        create(mnt.join("suid"), 0o4755).unwrap();
        create(mnt.join("sgid"), 0o2755).unwrap();
        create(mnt.join("both"), 0o6777).unwrap();
        mknod(&mnt.join("mknod-suid"), libc::S_IFREG | 0o4755, 0).unwrap();
    });
    for rel in ["suid", "sgid", "both", "mknod-suid"] {
        assert_store(&m, rel, u.a.uid, u.gid, 0o770);
    }
    let mnt = m.mnt.clone();
    as_root_umask(0, move || create(mnt.join("root-suid"), 0o6755).unwrap());
    assert_store(&m, "root-suid", 0, u.gid, 0o770);
}

// ------------------------------------------------------------------ chmod / chown / chgrp

#[test]
fn chmod_is_filtered() {
    let m = Mount::new();
    let u = m.users;
    let mnt = m.mnt.clone();
    let results = as_user(&u.a, 0o022, move || {
        create(mnt.join("f"), 0o644).unwrap();
        mkdir(&mnt.join("d"), 0o755).unwrap();
        let mut out = Vec::new();
        for mode in [0o600, 0o644, 0o4755, 0o2755, 0o700, 0o400, 0o000, 0o604] {
            chmod(&mnt.join("f"), mode).ctx("chmod file");
            out.push((mode, lst(&mnt.join("f")).unwrap().perm()));
        }
        for mode in [0o700, 0o755, 0o750] {
            chmod(&mnt.join("d"), mode).ctx("chmod dir");
            out.push((mode | 0o40000, lst(&mnt.join("d")).unwrap().perm()));
        }
        out
    });
    // What A saw through the mount right after each chmod.
    for (mode, seen) in &results {
        let want = if mode & 0o40000 != 0 {
            0o2770
        } else {
            mirrored(*mode)
        };
        assert_eq!(
            format!("{seen:o}"),
            format!("{want:o}"),
            "chmod {:o}: mode reported to the caller",
            mode & 0o7777
        );
    }
    assert_store(&m, "f", u.a.uid, u.gid, mirrored(0o604));
    assert_store(&m, "d", u.a.uid, u.gid, 0o2770);

    // Step by step against the store.
    for (mode, want) in [
        (0o600, 0o660),
        (0o4755, 0o770),
        (0o2755, 0o770),
        (0o644, 0o660),
    ] {
        let p = m.p("f");
        as_user(&u.a, 0o022, move || chmod(&p, mode).unwrap());
        assert_store(&m, "f", u.a.uid, u.gid, want);
    }
    // root's chmod is filtered the same way
    chmod(&m.p("f"), 0o4777).unwrap();
    assert_store(&m, "f", u.a.uid, u.gid, 0o770);
    // A non-owner member cannot chmod (kernel rule).
    let p = m.p("f");
    assert_errno(
        as_user(&u.b, 0o077, move || chmod(&p, 0o600)),
        &[libc::EPERM],
        "B chmods A's file",
    );
}

#[test]
fn chgrp_to_another_group_refused() {
    let m = Mount::new();
    let u = m.users;
    let mnt = m.mnt.clone();
    as_user(&u.a, 0o022, move || {
        create(mnt.join("f"), 0o644).unwrap();
        mkdir(&mnt.join("d"), 0o755).unwrap();
    });
    for rel in ["f", "d"] {
        let p = m.p(rel);
        let a_gid = u.a.gid;
        // A is a member of its own primary group, so the kernel allows the chgrp: hfcachefs must refuse.
        let r = as_user(&u.a, 0o022, move || lchown(&p, u32::MAX, a_gid));
        assert_errno(
            r,
            &[libc::EPERM],
            &format!("member chgrp {rel} to own primary group"),
        );
        assert_eq!(
            m.sst(rel).gid,
            u.gid,
            "store group unchanged after refused chgrp"
        );
        // chgrp to the configured group itself is fine (no-op)
        let p = m.p(rel);
        let g = u.gid;
        as_user(&u.a, 0o022, move || lchown(&p, u32::MAX, g)).ctx("chgrp to the configured group");
        // root cannot chgrp either
        assert_errno(
            lchown(&m.p(rel), u32::MAX, 0),
            &[libc::EPERM],
            &format!("root chgrp {rel} to root"),
        );
        assert_eq!(m.sst(rel).gid, u.gid);
    }
    // chown uid: members cannot (kernel), root can; a chown that also changes the group is refused whole.
    let p = m.p("f");
    let b_uid = u.b.uid;
    assert_errno(
        as_user(&u.a, 0o022, move || lchown(&p, b_uid, u32::MAX)),
        &[libc::EPERM],
        "member chown to B",
    );
    assert_eq!(m.sst("f").uid, u.a.uid);
    assert_errno(
        lchown(&m.p("f"), u.b.uid, 0),
        &[libc::EPERM],
        "root chown B:root",
    );
    assert_store(&m, "f", u.a.uid, u.gid, 0o660);
    lchown(&m.p("f"), u.b.uid, u32::MAX).ctx("root chown to B");
    assert_store(&m, "f", u.b.uid, u.gid, 0o660);
    // symlinks: lchown by root
    symlink("f", &m.p("l")).unwrap();
    lchown(&m.p("l"), u.a.uid, u32::MAX).ctx("root lchown symlink");
    let l = m.sst("l");
    assert_eq!((l.uid, l.gid), (u.a.uid, u.gid));
    assert_eq!(m.sst("f").uid, u.b.uid, "lchown must not follow");
}

#[test]
fn non_owner_member_can_touch_but_not_set_times() {
    let m = Mount::new();
    let u = m.users;
    let p = m.p("f");
    as_user(&u.a, 0o022, move || create(p, 0o644).unwrap());
    let p = m.p("f");
    let (now, explicit) = as_user(&u.b, 0o077, move || {
        (
            utimensat(
                libc::AT_FDCWD,
                &p,
                ts(0, libc::UTIME_NOW),
                ts(0, libc::UTIME_NOW),
                0,
            ),
            utimensat(libc::AT_FDCWD, &p, ts(1, 0), ts(2, 0), 0),
        )
    });
    now.ctx("member touches a group-writable file (UTIME_NOW)");
    assert_errno(
        explicit,
        &[libc::EPERM],
        "member sets explicit times on another user's file",
    );
}

// ------------------------------------------------------------------ outsiders

#[test]
fn outsider_refused_with_others_none() {
    let m = Mount::new();
    let u = m.users;
    let mnt = m.mnt.clone();
    as_user(&u.a, 0o022, move || {
        mkdir(&mnt.join("d"), 0o755).unwrap();
        fs::write(mnt.join("d/f"), b"secret weights").unwrap();
        fs::write(mnt.join("top"), b"top").unwrap();
    });
    // Even if root tries to open things up, others get nothing.
    chmod(&m.mnt, 0o777).ctx("root chmod mount root");
    chmod(&m.p("d"), 0o777).ctx("root chmod d");
    chmod(&m.p("top"), 0o666).ctx("root chmod top");
    assert_eq!(m.mst("").perm() & 0o007, 0, "mount root others bits");
    assert_eq!(m.mst("d").perm() & 0o007, 0, "d others bits");
    assert_eq!(m.sst("top").perm() & 0o007, 0, "top others bits in store");

    let mnt = m.mnt.clone();
    let r = as_user(&u.c, 0o022, move || {
        vec![
            ("readdir root", names(&mnt).map(drop)),
            ("readdir d", names(&mnt.join("d")).map(drop)),
            ("stat d/f", lst(&mnt.join("d/f")).map(drop)),
            ("read d/f", fs::read(mnt.join("d/f")).map(drop)),
            ("read top", fs::read(mnt.join("top")).map(drop)),
            ("create", create(mnt.join("new"), 0o644)),
            ("mkdir", mkdir(&mnt.join("newdir"), 0o755)),
            ("create in d", create(mnt.join("d/new"), 0o644)),
            ("unlink", unlink(&mnt.join("top"))),
        ]
    });
    for (what, res) in r {
        assert_errno(
            res,
            &[libc::EACCES],
            &format!("outsider {what} (others=none)"),
        );
    }
    assert!(
        lst(&m.s("new")).is_err() && lst(&m.s("d/new")).is_err() && lst(&m.s("newdir")).is_err()
    );
    assert!(lst(&m.s("top")).is_ok());
}

#[test]
fn outsider_read_only_with_others_read() {
    let m = Mount::others_read();
    let u = m.users;
    chmod(&m.mnt, 0o755).ctx("root chmod mount root");
    let mnt = m.mnt.clone();
    as_user(&u.a, 0o022, move || {
        mkdir(&mnt.join("d"), 0o777).unwrap();
        fs::write(mnt.join("d/f"), b"public weights").unwrap();
        create(mnt.join("d/x"), 0o777).unwrap();
    });
    assert_store(&m, "d", u.a.uid, u.gid, 0o2775);
    assert_store(&m, "d/f", u.a.uid, u.gid, 0o664);
    assert_store(&m, "d/x", u.a.uid, u.gid, 0o775);
    // chmod cannot give others write
    let p = m.p("d/f");
    as_user(&u.a, 0o022, move || chmod(&p, 0o666).unwrap());
    assert_eq!(m.sst("d/f").perm() & 0o002, 0, "others never get write");
    let p = m.p("d/x");
    as_user(&u.a, 0o022, move || chmod(&p, 0o777).unwrap());
    assert_store(&m, "d/x", u.a.uid, u.gid, 0o775);

    let mnt = m.mnt.clone();
    let (listing, content, refused) = as_user(&u.c, 0o022, move || {
        let listing = names(&mnt.join("d"));
        let content = fs::read(mnt.join("d/f"));
        let refused = vec![
            ("create in root", create(mnt.join("new"), 0o644)),
            ("create in d", create(mnt.join("d/new"), 0o644)),
            ("mkdir in d", mkdir(&mnt.join("d/newdir"), 0o755)),
            (
                "open d/f for write",
                open(&mnt.join("d/f"), libc::O_WRONLY, 0).map(drop),
            ),
            (
                "open d/f O_RDWR",
                open(&mnt.join("d/f"), libc::O_RDWR, 0).map(drop),
            ),
            ("truncate d/f", truncate(&mnt.join("d/f"), 0)),
            ("unlink d/f", unlink(&mnt.join("d/f"))),
            ("rename d/f", rename(&mnt.join("d/f"), &mnt.join("d/g"))),
        ];
        (listing, content, refused)
    });
    assert_eq!(
        listing.ctx("outsider lists d (others=read)"),
        vec!["f", "x"]
    );
    assert_eq!(
        content.ctx("outsider reads d/f (others=read)"),
        b"public weights"
    );
    for (what, res) in refused {
        assert_errno(
            res,
            &[libc::EACCES],
            &format!("outsider {what} (others=read)"),
        );
    }
    let p = m.p("d/f");
    assert_errno(
        as_user(&u.c, 0o022, move || chmod(&p, 0o777)),
        &[libc::EPERM],
        "outsider chmod",
    );
    assert_eq!(fs::read(m.s("d/f")).unwrap(), b"public weights");
}

// ------------------------------------------------------------------ cross-user

#[test]
fn cross_user_write_rename_delete() {
    let m = Mount::new();
    let u = m.users;
    let mnt = m.mnt.clone();
    as_user(&u.a, 0o022, move || {
        fs::create_dir_all(mnt.join("d/sub")).unwrap();
        fs::write(mnt.join("d/f1"), b"one").unwrap();
        fs::write(mnt.join("d/f2"), b"two").unwrap();
        fs::write(mnt.join("d/sub/x"), b"x").unwrap();
        mkdir(&mnt.join("other"), 0o700).unwrap();
    });
    let mnt = m.mnt.clone();
    as_user(&u.b, 0o077, move || {
        // write into A's file (A used umask 022)
        let fd = open(&mnt.join("d/f2"), libc::O_WRONLY | libc::O_APPEND, 0)
            .ctx("B opens A's file for writing");
        write_fd(fd.as_raw_fd(), b"+b").unwrap();
        drop(fd);
        assert_eq!(fs::read(mnt.join("d/sub/x")).ctx("B reads A's file"), b"x");
        unlink(&mnt.join("d/f1")).ctx("B deletes A's file");
        rename(&mnt.join("d/f2"), &mnt.join("d/f2b")).ctx("B renames A's file");
        rename(&mnt.join("d/sub"), &mnt.join("d/sub2")).ctx("B renames A's dir");
        rename(&mnt.join("d/sub2"), &mnt.join("other/sub3")).ctx("B moves A's dir to another dir");
        rename(&mnt.join("d"), &mnt.join("d-renamed")).ctx("B renames A's top dir");
        truncate(&mnt.join("d-renamed/f2b"), 1).ctx("B truncates A's file");
    });
    assert_eq!(fs::read(m.s("d-renamed/f2b")).unwrap(), b"t");
    assert!(m.sst("other/sub3").is_dir());
    assert_store(&m, "other/sub3", u.a.uid, u.gid, 0o2770);
    let mnt = m.mnt.clone();
    as_user(&u.b, 0o077, move || {
        fs::remove_dir_all(mnt.join("other")).ctx("B removes A's tree");
        fs::remove_dir_all(mnt.join("d-renamed")).ctx("B removes A's renamed dir");
    });
    assert_eq!(cache_names(&m.store).unwrap(), Vec::<String>::new());
}

// ------------------------------------------------------------------ pre-existing store entries

#[test]
fn preexisting_store_entries_are_usable_by_members() {
    let m = Mount::new();
    let u = m.users;
    // Created directly in the store (an old /huggingface made with umask 022 by A, group root).
    let mkd = |rel: &str| {
        fs::create_dir_all(m.s(rel)).unwrap();
        chmod(&m.s(rel), 0o755).unwrap();
        lchown(&m.s(rel), u.a.uid, 0).unwrap();
    };
    let mkf = |rel: &str, data: &[u8]| {
        fs::write(m.s(rel), data).unwrap();
        chmod(&m.s(rel), 0o644).unwrap();
        lchown(&m.s(rel), u.a.uid, 0).unwrap();
    };
    mkd("hub");
    mkd("hub/.locks");
    mkd("hub/.locks/models--org--m");
    mkd("hub/models--org--m");
    mkd("hub/models--org--m/blobs");
    mkf("hub/.locks/models--org--m/abc.lock", b"");
    mkf("hub/models--org--m/blobs/abc", b"legacy blob");
    mkf("hub/version.txt", b"1");

    // Reported with the configured group and owner bits mirrored to group.
    for (rel, dir) in [
        ("hub", true),
        ("hub/.locks/models--org--m", true),
        ("hub/.locks/models--org--m/abc.lock", false),
        ("hub/models--org--m/blobs/abc", false),
    ] {
        let r = m.mst(rel);
        assert_eq!(r.uid, u.a.uid, "{rel} owner");
        assert_eq!(r.gid, u.gid, "{rel} reported group");
        let want = if dir { 0o770 } else { 0o660 };
        assert_eq!(
            format!("{:o}", r.perm() & 0o777),
            format!("{want:o}"),
            "{rel} reported mode"
        );
    }

    let mnt = m.mnt.clone();
    let stored_uid = as_user(&u.b, 0o077, move || {
        let lock = mnt.join("hub/.locks/models--org--m/abc.lock");
        let fd = open(&lock, libc::O_RDWR | libc::O_CREAT, 0o644)
            .ctx("B opens A's 0644 lock file O_RDWR");
        flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).ctx("B flocks it");
        let blob = mnt.join("hub/models--org--m/blobs/abc");
        let fd2 = open(&blob, libc::O_RDWR, 0).ctx("B opens A's 0644 blob O_RDWR");
        pwrite_fd(fd2.as_raw_fd(), b"L", 0).unwrap();
        fs::write(mnt.join("hub/models--org--m/blobs/new.incomplete"), b"new")
            .ctx("B creates in A's 0755 dir");
        fs::create_dir_all(mnt.join("hub/models--org--m/snapshots/c1"))
            .ctx("B makedirs in A's 0755 dir");
        rename(
            &mnt.join("hub/models--org--m/blobs/new.incomplete"),
            &mnt.join("hub/models--org--m/blobs/new"),
        )
        .ctx("B renames in A's dir");
        unlink(&mnt.join("hub/version.txt")).ctx("B deletes A's file in A's 0755 dir");
        flock(fd.as_raw_fd(), libc::LOCK_UN).unwrap();
        lst(&mnt.join("hub/models--org--m/blobs/new")).unwrap().uid
    });
    assert_eq!(stored_uid, u.b.uid);
    assert_store(&m, "hub/models--org--m/blobs/new", u.b.uid, u.gid, 0o660);
    assert_store(
        &m,
        "hub/models--org--m/snapshots/c1",
        u.b.uid,
        u.gid,
        0o2770,
    );
    assert_eq!(
        fs::read(m.s("hub/models--org--m/blobs/abc")).unwrap(),
        b"Legacy blob"
    );
    // Outsiders still get nothing.
    let p = m.p("hub/models--org--m/blobs/abc");
    assert_errno(
        as_user(&u.c, 0o022, move || fs::read(p)),
        &[libc::EACCES],
        "outsider reads pre-existing file",
    );
}

#[test]
fn lock_file_forced_to_0644_by_umask022_user_is_usable_by_other_member() {
    // What filelock 3.10-3.23 does: create the lock file, then chmod it 0644.
    let m = Mount::new();
    let u = m.users;
    let dir = m.p("hub/.locks/models--mistralai--Mistral-7B-v0.1");
    let lock = dir.join("9742cb4764964155b7a5f35eefad651f590006091ddeb536863d6c5865cca1b9.lock");
    let (d, l) = (dir.display().to_string(), lock.display().to_string());
    sh_as_ok(
        &u.a,
        0o022,
        &format!("mkdir -p '{d}' && touch '{l}' && chmod 644 '{l}'"),
    );
    let rel = "hub/.locks/models--mistralai--Mistral-7B-v0.1/9742cb4764964155b7a5f35eefad651f590006091ddeb536863d6c5865cca1b9.lock";
    assert_store(&m, rel, u.a.uid, u.gid, 0o660);
    assert_store(
        &m,
        "hub/.locks/models--mistralai--Mistral-7B-v0.1",
        u.a.uid,
        u.gid,
        0o2770,
    );
    assert_store(&m, "hub/.locks", u.a.uid, u.gid, 0o2770);

    // B (a different umask) opens it O_RDWR and takes the lock.
    let out = sh_as_ok(
        &u.b,
        0o077,
        &format!("exec 3<>'{l}' && flock -x -n 3 && echo locked"),
    );
    assert_eq!(out.trim(), "locked");
    let out = sh_as_ok(
        &u.b,
        0o022,
        &format!("exec 3<>'{l}' && flock -x -n 3 && echo locked"),
    );
    assert_eq!(out.trim(), "locked");

    // While B holds it, A gets "would block" (not EACCES); after B lets go, A gets it.
    let lp = lock.clone();
    let fd = as_user(&u.b, 0o077, move || {
        let fd = open(&lp, libc::O_RDWR | libc::O_CREAT, 0o644).ctx("B open O_RDWR");
        flock(fd.as_raw_fd(), libc::LOCK_EX).ctx("B LOCK_EX");
        fd
    });
    let o = sh_as(
        &u.a,
        0o022,
        &format!("exec 3<>'{l}' || exit 9; flock -x -n 3; echo rc=$?"),
    );
    let text = out_str(&o);
    assert!(
        o.status.success() && text.contains("rc=1"),
        "A while B holds the lock: {text}"
    );
    assert!(!text.contains("ermission denied"), "{text}");
    drop(fd);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let o = sh_as(
                &u.a,
                0o022,
                &format!("exec 3<>'{l}' && flock -x -n 3 && echo locked"),
            );
            String::from_utf8_lossy(&o.stdout).trim() == "locked"
        }),
        "A could not take the lock after B closed it"
    );
    // filelock >= 3.24 style (0664 requested, umask 022 -> 0644) by B, then A.
    let l2 = dir.join("other.lock").display().to_string();
    sh_as_ok(&u.b, 0o022, &format!("touch '{l2}' && chmod 664 '{l2}'"));
    let out = sh_as_ok(
        &u.a,
        0o077,
        &format!("exec 3<>'{l2}' && flock -x -n 3 && echo locked"),
    );
    assert_eq!(out.trim(), "locked");
}
