//! flock() forwarding: locks taken through the mount are real flock locks on store files,
//! so every daemon over the same store (on this host or another sharing a cluster
//! filesystem) sees them.
//!
//! A blocking LOCK_EX/LOCK_SH must not pin a request thread, so contended requests are
//! parked with one waiter thread that retries them without blocking and answers when the
//! lock is granted, or with EINTR when the waiting process was killed or signalled (FUSE
//! interrupts never reach us: fuser answers them with ENOSYS).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::sys;

/// The flock operation a FUSE lock request stands for (`F_RDLCK`/`F_WRLCK`/`F_UNLCK`).
pub fn flock_op(typ: i32) -> Option<i32> {
    match typ {
        libc::F_RDLCK => Some(libc::LOCK_SH),
        libc::F_WRLCK => Some(libc::LOCK_EX),
        libc::F_UNLCK => Some(libc::LOCK_UN),
        _ => None,
    }
}

/// How a parked request is finally answered.
pub type Answer = Box<dyn FnOnce(Result<(), i32>) + Send>;

struct Parked {
    fd: Arc<OwnedFd>,
    op: i32,
    pid: u32,
    answer: Answer,
}

/// The waiter for contended blocking lock requests. Its thread starts with the first
/// parked request (the daemon forks after building the filesystem, and threads do not
/// survive a fork).
#[derive(Default)]
pub struct LockWaiter {
    queue: Arc<(Mutex<Vec<Parked>>, Condvar)>,
    started: Mutex<bool>,
}

/// Retry intervals: quick at first (a local holder usually lets go fast), then at most
/// every 20 ms, which is also how a release on another host is noticed.
const FIRST_DELAY: Duration = Duration::from_millis(1);
const MAX_DELAY: Duration = Duration::from_millis(20);

impl LockWaiter {
    /// Starts the waiter thread if it is not running; false if it cannot be started.
    fn start(&self) -> bool {
        let mut started = self.started.lock();
        if !*started {
            let q = Arc::clone(&self.queue);
            *started = thread::Builder::new()
                .name("lock-waiter".into())
                .spawn(move || run(&q))
                .is_ok();
        }
        *started
    }

    /// Takes the lock now if it is free, else parks the request (when `sleep`) or fails
    /// with EWOULDBLOCK. `answer` is called exactly once.
    pub fn lock(&self, fd: Arc<OwnedFd>, op: i32, sleep: bool, pid: u32, answer: Answer) {
        match sys::flock(fd.as_fd(), op | libc::LOCK_NB) {
            Err(libc::EWOULDBLOCK) if sleep && op != libc::LOCK_UN => {
                if !self.start() {
                    return answer(Err(libc::ENOLCK));
                }
                let (lock, cv) = &*self.queue;
                lock.lock().push(Parked {
                    fd,
                    op,
                    pid,
                    answer,
                });
                cv.notify_one();
            }
            r => answer(r),
        }
    }
}

fn run(queue: &(Mutex<Vec<Parked>>, Condvar)) {
    let (lock, cv) = queue;
    let mut delay = FIRST_DELAY;
    loop {
        let batch = {
            let mut parked = lock.lock();
            while parked.is_empty() {
                cv.wait(&mut parked);
                delay = FIRST_DELAY;
            }
            std::mem::take(&mut *parked)
        };
        // Retry without holding the queue lock, so parking never waits on a syscall.
        let mut still = Vec::with_capacity(batch.len());
        for p in batch {
            match sys::flock(p.fd.as_fd(), p.op | libc::LOCK_NB) {
                Err(libc::EWOULDBLOCK) if !sys::process_interrupted(p.pid) => still.push(p),
                Err(libc::EWOULDBLOCK) => (p.answer)(Err(libc::EINTR)),
                r => (p.answer)(r),
            }
        }
        if still.is_empty() {
            continue;
        }
        let mut parked = lock.lock();
        let arrived = !parked.is_empty();
        parked.extend(still);
        // Sleep, but wake at once when a new request is parked.
        let woken = arrived || !cv.wait_for(&mut parked, delay).timed_out();
        delay = if woken {
            FIRST_DELAY
        } else {
            (delay * 2).min(MAX_DELAY)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn temp_fd(path: &std::path::Path) -> Arc<OwnedFd> {
        Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .unwrap()
                .into(),
        )
    }

    #[test]
    fn contended_lock_is_granted_after_release() {
        let dir = std::env::temp_dir().join(format!("hfc-locks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.lock");
        let (a, b) = (temp_fd(&path), temp_fd(&path));
        let waiter = LockWaiter::default();
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        waiter.lock(
            Arc::clone(&a),
            libc::LOCK_EX,
            false,
            0,
            Box::new(move |r| t.send(r).unwrap()),
        );
        assert_eq!(rx.recv().unwrap(), Ok(()));
        // Non-blocking request on a held lock fails at once.
        let t = tx.clone();
        waiter.lock(
            Arc::clone(&b),
            libc::LOCK_EX,
            false,
            0,
            Box::new(move |r| t.send(r).unwrap()),
        );
        assert_eq!(rx.recv().unwrap(), Err(libc::EWOULDBLOCK));
        // A blocking one is parked, then granted once `a` lets go.
        let t = tx.clone();
        waiter.lock(
            Arc::clone(&b),
            libc::LOCK_EX,
            true,
            std::process::id(),
            Box::new(move |r| t.send(r).unwrap()),
        );
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        sys::flock(a.as_fd(), libc::LOCK_UN).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waiter_of_a_dead_process_gets_eintr() {
        let dir = std::env::temp_dir().join(format!("hfc-locks2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.lock");
        let (a, b) = (temp_fd(&path), temp_fd(&path));
        sys::flock(a.as_fd(), libc::LOCK_EX).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let waiter = LockWaiter::default();
        let (tx, rx) = mpsc::channel();
        waiter.lock(
            b,
            libc::LOCK_EX,
            true,
            pid,
            Box::new(move |r| tx.send(r).unwrap()),
        );
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            Err(libc::EINTR)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lock_types_map_to_flock_operations() {
        assert_eq!(flock_op(libc::F_RDLCK), Some(libc::LOCK_SH));
        assert_eq!(flock_op(libc::F_WRLCK), Some(libc::LOCK_EX));
        assert_eq!(flock_op(libc::F_UNLCK), Some(libc::LOCK_UN));
        assert_eq!(flock_op(99), None);
    }
}
