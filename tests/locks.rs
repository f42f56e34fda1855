//! flock() handled by hfcachefs and forwarded to the store: exclusion inside one mount, across
//! two daemons over the same store, with the store itself, and blocked/killed waiters.

mod common;

use common::*;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const EWOULDBLOCK: i32 = libc::EWOULDBLOCK;

fn rw(p: &Path) -> OwnedFd {
    open(p, libc::O_RDWR | libc::O_CREAT, 0o644).ctx(&format!("open {}", p.display()))
}

/// Try LOCK_EX|LOCK_NB until it succeeds (the release at close may be asynchronous).
#[track_caller]
fn eventually_lock(fd: &OwnedFd, what: &str) {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(5), || {
        match flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => true,
            Err(e) => {
                last = Some(e);
                false
            }
        }
    });
    assert!(
        ok,
        "{what}: lock still not available after 5 s (last error: {last:?})"
    );
}

#[track_caller]
fn assert_blocked(fd: &OwnedFd, op: i32, what: &str) {
    let fdn = fd.as_raw_fd();
    let r = in_thread(Duration::from_secs(10), what, move || {
        flock(fdn, op | libc::LOCK_NB)
    });
    assert_errno(r, &[EWOULDBLOCK], what);
}

/// Quick operations that must keep working while lock waiters are blocked.
fn mount_still_responsive(m: &Mount, tag: &str) {
    let mnt = m.mnt.clone();
    let tag = tag.to_string();
    in_thread(Duration::from_secs(5), "responsive", move || {
        lst(&mnt.join("f")).ctx("stat while a waiter is blocked");
        names(&mnt).ctx("readdir while a waiter is blocked");
        let p = mnt.join(format!("probe-{tag}"));
        fs::write(&p, b"probe").ctx("create+write while a waiter is blocked");
        assert_eq!(fs::read(&p).unwrap(), b"probe");
        fs::remove_file(&p).ctx("unlink while a waiter is blocked");
        // a lock on another file works too
        let o = rw(&mnt.join(format!("other-{tag}")));
        flock(o.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)
            .ctx("flock another file while a waiter is blocked");
    });
}

/// `flock -x PATH CMD...` in its own process group.
fn flock_cmd(path: &Path, extra: &[&str], cmd: &[&str]) -> ChildGuard {
    let mut c = Command::new("flock");
    c.args(extra).arg(path).args(cmd);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn(c, "flock waiter")
}

#[test]
fn flock_excludes_two_opens_in_one_mount() {
    let m = Mount::new();
    let p = m.p("f");
    let fd1 = rw(&p);
    let fd2 = rw(&p);
    flock(fd1.as_raw_fd(), libc::LOCK_EX).ctx("LOCK_EX fd1");
    assert_blocked(
        &fd2,
        libc::LOCK_EX,
        "LOCK_EX|LOCK_NB fd2 while fd1 holds LOCK_EX",
    );
    assert_blocked(
        &fd2,
        libc::LOCK_SH,
        "LOCK_SH|LOCK_NB fd2 while fd1 holds LOCK_EX",
    );
    flock(fd1.as_raw_fd(), libc::LOCK_UN).ctx("LOCK_UN fd1");
    flock(fd2.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).ctx("fd2 after fd1 unlocked");
    assert_blocked(&fd1, libc::LOCK_EX, "fd1 while fd2 holds");
    drop(fd2);
    eventually_lock(&fd1, "fd1 after fd2 closed");
}

#[test]
fn flock_shared_and_exclusive() {
    let m = Mount::new();
    let p = m.p("f");
    let (a, b, c) = (rw(&p), rw(&p), rw(&p));
    flock(a.as_raw_fd(), libc::LOCK_SH).ctx("SH a");
    flock(b.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB).ctx("SH b alongside SH a");
    assert_blocked(&c, libc::LOCK_EX, "EX c while a and b hold SH");
    flock(a.as_raw_fd(), libc::LOCK_UN).unwrap();
    assert_blocked(&c, libc::LOCK_EX, "EX c while b holds SH");
    flock(b.as_raw_fd(), libc::LOCK_UN).unwrap();
    flock(c.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).ctx("EX c after all SH released");
    assert_blocked(&a, libc::LOCK_SH, "SH a while c holds EX");
}

