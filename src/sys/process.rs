//! The daemon's own process: descriptor limit, capabilities, fork and detach, stop
//! signals, lazy unmount.

use super::*;

/// Raises the open-file limit as far as allowed: every inode the kernel holds pins an O_PATH
/// descriptor. The hard limit goes up to `fs.nr_open` where root may (CAP_SYS_RESOURCE),
/// else the soft limit goes up to the hard one.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    for max in [nr_open.max(lim.rlim_max), lim.rlim_max] {
        let want = libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        };
        // SAFETY: valid in pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Ok(max);
        }
    }
    Err(io::Error::last_os_error())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Capabilities the daemon keeps after mounting: give files away (CHOWN, FOWNER), keep
/// setgid on directories of a group root is not in (FSETID), reach any store file
/// (DAC_OVERRIDE, DAC_READ_SEARCH, which linkat(AT_EMPTY_PATH) also needs), and
/// register passthrough backing files and unmount (SYS_ADMIN).
/// (Numbers from linux/capability.h: chown 0, dac_override 1, dac_read_search 2, fowner 3,
/// fsetid 4, sys_admin 21.)
pub const KEPT_CAPABILITIES: [u32; 6] = [0, 1, 2, 3, 4, 21];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability but `keep` from this thread (and threads it starts later) and
/// from the bounding set, and forbids gaining privileges through exec.
pub fn keep_only_capabilities(keep: &[u32]) -> io::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: plain prctl; EINVAL for caps this kernel lacks is fine to ignore.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
    let mut data = [CapData::default(); 2];
    for &cap in keep {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective |= bit;
        data[word].permitted |= bit;
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: header and two data words, as capset(2) version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What `fork` returned to this process.
pub enum Forked {
    Parent,
    Child,
}

/// Forks. Must be called while the process has a single thread.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees no other threads exist, so the child is consistent.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        _ => Ok(Forked::Parent),
    }
}

/// Ends the process at once, without running destructors (a forked parent must not unmount).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(code) }
}

/// Detaches from the terminal: new session, cwd `/`, stdio on /dev/null.
pub fn detach() -> io::Result<()> {
    // SAFETY: plain syscalls on valid arguments.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
    }
    Ok(())
}

/// The termination signals the daemon handles by unmounting.
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn stop_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the stop signals in this thread (and threads it spawns later), so that
/// only [`wait_stop_signal`] sees them.
pub fn block_stop_signals() {
    let set = stop_sigset();
    // SAFETY: valid set pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for one of the stop signals and returns its number.
pub fn wait_stop_signal() -> i32 {
    let set = stop_sigset();
    let mut sig = 0;
    loop {
        // SAFETY: valid set and out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// Lazily detaches a mount (used when a plain unmount reports EBUSY at shutdown).
pub fn umount_detach(path: &CStr) -> SysResult<()> {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}
