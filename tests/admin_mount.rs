//! mount(8), fstab and `scripts/install.sh` with the installed binary, on real mounts:
//! each way of mounting serves files, shows in `findmnt` as `fuse.hfcachefs` with the store
//! as source, and unmounts with `umount`; install and uninstall run twice cleanly.
//!
//! mount.fuse finds the program on mount's own PATH, so these tests install the freshly
//! built binary as /usr/local/bin/hfcachefs. They run one at a time (they share it).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const INSTALLED: &str = "/usr/local/bin/hfcachefs";

/// One test at a time, with the fresh binary installed.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    install_binary();
    guard
}

fn install_binary() {
    if fs::read(INSTALLED).ok() == fs::read(BIN).ok() {
        return;
    }
    let tmp = format!("{INSTALLED}.test-{}", std::process::id());
    fs::copy(BIN, &tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, INSTALLED).unwrap();
}

/// Unmounts `path` when dropped, if it is still mounted (a failed test leaves no mount).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn findmnt(mnt: &Path) -> (String, String, String) {
    let out = run_ok(cmd(
        "findmnt",
        &[
            "-n",
            "-M",
            mnt.to_str().unwrap(),
            "-o",
            "FSTYPE,SOURCE,OPTIONS",
        ],
    ));
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.len(), 3, "findmnt {}: {out:?}", mnt.display());
    (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
}

/// The mount at `mnt` is hfcachefs over `store`, serves files (written through the mount
/// as root, found in the store), and `umount` ends it.
#[track_caller]
fn check_and_umount(mnt: &Path, store: &Path) {
    let (fstype, source, options) = findmnt(mnt);
    assert_eq!(fstype, "fuse.hfcachefs", "{}", mnt.display());
    assert_eq!(source, store.display().to_string(), "{}", mnt.display());
    assert!(
        options.contains("nodev") && options.contains("nosuid"),
        "{options}"
    );
    let name = format!("hfadm-probe-{:x}", random_u64());
    write_file(&mnt.join(&name), b"served").unwrap();
    assert_eq!(fs::read(mnt.join(&name)).unwrap(), b"served");
    assert_eq!(
        fs::read(store.join(&name)).unwrap(),
        b"served",
        "not in the store"
    );
    fs::remove_file(mnt.join(&name)).unwrap();
    run_ok(cmd("umount", &[mnt.to_str().unwrap()]));
    assert!(
        !is_mounted(mnt),
        "{} still mounted after umount",
        mnt.display()
    );
}

fn mountpoint(base: &Base, stem: &str) -> (PathBuf, Unmount) {
    let mnt = base.fresh(stem);
    fs::create_dir(&mnt).unwrap();
    (mnt.clone(), Unmount(mnt))
}

/// A second root-only store beside the base's own.
fn second_store(base: &Base) -> PathBuf {
    let s = base.store.with_file_name("store2");
    fs::create_dir(&s).unwrap();
    fs::set_permissions(&s, fs::Permissions::from_mode(0o700)).unwrap();
    s
}