#[test]
fn flock_survives_closing_a_dup_and_is_released_on_last_close() {
    let m = Mount::new();
    let p = m.p("f");
    let fd1 = rw(&p);
    let other = rw(&p);
    flock(fd1.as_raw_fd(), libc::LOCK_EX).unwrap();
    let dup = fd1.try_clone().unwrap();
    drop(fd1); // FLUSH only: the open file description (and its lock) lives on in `dup`
    thread::sleep(Duration::from_millis(300));
    assert_blocked(
        &other,
        libc::LOCK_EX,
        "lock must survive closing one of two dup'ed fds",
    );
    drop(dup);
    eventually_lock(&other, "after the last fd of the holder was closed");
}

#[test]
fn flock_released_on_close_while_the_file_is_open_elsewhere() {
    // The holder opened the file first; another open of the same file exists when the holder
    // closes. The close must release the lock (for the mount and in the store).
    let m = Mount::new();
    let p = m.p("f");
    let holder = rw(&p);
    flock(holder.as_raw_fd(), libc::LOCK_EX).unwrap();
    let other = rw(&p);
    drop(holder);
    let sfd = open(&m.s("f"), libc::O_RDONLY, 0).unwrap();
    let sraw = sfd.as_raw_fd();
    let store_free = wait_until(Duration::from_secs(5), || {
        let ok = flock(sraw, libc::LOCK_EX | libc::LOCK_NB).is_ok();
        if ok {
            flock(sraw, libc::LOCK_UN).unwrap();
        }
        ok
    });
    assert!(
        store_free,
        "the store file is still flock()ed 5 s after the holder closed its only fd"
    );
    eventually_lock(&other, "another open of the file after the holder closed");
}

#[test]
fn blocked_waiter_gets_the_lock_when_the_holder_closes() {
    let m = Mount::new();
    let p = m.p("f");
    let holder = rw(&p);
    flock(holder.as_raw_fd(), libc::LOCK_EX).unwrap();
    let marker = m.base.fresh("marker");
    let mut waiter = flock_cmd(&p, &["-x"], &["touch", marker.to_str().unwrap()]);
    thread::sleep(Duration::from_millis(500));
    assert!(waiter.running(), "waiter did not block");
    drop(holder); // release at close, no explicit LOCK_UN
    let st = waiter.wait_timeout(Duration::from_secs(10));
    assert!(
        st.is_some(),
        "blocked waiter did not get the lock within 10 s of the holder's close"
    );
    assert!(st.unwrap().success(), "waiter: {st:?}");
    assert!(marker.exists());
}

#[test]
fn flock_visible_in_the_store() {
    let m = Mount::new();
    let fd = rw(&m.p("f"));
    flock(fd.as_raw_fd(), libc::LOCK_EX).unwrap();
    let sfd = open(&m.s("f"), libc::O_RDONLY, 0).unwrap();
    assert_errno(
        flock(sfd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
        &[EWOULDBLOCK],
        "store flock while mount holds",
    );
    flock(fd.as_raw_fd(), libc::LOCK_UN).unwrap();
    flock(sfd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).ctx("store flock after mount unlocked");
    assert_blocked(
        &fd,
        libc::LOCK_EX,
        "mount flock while the store file is locked directly",
    );
    assert_blocked(
        &fd,
        libc::LOCK_SH,
        "mount LOCK_SH while the store file is locked directly",
    );
    drop(sfd);
    flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).ctx("mount flock after store lock closed");
}

