//! `hfcachefs doctor` on real mounts, run as root and as real users: each planted fault is
//! reported with its fix, and the report is clean once the faults are fixed. Also
//! `fix-store` (dry run, changes, symlinks never followed).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs the binary as root with `HF_HOME` set (or unset with `None`).
fn hf_root(hf_home: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE");
    match hf_home {
        Some(h) => c.env("HF_HOME", h),
        None => c.env_remove("HF_HOME"),
    };
    run_timeout(c, Duration::from_secs(90))
}

/// Runs `hfcachefs doctor MNT` as `user` (login groups) with `HF_HOME=hf_home`.
fn doctor_as(user: &User, hf_home: &str, mnt: &Path) -> Output {
    sh_as(
        user,
        0o022,
        &format!("HF_HOME='{hf_home}' '{BIN}' doctor '{}'", mnt.display()),
    )
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn assert_healthy(o: &Output, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: expected healthy\n{}",
        out_str(o)
    );
    assert!(
        text(o).contains("healthy: no problems found"),
        "{what}\n{}",
        out_str(o)
    );
}

#[track_caller]
fn assert_finding(o: &Output, line: &str, fix: &str, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: expected findings\n{}",
        out_str(o)
    );
    let t = text(o);
    let at = t
        .find(line)
        .unwrap_or_else(|| panic!("{what}: no line {line:?}\n{t}"));
    let rest = &t[at..];
    let next = rest.find("\n[").unwrap_or(rest.len());
    assert!(
        rest[..next].contains(fix),
        "{what}: the fix for {line:?} does not say {fix:?}\n{t}"
    );
}

