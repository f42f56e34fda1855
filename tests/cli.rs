//! The command line as mount(8) and users see it: error reporting, daemon lifecycle,
//! mountinfo, foreground mode.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn run_bin(args: &[&str]) -> std::process::Output {
    require_env();
    let mut c = Command::new(BIN);
    c.args(args);
    run_timeout(c, Duration::from_secs(20))
}

#[track_caller]
fn assert_usage_error(args: &[&str], mnt: &Path, mention: &str) {
    let o = run_bin(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(2),
        "hfcachefs {args:?}: want exit 2\n{}",
        out_str(&o)
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "hfcachefs {args:?}: want a one-line error, got:\n{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains(&mention.to_lowercase()),
        "error should mention {mention:?}: {err}"
    );
    assert!(
        !is_mounted(mnt),
        "nothing may be mounted after a usage error"
    );
}

struct Dirs {
    base: std::sync::Arc<Base>,
    mnt: std::path::PathBuf,
}

fn dirs() -> Dirs {
    let base = Base::new();
    let mnt = base.fresh("mnt");
    fs::create_dir(&mnt).unwrap();
    Dirs { base, mnt }
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let g = format!("group={}", users().group);
    let d = dirs();
    let (store, mnt) = (d.base.store.to_str().unwrap(), d.mnt.to_str().unwrap());
    assert_usage_error(
        &[store, mnt, "-o", &format!("{g},bogus_option=1")],
        &d.mnt,
        "bogus_option",
    );
    assert_usage_error(
        &[store, mnt, "-o", "group=hfit_no_such_group_zz"],
        &d.mnt,
        "hfit_no_such_group_zz",
    );
    assert_usage_error(
        &[store, mnt, "-o", &format!("{g},others=everything")],
        &d.mnt,
        "others",
    );
    let file = d.base.fresh("afile");
    fs::write(&file, b"x").unwrap();
    assert_usage_error(
        &[file.to_str().unwrap(), mnt, "-o", &g],
        &d.mnt,
        file.to_str().unwrap(),
    );
    let missing = d.base.fresh("missing-mnt");
    assert_usage_error(
        &[store, missing.to_str().unwrap(), "-o", &g],
        &missing,
        missing.to_str().unwrap(),
    );
}

#[test]
fn version_and_help() {
    let o = run_bin(&["--version"]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hfcachefs"),
        "{}",
        out_str(&o)
    );
    let o = run_bin(&["--help"]);
    assert!(o.status.success(), "{}", out_str(&o));
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    for word in ["group=", "others=", "store=", "fstab"] {
        assert!(text.contains(word), "--help should mention {word}:\n{text}");
    }
}

#[test]
fn mountinfo_type_and_source_and_umount_ends_daemon() {
    let mut m = Mount::new();
    let e = mount_entry(&m.mnt).unwrap();
    assert_eq!(
        e.fstype, "fuse.hfcachefs",
        "mount type in /proc/self/mountinfo"
    );
    assert_eq!(
        Path::new(&e.source),
        m.store.as_path(),
        "mount source is the store"
    );
    assert!(
        !m.daemon_pids.is_empty(),
        "no daemon process found for {}",
        m.mnt.display()
    );
    // daemonized: not attached to our session
    for pid in &m.daemon_pids {
        let sid = unsafe { libc::getsid(*pid) };
        assert_ne!(
            sid,
            unsafe { libc::getsid(0) },
            "daemon {pid} still in the caller's session"
        );
    }
    let pids = m.daemon_pids.clone();
    m.unmount().expect("clean unmount that ends the daemon");
    for pid in pids {
        assert!(!pid_alive(pid), "daemon {pid} alive after umount");
    }
}

#[test]
fn generic_mount_options_and_numeric_gid_accepted() {
    let u = users();
    let m =
        Mount::with_opts("rw,nodev,nosuid,allow_other,default_permissions,noatime,exec,_netdev");
    fs::write(m.p("f"), b"x").unwrap();
    assert_eq!(m.sst("f").gid, u.gid);
    // group given as a number
    let d = dirs();
    let o = run_bin(&[
        d.base.store.to_str().unwrap(),
        d.mnt.to_str().unwrap(),
        "-o",
        &format!("group={}", u.gid),
    ]);
    assert!(o.status.success(), "group=<gid>: {}", out_str(&o));
    let ok = is_mounted(&d.mnt);
    let wrote = fs::write(d.mnt.join("g"), b"x");
    let gid = lst(&d.base.store.join("g")).map(|s| s.gid);
    let _ = run_timeout(
        cmd("umount", &[d.mnt.to_str().unwrap()]),
        Duration::from_secs(10),
    );
    if is_mounted(&d.mnt) {
        let _ = run_timeout(
            cmd("umount", &["-l", d.mnt.to_str().unwrap()]),
            Duration::from_secs(10),
        );
    }
    assert!(ok, "not mounted with group=<gid>");
    wrote.unwrap();
    assert_eq!(gid.unwrap(), u.gid);
}

#[test]
fn foreground_mode_and_sigterm() {
    let u = users();
    for sig in [None, Some(libc::SIGTERM), Some(libc::SIGINT)] {
        let d = dirs();
        let mut c = Command::new(BIN);
        c.arg(&d.base.store)
            .arg(&d.mnt)
            .args(["-o", &format!("group={}", u.group), "-f"]);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn(c, "hfcachefs -f");
        let mounted = wait_until(Duration::from_secs(10), || is_mounted(&d.mnt));
        assert!(mounted, "-f: not mounted within 10 s");
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.running(), "-f must stay in the foreground");
        fs::write(d.mnt.join("x"), b"x").expect("write through foreground mount");
        match sig {
            None => {
                let o = run_timeout(
                    cmd("umount", &[d.mnt.to_str().unwrap()]),
                    Duration::from_secs(10),
                );
                assert!(o.status.success(), "umount: {}", out_str(&o));
            }
            Some(s) => unsafe {
                libc::kill(child.pid(), s);
            },
        }
        let st = child.wait_timeout(Duration::from_secs(10));
        let still = is_mounted(&d.mnt);
        if still {
            let _ = run_timeout(
                cmd("umount", &["-l", d.mnt.to_str().unwrap()]),
                Duration::from_secs(10),
            );
        }
        assert!(st.is_some(), "foreground daemon did not exit after {sig:?}");
        assert!(!still, "still mounted after {sig:?}");
        assert!(st.unwrap().success(), "exit status after {sig:?}: {st:?}");
    }
}