#[test]
fn flock_between_two_daemons_over_the_same_store() {
    let m1 = Mount::new();
    let m2 = m1.second();
    fs::write(m1.p("f"), b"shared").unwrap();
    assert_eq!(
        fs::read(m2.p("f")).ctx("second mount sees the file"),
        b"shared"
    );
    let fd1 = rw(&m1.p("f"));
    let fd2 = rw(&m2.p("f"));
    flock(fd1.as_raw_fd(), libc::LOCK_EX).ctx("LOCK_EX via mount 1");
    assert_blocked(
        &fd2,
        libc::LOCK_EX,
        "LOCK_EX|LOCK_NB via mount 2 while mount 1 holds",
    );
    assert_blocked(
        &fd2,
        libc::LOCK_SH,
        "LOCK_SH|LOCK_NB via mount 2 while mount 1 holds",
    );
    drop(fd1);
    eventually_lock(&fd2, "mount 2 after mount 1 closed its fd");
    let fd3 = rw(&m1.p("f"));
    assert_blocked(&fd3, libc::LOCK_EX, "mount 1 while mount 2 holds");
    drop(fd2);
    eventually_lock(&fd3, "mount 1 after mount 2 closed");
}

#[test]
fn blocked_waiter_gets_the_lock_after_release() {
    let m = Mount::new();
    let p = m.p("f");
    let holder = rw(&p);
    flock(holder.as_raw_fd(), libc::LOCK_EX).unwrap();
    let marker = m.base.fresh("marker");
    let mut waiter = flock_cmd(&p, &["-x"], &["touch", marker.to_str().unwrap()]);
    thread::sleep(Duration::from_millis(500));
    assert!(waiter.running(), "waiter did not block");
    assert!(!marker.exists());
    mount_still_responsive(&m, "a");
    flock(holder.as_raw_fd(), libc::LOCK_UN).unwrap();
    let st = waiter.wait_timeout(Duration::from_secs(10));
    assert!(
        st.is_some(),
        "blocked waiter did not get the lock within 10 s of the release"
    );
    assert!(st.unwrap().success(), "waiter: {st:?}");
    assert!(marker.exists());
    eventually_lock(&holder, "after the waiter finished");
}

fn killed_waiter_case(m_hold: &Mount, m_wait: &Mount) {
    let holder = rw(&m_hold.p("f"));
    flock(holder.as_raw_fd(), libc::LOCK_EX).unwrap();
    let marker = m_wait.base.fresh("marker");
    let mut waiter = flock_cmd(
        &m_wait.p("f"),
        &["-x"],
        &["touch", marker.to_str().unwrap()],
    );
    thread::sleep(Duration::from_millis(500));
    assert!(waiter.running(), "waiter did not block");
    mount_still_responsive(m_wait, "during-wait");
    mount_still_responsive(m_hold, "during-wait-holder");

    let t = Instant::now();
    waiter.kill(libc::SIGKILL);
    let st = waiter.wait_timeout(Duration::from_secs(10));
    assert!(
        st.is_some(),
        "SIGKILLed flock waiter still not gone after 10 s (stuck in the FUSE request)"
    );
    eprintln!("killed waiter gone after {:?}", t.elapsed());
    assert!(
        !marker.exists(),
        "killed waiter must not have run its command"
    );
    mount_still_responsive(m_wait, "after-kill");

    // The holder still holds; nobody else may have it.
    let other = rw(&m_wait.p("f"));
    assert_blocked(
        &other,
        libc::LOCK_EX,
        "lock is still the holder's after the waiter died",
    );
    flock(holder.as_raw_fd(), libc::LOCK_UN).unwrap();
    // The dead waiter must not end up holding it.
    eventually_lock(
        &other,
        "lock available to a third party after the holder released (dead waiter must hold nothing)",
    );
    assert_blocked(
        &holder,
        libc::LOCK_EX,
        "normal exclusion after the waiter episode",
    );
    flock(other.as_raw_fd(), libc::LOCK_UN).unwrap();
    // Nothing left at the store level either.
    let sfd = open(&m_wait.s("f"), libc::O_RDONLY, 0).unwrap();
    let sfd_raw = sfd.as_raw_fd();
    let ok = wait_until(Duration::from_secs(5), || {
        flock(sfd_raw, libc::LOCK_EX | libc::LOCK_NB).is_ok()
    });
    assert!(ok, "store file still locked after everyone released");
}

#[test]
fn killed_blocked_waiter_same_mount() {
    let m = Mount::new();
    killed_waiter_case(&m, &m);
}