#[test]
fn doctor_reports_each_planted_fault_and_is_clean_after_fixes() {
    let m = Mount::new();
    let u = m.users;
    let mnt = m.mnt.display().to_string();
    let store = m.store.display().to_string();

    // A fresh mount is healthy, for root and for a member.
    assert_healthy(
        &hf_root(Some(&m.mnt), &["doctor", &mnt]),
        "root, fresh mount",
    );
    assert_healthy(&doctor_as(&u.a, &mnt, &m.mnt), "member A, fresh mount");

    // Fault: the user is not in the group.
    let o = doctor_as(&u.c, &mnt, &m.mnt);
    assert_finding(
        &o,
        "[FAIL] membership",
        &format!("usermod -aG {} {}", u.group, u.c.name),
        "outsider",
    );
    assert!(text(&o).contains("[FAIL] flock"), "{}", out_str(&o));
    // In the group database but not in this login session.
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &u.a.uid.to_string(),
        "--regid",
        &u.a.gid.to_string(),
        "--clear-groups",
        "--",
        BIN,
        "doctor",
        &mnt,
    ])
    .env("HF_HOME", &mnt);
    let o = run_timeout(c, OP_TIMEOUT);
    assert_finding(
        &o,
        "[FAIL] membership",
        "log in again",
        "member without the group in session",
    );

    // Fault: HF_HOME points elsewhere, or is missing.
    let o = doctor_as(&u.a, "/home/somebody/.cache/huggingface", &m.mnt);
    assert_finding(
        &o,
        "[FAIL] environment",
        &format!("export HF_HOME={mnt}"),
        "wrong HF_HOME",
    );
    let o = sh_as(
        &u.a,
        0o022,
        &format!("unset HF_HOME; '{BIN}' doctor '{mnt}'"),
    );
    assert_finding(
        &o,
        "[FAIL] environment",
        &format!("export HF_HOME={mnt}"),
        "no HF_HOME",
    );

    // Fault: a 0644 file made in the store behind the mount's back (root sees it).
    fs::create_dir_all(m.s("hub/.locks/models--o--m")).unwrap();
    write_file(&m.s("hub/.locks/models--o--m/x.lock"), b"").unwrap();
    fs::set_permissions(
        m.s("hub/.locks/models--o--m/x.lock"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    assert_finding(
        &o,
        "[FAIL] store policy",
        &format!("hfcachefs fix-store {store}"),
        "0644 file",
    );
    assert!(
        text(&o).contains("hub/.locks/models--o--m/x.lock"),
        "{}",
        out_str(&o)
    );

    // Fault: a download abandoned two days ago.
    sh_as_ok(
        &u.a,
        0o022,
        &format!(
            "mkdir -p '{mnt}/hub/models--o--m/blobs' && echo part > '{mnt}/hub/models--o--m/blobs/abc.incomplete' && touch -d '2 days ago' '{mnt}/hub/models--o--m/blobs/abc.incomplete'"
        ),
    );
    let o = doctor_as(&u.a, &mnt, &m.mnt);
    assert_finding(
        &o,
        "[WARN] temporary files",
        "abc.incomplete",
        "stale .incomplete (member)",
    );
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    assert_finding(
        &o,
        "[WARN] temporary files",
        "abc.incomplete",
        "stale .incomplete (root)",
    );

    // The fixes, as doctor gives them.
    let o = hf_root(None, &["fix-store", &store]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert!(text(&o).contains("x.lock: group 0 -> "), "{}", out_str(&o));
    assert_eq!(m.sst("hub/.locks/models--o--m/x.lock").perm(), 0o660);
    assert_eq!(m.sst("hub/.locks/models--o--m").perm(), 0o2770);
    sh_as_ok(
        &u.a,
        0o022,
        &format!("rm -f '{mnt}/hub/models--o--m/blobs/abc.incomplete'"),
    );
    run_ok(cmd("usermod", &["-a", "-G", &u.group, &u.c.name]));
    let fixed = doctor_as(&u.c, &mnt, &m.mnt);
    run_ok(cmd("gpasswd", &["-d", &u.c.name, &u.group]));
    assert_healthy(&fixed, "outsider once added to the group");
    assert_healthy(&doctor_as(&u.a, &mnt, &m.mnt), "member A after the fixes");
    assert_healthy(
        &hf_root(Some(&m.mnt), &["doctor", &mnt]),
        "root after the fixes",
    );
}

#[test]
fn doctor_reports_a_hung_or_missing_mount_without_hanging() {
    let m = Mount::new();
    let mnt = m.mnt.display().to_string();
    let pids = m.daemon_pids.clone();
    assert!(!pids.is_empty(), "daemon pid not found");
    for p in &pids {
        unsafe { libc::kill(*p, libc::SIGSTOP) };
    }
    let start = Instant::now();
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    let took = start.elapsed();
    for p in &pids {
        unsafe { libc::kill(*p, libc::SIGCONT) };
    }
    assert!(
        took < Duration::from_secs(30),
        "doctor took {took:?} on a hung mount"
    );
    assert_finding(&o, "[FAIL] answering", "umount -l", "stopped daemon");

    let empty = m.base.fresh("notmounted");
    fs::create_dir(&empty).unwrap();
    let o = hf_root(Some(&empty), &["doctor", &empty.display().to_string()]);
    assert_finding(
        &o,
        "[FAIL] mounted",
        "mount -t fuse.hfcachefs",
        "plain directory",
    );
    let o = hf_root(None, &["doctor", "a", "b"]);
    assert_eq!(o.status.code(), Some(2), "{}", out_str(&o));
}

#[test]
fn fix_store_follows_the_policy_without_following_symlinks() {
    let m = Mount::new();
    let u = m.users;
    let store = m.store.display().to_string();
    // Outside the store: must never change.
    let outside = m.base.fresh("outside");
    fs::create_dir(&outside).unwrap();
    write_file(&outside.join("secret"), b"root only").unwrap();
    fs::set_permissions(outside.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    let before_outside = snapshot(&outside, false);

    fs::create_dir_all(m.s("d/sub")).unwrap();
    fs::set_permissions(m.s("d"), fs::Permissions::from_mode(0o755)).unwrap();
    write_file(&m.s("d/f"), b"x").unwrap();
    lchown(&m.s("d/f"), u.a.uid, u.a.gid).unwrap();
    fs::set_permissions(m.s("d/f"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink(&outside, m.s("d/to_outside_dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), m.s("d/to_secret")).unwrap();
    fs::set_permissions(&m.store, fs::Permissions::from_mode(0o750)).unwrap();

    let before = snapshot(&m.store, false);
    let o = hf_root(None, &["fix-store", &store, "--dry-run"]);
    assert!(o.status.success(), "{}", out_str(&o));
    let t = text(&o);
    assert!(
        t.contains("would fix d/f:") && t.contains("mode 4755 -> 0770"),
        "{t}"
    );
    assert!(t.contains("would fix store root"), "{t}");
    assert_same_snapshot(&before, &snapshot(&m.store, false), "dry run");

    let o = hf_root(None, &["fix-store", &store]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert_eq!(m.sst("").perm(), 0o700, "store root made root-only");
    let g = u.gid;
    assert_store(&m, "d", 0, g, 0o2770);
    assert_store(&m, "d/sub", 0, g, 0o2770);
    assert_store(&m, "d/f", u.a.uid, g, 0o770);
    assert_eq!(
        m.sst("d/to_secret").gid,
        g,
        "the symlink itself gets the group"
    );
    assert!(m.sst("d/to_outside_dir").is_symlink());
    assert_same_snapshot(&before_outside, &snapshot(&outside, false), "fix-store");

    let o = hf_root(None, &["fix-store", &store]);
    assert!(
        text(&o).contains(", 0 fixed, 0 failed"),
        "second run: {}",
        out_str(&o)
    );
    let o = hf_root(None, &["fix-store"]);
    assert_eq!(o.status.code(), Some(2), "{}", out_str(&o));
}

#[test]
fn forged_daemon_command_lines_are_ignored() {
    // Anyone can start a process that looks like the daemon: `argv[0]` hfcachefs and a
    // mount command line naming the real mountpoint, with another group, others=read and a
    // log file to read. Started before the mount, it comes first in /proc.
    let base = Base::new();
    let u = users();
    let mnt = base.dir.join("mnt0");
    let script = base.dir.join("forged.sh");
    write_file(&script, b"while :; do sleep 1; done\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let forged = format!(
        "exec bash -c 'exec -a hfcachefs /bin/sh {} {}/. -o group={},others=read,logfile=/etc/shadow'",
        script.display(),
        mnt.display(),
        u.a.gid
    );
    let mut fake = ChildGuard::spawn(sh_as_cmd(&u.a, 0o022, &forged), "forged daemon");
    assert!(
        wait_until(Duration::from_secs(10), || {
            fs::read(format!("/proc/{}/cmdline", fake.pid()))
                .is_ok_and(|c| c.starts_with(b"hfcachefs\0"))
        }),
        "the forged process did not start"
    );
    let m = Mount::on_base(base.clone(), "");
    assert_eq!(m.mnt, mnt, "the mountpoint the forged process names");
    assert!(fake.running());
    let store = m.store.display().to_string();

    let o = hf_root(None, &["fix-store", &store, "--dry-run"]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert!(
        text(&o).contains(&format!("(group {}, others=none)", u.gid)),
        "fix-store took the forged process's options\n{}",
        out_str(&o)
    );
    let o = hf_root(Some(&m.mnt), &["doctor", &m.mnt.display().to_string()]);
    assert!(
        !text(&o).contains("/etc/shadow"),
        "doctor took the forged process's log file\n{}",
        out_str(&o)
    );
    assert_healthy(&o, "root, with a forged daemon process around");
}

#[test]
fn doctor_reports_many_stale_files_with_a_fix_through_the_mount() {
    let m = Mount::new();
    let mnt = m.mnt.display().to_string();
    // Enough abandoned downloads that their list overflows a pipe (64 KiB), and a directory
    // named like one, which is no download.
    let blobs = m.s("hub/models--o--m/blobs");
    fs::create_dir_all(&blobs).unwrap();
    let n = 1200;
    for i in 0..n {
        write_file(&blobs.join(format!("{i:0>100}.incomplete")), b"part").unwrap();
    }
    fs::create_dir(blobs.join("dir.incomplete")).unwrap();
    let o = sh(&format!(
        "cd '{}' && touch -d '2 days ago' *.incomplete",
        blobs.display()
    ));
    assert!(o.status.success(), "{}", out_str(&o));
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    let t = text(&o);
    assert!(
        t.contains(&format!("[WARN] temporary files: {n} older than a day")),
        "every stale file counted, the directory not\n{}",
        out_str(&o)
    );
    let first = format!("'{mnt}/hub/models--o--m/blobs/{:0>100}.incomplete'", 0);
    assert_finding(
        &o,
        "[WARN] temporary files",
        &format!("as a member of the group (not as root): rm -f -- {first}"),
        "stale files, root",
    );
    assert!(
        t.contains(&format!("(and {} more)", n - 10)),
        "{}",
        out_str(&o)
    );
    let fix = t
        .lines()
        .skip_while(|l| !l.starts_with("[WARN] temporary files"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        !fix.contains(&m.store.display().to_string()) && !fix.contains("rm -rf"),
        "no deletion by store path as root\n{t}"
    );
}

/// Runs the binary as root with at most 1024 open files, a common default.
fn hf_root_1024(args: &[&str]) -> Output {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .env_remove("HF_HOME");
    run_timeout(c, Duration::from_secs(90))
}

#[test]
fn deep_nesting_does_not_break_the_walks() {
    let m = Mount::new();
    let store = m.store.display().to_string();
    let mnt = m.mnt.display().to_string();
    // Members can nest directories through the mount as deep as they like: deeper than
    // the walks have descriptors for, one a level.
    let deep: std::path::PathBuf = std::iter::repeat_n("d", 1100).collect();
    fs::create_dir_all(m.s("nest").join(&deep)).unwrap();

    let o = hf_root_1024(&["fix-store", &store]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        text(&o).contains("entries checked") && err.contains("levels down were not descended"),
        "fix-store walks what it can and says what it left\n{}",
        out_str(&o)
    );
    assert_eq!(o.status.code(), Some(1), "not everything was checked");
    assert_store(&m, "nest/d/d", 0, m.users.gid, 0o2770);

    let o = hf_root_1024(&["stats", &store, "--json"]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("levels down were not descended"),
        "{}",
        out_str(&o)
    );

    let o = hf_root_1024(&["doctor", &mnt]);
    assert_finding(&o, "[WARN] nesting", "rm -r -- '", "deep nesting");
    assert!(
        !text(&o).contains("cannot read the cache"),
        "{}",
        out_str(&o)
    );
}

/// The lines of doctor's eviction section (from `eviction:` to the verdict).
fn eviction_section(t: &str) -> String {
    t.lines()
        .skip_while(|l| *l != "eviction:")
        .take_while(|l| !l.contains("problem(s) found") && !l.starts_with("healthy"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the store's `.hfcachefs/last-eviction` exists (the daemon's evictor writes it
/// shortly after mounting when it could not meet its goal).
fn wait_last_eviction(m: &Mount) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(l) = fs::read_to_string(m.s(".hfcachefs/last-eviction")) {
            return l;
        }
        assert!(Instant::now() < deadline, "no eviction recorded");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn doctor_shows_the_limit_the_pins_and_the_last_eviction_and_warns_over_the_limit() {
    let m = Mount::with_opts("max_size=1M");
    let mnt = m.mnt.display().to_string();
    // Pinned first, so that the daemon's evictor never may take it.
    let o = hf_root(None, &["pin", "o/big", &mnt]);
    assert_eq!(o.status.code(), Some(0), "{}", out_str(&o));
    // One revision of 2 MiB, as a download leaves it.
    let commit = "c".repeat(40);
    let r = m.s("hub/models--o--big");
    for d in ["blobs", "refs", &format!("snapshots/{commit}")] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    write_file(&r.join("blobs/e1"), &pattern(1, 2 << 20)).unwrap();
    std::os::unix::fs::symlink(
        "../../blobs/e1",
        r.join(format!("snapshots/{commit}/w.bin")),
    )
    .unwrap();
    write_file(&r.join("refs/main"), commit.as_bytes()).unwrap();
    let o = hf_root(None, &["fix-store", &m.store.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", out_str(&o));

    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    let t = text(&o);
    let section = eviction_section(&t);
    assert!(
        section.contains("  limit: max_size=1.0 MiB"),
        "the mount option\n{t}"
    );
    assert!(section.contains("  pinned: models--o--big"), "the pin\n{t}");
    assert_finding(
        &o,
        "[WARN] eviction: the store takes 2.0 MiB on disk",
        &format!("as root: hfcachefs gc {mnt} --max-size 1048576"),
        "over max_size",
    );
    assert!(t.contains("over its max_size=1.0 MiB"), "{t}");

    // gc cannot meet the goal: the only revision is pinned. Doctor shows the run and warns.
    let o = hf_root(None, &["gc", &mnt, "--max-size", "1M"]);
    assert_eq!(o.status.code(), Some(1), "{}", out_str(&o));
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    let t = text(&o);
    let section = eviction_section(&t);
    assert!(
        section.contains("max_size=1048576; removed 0 revision(s), freed 0 bytes; goal not met: 1 revision(s) that would have gone are kept"),
        "the last eviction\n{t}"
    );
    assert_finding(
        &o,
        "[WARN] eviction: the last eviction did not meet its goal",
        &format!("hfcachefs gc {mnt} --max-size 1048576 --dry-run"),
        "last eviction not met",
    );

    // A member sees the limit; the records are root's.
    let o = doctor_as(&m.users.a, &mnt, &m.mnt);
    let t = text(&o);
    let section = eviction_section(&t);
    assert!(section.contains("  limit: max_size=1.0 MiB"), "{t}");
    assert!(section.contains("  pinned: unknown"), "{t}");
    assert!(
        t.contains("[WARN] eviction: the store takes 2.0 MiB on disk"),
        "counted through the mount\n{t}"
    );

    // Unpinned, gc meets the goal; doctor is healthy again and shows that run.
    let o = hf_root(None, &["unpin", "o/big", &mnt]);
    assert_eq!(o.status.code(), Some(0), "{}", out_str(&o));
    let o = hf_root(None, &["gc", &mnt, "--max-size", "1M"]);
    assert_eq!(o.status.code(), Some(0), "{}", out_str(&o));
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    let t = text(&o);
    let section = eviction_section(&t);
    // (The daemon's evictor may have taken it first: then gc found nothing to do.)
    assert!(
        section.contains(" gc: max_size=1048576; removed ") && section.contains("; goal met"),
        "{t}"
    );
    assert!(fs::symlink_metadata(m.s("hub/models--o--big")).is_err());
    assert!(section.contains("  pinned: nothing"), "{t}");
    assert!(
        t.contains("[ OK ] eviction: within max_size=1.0 MiB"),
        "{t}"
    );
    assert_healthy(&o, "within the limit, the last eviction met its goal");
}

#[test]
fn doctor_warns_when_the_disk_is_under_min_free_and_the_daemon_could_not_help() {
    // An empty store cannot give the disk 99% free: the daemon's evictor records that.
    let m = Mount::with_opts("min_free=99");
    let mnt = m.mnt.display().to_string();
    let last = wait_last_eviction(&m);
    assert!(last.contains(" daemon: min_free=99%;"), "{last}");
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    let t = text(&o);
    let section = eviction_section(&t);
    assert!(section.contains("  limit: min_free=99%"), "{t}");
    assert!(
        section.contains("  last eviction: ") && section.contains("goal not met"),
        "{t}"
    );
    assert!(section.contains("  pinned: nothing"), "{t}");
    assert_finding(
        &o,
        "[WARN] eviction: ",
        "as root: hfcachefs gc",
        "under min_free",
    );
    assert!(t.contains("under its min_free=99%"), "{t}");
    assert!(
        t.contains("[WARN] eviction: the last eviction did not meet its goal"),
        "{t}"
    );
}

/// A store whose `.hfcachefs/` is not a directory of root's closed to others: the daemon
/// mounts without eviction and records no open files; doctor (as root) says so, with the
/// fix, and is clean once it is fixed.
#[test]
fn doctor_warns_when_the_stores_records_are_unusable() {
    let mut m = Mount::new();
    let mnt = m.mnt.display().to_string();
    let records = m.s(".hfcachefs");
    let r = records.display().to_string();
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    assert_healthy(&o, "fresh mount");
    assert!(
        text(&o).contains(&format!("[ OK ] eviction records: {r} is 0700 root")),
        "{}",
        out_str(&o)
    );

    // Opened to others, then remounted: the daemon warns and keeps no records.
    fs::set_permissions(&records, fs::Permissions::from_mode(0o755)).unwrap();
    m.unmount().unwrap();
    m.remount_same();
    let log = fs::read_to_string(&m.log).unwrap_or_default();
    assert!(
        log.contains("files open through this mount are not known to `hfcachefs gc`"),
        "the daemon warned\n{log}"
    );
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    assert_finding(
        &o,
        &format!("[WARN] eviction records: {r} is owned by uid 0 with mode 0755"),
        &format!("chown root:root {r} && chmod 0700 {r}, then remount {mnt}"),
        "records open to others",
    );
    assert!(
        text(&o).contains("gc will not know its open files"),
        "{}",
        out_str(&o)
    );

    // Gone (or never made), the same.
    fs::remove_dir_all(&records).unwrap();
    let o = hf_root(Some(&m.mnt), &["doctor", &mnt]);
    assert_finding(
        &o,
        &format!("[WARN] eviction records: {r} is missing"),
        &format!("mkdir -m 0700 {r}"),
        "records missing",
    );

    fs::create_dir(&records).unwrap();
    fs::set_permissions(&records, fs::Permissions::from_mode(0o700)).unwrap();
    m.unmount().unwrap();
    m.remount_same();
    assert_healthy(
        &hf_root(Some(&m.mnt), &["doctor", &mnt]),
        "fixed, remounted",
    );
}