#[test]
fn mount_t_fuse_uses_the_default_store_and_group() {
    let _x = exclusive();
    let base = Base::new();
    let created_group = Command::new("getent")
        .args(["group", "hf-users"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true);
    if created_group {
        run_ok(cmd("groupadd", &["hf-users"]));
    }
    let (mnt, _u) = mountpoint(&base, "mnt-default");
    run_ok(cmd(
        "mount",
        &["-t", "fuse", "hfcachefs", mnt.to_str().unwrap()],
    ));
    check_and_umount(&mnt, Path::new("/var/lib/hfcachefs/store"));
    if created_group {
        run_ok(cmd("groupdel", &["hf-users"]));
    }
}

#[test]
fn mount_t_fuse_hfcachefs_with_store_and_options() {
    let _x = exclusive();
    let base = Base::new();
    let u = users();
    let (mnt, _u) = mountpoint(&base, "mnt-typed");
    run_ok(cmd(
        "mount",
        &[
            "-t",
            "fuse.hfcachefs",
            base.store.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "-o",
            &format!("group={},nodev,nosuid", u.group),
        ],
    ));
    // A member's file gets the group, through the daemon mount(8) started.
    sh_as_ok(&u.a, 0o022, &format!("echo hi > '{}/a.txt'", mnt.display()));
    let st = lst(&base.store.join("a.txt")).unwrap();
    assert_eq!((st.uid, st.gid, st.perm()), (u.a.uid, u.gid, 0o660));
    fs::remove_file(base.store.join("a.txt")).unwrap();
    check_and_umount(&mnt, &base.store);
}

#[test]
fn fstab_lines_in_both_syntaxes_by_mount_a_and_by_mountpoint() {
    let _x = exclusive();
    let base = Base::new();
    let u = users();
    let store2 = second_store(&base);
    let (m1, _u1) = mountpoint(&base, "mnt-fstab-typed");
    let (m2, _u2) = mountpoint(&base, "mnt-fstab-hash");
    let fstab = base.fresh("fstab");
    let s1 = base.store.display();
    write_file(
        &fstab,
        format!(
            "# test fstab\n\
             {s1} {} fuse.hfcachefs group={g},nodev,nosuid,nofail,x-systemd.requires-mounts-for={s1} 0 0\n\
             hfcachefs#{} {} fuse group={g},nodev,nosuid,nofail 0 0\n",
            m1.display(),
            store2.display(),
            m2.display(),
            g = u.group
        )
        .as_bytes(),
    )
    .unwrap();
    let t = fstab.to_str().unwrap();
    run_ok(cmd("mount", &["-a", "-T", t]));
    check_and_umount(&m1, &base.store);
    check_and_umount(&m2, &store2);
    run_ok(cmd("mount", &["-T", t, m1.to_str().unwrap()]));
    run_ok(cmd("mount", &["-T", t, m2.to_str().unwrap()]));
    check_and_umount(&m1, &base.store);
    check_and_umount(&m2, &store2);
}

/// A file's content checksum and mtime (nanoseconds), if it exists.
type FileState = (PathBuf, Option<(u64, u64)>, Option<i64>);

/// Every file the install touches, for comparing runs.
fn state(paths: &[&Path]) -> Vec<FileState> {
    let mut v = Vec::new();
    for p in paths {
        let data = fs::read(p).ok().map(|d| checksum(&d));
        let mtime = lst(p).ok().map(|s| s.mtime.0 * 1_000_000_000 + s.mtime.1);
        v.push((p.to_path_buf(), data, mtime));
    }
    v
}

fn backups(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = names(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.contains("hfcachefs-backup"))
        .collect();
    v.sort();
    v
}

#[test]
fn install_and_uninstall_each_run_twice_cleanly() {
    let _x = exclusive();
    let base = Base::new();
    let u = users();
    let etc = base.fresh("etc");
    fs::create_dir(&etc).unwrap();
    let (fstab, profile) = (etc.join("fstab"), etc.join("hfcachefs.sh"));
    let original = "# <file system> <mount point> <type> <options> <dump> <pass>\n";
    write_file(&fstab, original.as_bytes()).unwrap();
    let store = base.store.with_file_name("installed-store");
    let mnt = base.fresh("mnt-installed");
    let _u = Unmount(mnt.clone());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh");
    let run = |extra: &[&str]| {
        let mut c = Command::new("bash");
        c.arg(script).args([
            "--group",
            &u.group,
            "--store",
            store.to_str().unwrap(),
            "--mountpoint",
            mnt.to_str().unwrap(),
            "--fstab",
            fstab.to_str().unwrap(),
            "--profile",
            profile.to_str().unwrap(),
        ]);
        c.args(extra).env("HFCACHEFS_BIN", BIN);
        let o = run_timeout(c, Duration::from_secs(120));
        assert!(o.status.success(), "install.sh {extra:?}\n{}", out_str(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };

    let first = run(&[]);
    assert!(first.contains("created store"), "{first}");
    let (fstype, source, _) = findmnt(&mnt);
    assert_eq!(
        (fstype.as_str(), source.as_str()),
        ("fuse.hfcachefs", store.to_str().unwrap())
    );
    let tab = fs::read_to_string(&fstab).unwrap();
    let line = format!(
        "{} {} fuse.hfcachefs group={},nodev,nosuid,nofail,x-systemd.requires-mounts-for={} 0 0",
        store.display(),
        mnt.display(),
        u.group,
        store.display()
    );
    assert!(
        tab.starts_with(original) && tab.lines().any(|l| l == line),
        "{tab}"
    );
    assert_eq!(backups(&etc).len(), 1, "one backup of the old fstab");
    assert_eq!(
        fs::read_to_string(etc.join(&backups(&etc)[0])).unwrap(),
        original
    );
    // Members get HF_HOME from the profile; others do not.
    let show = format!(". '{}'; echo \"[$HF_HOME]\"", profile.display());
    assert_eq!(
        sh_as_ok(&u.a, 0o022, &show).trim(),
        format!("[{}]", mnt.display())
    );
    assert_eq!(sh_as_ok(&u.c, 0o022, &show).trim(), "[]");
    sh_as_ok(
        &u.a,
        0o022,
        &format!("echo kept > '{}/data'", mnt.display()),
    );

    let files: [&Path; 3] = [&fstab, &profile, Path::new("/usr/local/bin/hfcachefs")];
    let before = state(&files);
    let second = run(&[]);
    assert!(second.contains("already mounted"), "{second}");
    assert!(
        !second.contains("updated") && !second.contains("installed /"),
        "{second}"
    );
    assert_eq!(state(&files), before, "a second install changed something");
    assert_eq!(backups(&etc).len(), 1);
    assert_eq!(
        mountinfo().iter().filter(|e| e.mountpoint == mnt).count(),
        1
    );

    let out = run(&["--uninstall"]);
    assert!(!is_mounted(&mnt), "{out}");
    assert_eq!(fs::read_to_string(&fstab).unwrap(), original, "{out}");
    assert!(!profile.exists(), "{out}");
    assert_eq!(
        fs::read(store.join("data")).unwrap(),
        b"kept\n",
        "the store's data is kept"
    );
    // The binary goes unless other hfcachefs mounts or fstab lines still use it.
    let others = mountinfo().iter().any(|e| e.fstype == "fuse.hfcachefs");
    assert_eq!(Path::new(INSTALLED).exists(), others, "{out}");
    let backups_after = backups(&etc);
    let before = state(&files);
    let again = run(&["--uninstall"]);
    assert_eq!(
        state(&files),
        before,
        "a second uninstall changed something\n{again}"
    );
    assert_eq!(backups(&etc), backups_after);
    install_binary();
}