#[test]
fn killed_blocked_waiter_on_second_daemon() {
    let m1 = Mount::new();
    let m2 = m1.second();
    fs::write(m1.p("f"), b"").unwrap();
    killed_waiter_case(&m1, &m2);
}

#[test]
fn many_blocked_waiters_do_not_stall_the_mount() {
    let m = Mount::new();
    let p = m.p("f");
    let holder = rw(&p);
    flock(holder.as_raw_fd(), libc::LOCK_EX).unwrap();
    let mut waiters: Vec<ChildGuard> = (0..12).map(|_| flock_cmd(&p, &["-x"], &["true"])).collect();
    thread::sleep(Duration::from_millis(800));
    for w in waiters.iter_mut() {
        assert!(w.running(), "a waiter did not block");
    }
    mount_still_responsive(&m, "many");
    // Kill a few of them, the rest must still get the lock in turn.
    for w in waiters.iter_mut().take(4) {
        w.kill(libc::SIGKILL);
    }
    for w in waiters.iter_mut().take(4) {
        assert!(
            w.wait_timeout(Duration::from_secs(10)).is_some(),
            "killed waiter stuck"
        );
    }
    mount_still_responsive(&m, "many-after-kill");
    flock(holder.as_raw_fd(), libc::LOCK_UN).unwrap();
    for (i, w) in waiters.iter_mut().enumerate().skip(4) {
        let st = w.wait_timeout(Duration::from_secs(20));
        assert!(
            matches!(st, Some(s) if s.success()),
            "waiter {i} after release: {st:?}"
        );
    }
    eventually_lock(&holder, "after all waiters finished");
}

fn killed_holder_case(m_hold: &Mount, m_check: &Mount) {
    let p = m_hold.p("f");
    let marker = m_hold.base.fresh("locked");
    let script = format!(
        "exec 3<>'{}' && flock -x 3 && touch '{}' && exec sleep 60",
        p.display(),
        marker.display()
    );
    let mut c = Command::new("/bin/sh");
    c.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut holder = ChildGuard::spawn(c, "lock holder");
    assert!(
        wait_until(Duration::from_secs(10), || marker.exists()),
        "holder never got the lock"
    );
    let fd = rw(&m_check.p("f"));
    assert_blocked(&fd, libc::LOCK_EX, "while the holder process is alive");
    holder.kill(libc::SIGKILL);
    assert!(
        holder.wait_timeout(Duration::from_secs(10)).is_some(),
        "killed holder did not exit"
    );
    eventually_lock(&fd, "after the holder was killed");
}

#[test]
fn killed_holder_releases_the_lock() {
    let m = Mount::new();
    killed_holder_case(&m, &m);
}

#[test]
fn killed_holder_on_one_daemon_releases_for_the_other() {
    let m1 = Mount::new();
    let m2 = m1.second();
    killed_holder_case(&m1, &m2);
}

#[test]
fn timed_flock_waiter_gives_up() {
    // util-linux `flock -w` interrupts a blocking flock() with SIGALRM: the call must return
    // (EINTR) instead of waiting for the holder, and the timed-out waiter must hold nothing.
    let m = Mount::new();
    let p = m.p("f");
    let holder = rw(&p);
    flock(holder.as_raw_fd(), libc::LOCK_EX).unwrap();
    let t = Instant::now();
    let mut waiter = flock_cmd(&p, &["-x", "-w", "1"], &["true"]);
    let st = waiter.wait_timeout(Duration::from_secs(10));
    let took = t.elapsed();
    flock(holder.as_raw_fd(), libc::LOCK_UN).unwrap();
    let st = st.expect(
        "`flock -w 1` still waiting after 10 s: the interrupted lock request was not abandoned",
    );
    assert_eq!(
        st.code(),
        Some(1),
        "`flock -w 1` should time out (exit 1), took {took:?}"
    );
    let other = rw(&p);
    eventually_lock(&other, "after the timed-out waiter");
    drop(holder);
}

#[test]
fn lock_as_members_across_mounts() {
    // Members of the group lock the same lock file through two daemons.
    let m1 = Mount::new();
    let m2 = m1.second();
    let u = m1.users;
    let (p1, p2): (PathBuf, PathBuf) = (m1.p("x.lock"), m2.p("x.lock"));
    let fd_a = as_user(&u.a, 0o022, move || {
        let fd = open(&p1, libc::O_RDWR | libc::O_CREAT, 0o644).ctx("A creates lock");
        flock(fd.as_raw_fd(), libc::LOCK_EX).ctx("A locks");
        fd
    });
    let p = p2.clone();
    let r = as_user(&u.b, 0o077, move || {
        let fd = open(&p, libc::O_RDWR | libc::O_CREAT, 0o644).ctx("B opens A's lock via mount 2");
        flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)
    });
    assert_errno(r, &[EWOULDBLOCK], "B via mount 2 while A holds via mount 1");
    drop(fd_a);
    let ok = wait_until(Duration::from_secs(5), || {
        let p = p2.clone();
        as_user(&u.b, 0o077, move || {
            let fd = open(&p, libc::O_RDWR, 0).unwrap();
            flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).is_ok()
        })
    });
    assert!(ok, "B never got the lock after A closed");
}

/// Close-to-open between two daemons over one store, as the Hub libraries hand a file over
/// (write under the lock, close, unlock; the other side locks, opens, reads): whatever one
/// mount wrote, by write(2) or through a shared mapping, is in the store once close(2)
/// returns, even with a shared mapping still in place. With passthrough the bytes go
/// straight to the store (opens answer FOPEN_NOFLUSH); served by the daemon, the kernel
/// writes a mapping's dirty pages back at close (FLUSH), so those opens must not skip it.
#[test]
fn close_to_open_between_two_daemons() {
    const LEN: usize = 3 * 4096 + 100;
    for opts in ["", "passthrough=off"] {
        let m1 = Mount::with_opts(opts);
        let m2 = m1.second();
        for (i, mapped) in [false, true, false, true].into_iter().enumerate() {
            let mut map = None;
            let name = format!("f{i}");
            let data: Vec<u8> = (0..LEN).map(|b| (b * 7 + i) as u8).collect();
            // Made first, then opened: the kernel treats opens and creates apart.
            drop(
                open(
                    &m1.p(&name),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o644,
                )
                .ctx("create"),
            );
            // The lock is a file of its own, as the Hub's `.lock` files are: a mapping keeps
            // its open file, and so a flock on it, alive after close.
            let lock1 = rw(&m1.p("lock"));
            flock(lock1.as_raw_fd(), libc::LOCK_EX).ctx("lock via mount 1");
            let fd = open(&m1.p(&name), libc::O_RDWR, 0).ctx("open via mount 1");
            if mapped {
                let r = unsafe { libc::ftruncate(fd.as_raw_fd(), LEN as libc::off_t) };
                assert_eq!(r, 0, "ftruncate: {}", std::io::Error::last_os_error());
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        LEN,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        fd.as_raw_fd(),
                        0,
                    )
                };
                assert_ne!(p, libc::MAP_FAILED, "{opts}: mmap");
                // Unmapped only after close: munmap writes dirty pages back by itself.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>(), LEN) };
                map = Some(p);
            } else {
                assert_eq!(write_fd(fd.as_raw_fd(), &data).ctx("write"), LEN);
            }
            drop(fd);
            drop(lock1);
            let what = format!("{opts:?}, {}", if mapped { "mmap" } else { "write" });
            assert!(
                fs::read(m1.s(&name)).unwrap() == data,
                "{what}: the store has the bytes at close"
            );
            let lock2 = rw(&m2.p("lock"));
            flock(lock2.as_raw_fd(), libc::LOCK_EX).ctx("lock via mount 2");
            assert!(
                fs::read(m2.p(&name)).ctx("read via mount 2") == data,
                "{what}: mount 2 reads what mount 1 wrote"
            );
            if let Some(p) = map {
                unsafe { libc::munmap(p, LEN) };
            }
        }
    }
}
