//! Mount and daemon life: checks the configuration, mounts, detaches into the background
//! once the mount is up (so that mount(8) returns), and unmounts on SIGTERM/SIGINT/SIGHUP.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fuser::{Config, MountOption, Session, SessionACL};
use log::{error, info, warn};
use parking_lot::Mutex;

use crate::error::Error;
use crate::evict::record::{Recorder, TICK, Tracker};
use crate::evict::state::StateDir;
use crate::evict::{self, Target};
use crate::fs::fuse::{FuseSettings, HfCacheFs};
use crate::fs::store::Store;
use crate::fs::timeouts::Timeouts;
use crate::options::{MountOptions, Passthrough};
use crate::policy::Policy;
use crate::status;
use crate::sys;

/// Where log lines go: the log file of a background daemon, else stderr.
static LOG_FILE: Mutex<Option<File>> = Mutex::new(None);
/// Until a background daemon detaches, its warnings are shown on stderr too.
static ECHO_WARNINGS: AtomicBool = AtomicBool::new(false);

struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *LOG_FILE.lock() {
            Some(f) => f.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut *LOG_FILE.lock() {
            Some(f) => f.flush(),
            None => io::stderr().flush(),
        }
    }
}

fn init_logging(debug: bool) {
    // fuser warns when its session ends and the mount, already gone after `umount`,
    // cannot be unmounted again: that is every normal stop, so only its errors are shown.
    let level = if debug {
        "debug"
    } else {
        "info,fuser::session=error"
    };
    let env = env_logger::Env::default().default_filter_or(level);
    env_logger::Builder::from_env(env)
        .target(env_logger::Target::Pipe(Box::new(LogSink)))
        .format(|buf, record| {
            if record.level() <= log::Level::Warn && ECHO_WARNINGS.load(Ordering::Relaxed) {
                eprintln!("hfcachefs: {}", record.args());
            }
            writeln!(
                buf,
                "[{} {:5} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
}

/// A background daemon logs to its log file from the start.
fn open_log(o: &MountOptions) -> Result<(), Error> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&o.logfile)
        .map_err(|e| {
            Error::Runtime(format!("cannot open log file {}: {e}", o.logfile.display()))
        })?;
    *LOG_FILE.lock() = Some(log);
    ECHO_WARNINGS.store(true, Ordering::Relaxed);
    Ok(())
}

/// Checks the store, creating the default one (root-only) if it is missing.
fn prepare_store(o: &MountOptions) -> Result<(), Error> {
    let path = &o.store;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && o.default_store => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| {
                    Error::Runtime(format!("cannot create store {}: {e}", path.display()))
                })?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(
                |e| Error::Runtime(format!("cannot set mode of store {}: {e}", path.display())),
            )?;
            info!("created store {} (mode 0700, root only)", path.display());
            std::fs::metadata(path)
                .map_err(|e| Error::Runtime(format!("store {}: {e}", path.display())))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "store {} does not exist",
                path.display()
            )));
        }
        Err(e) => return Err(Error::Usage(format!("store {}: {e}", path.display()))),
    };
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "store {} is not a directory",
            path.display()
        )));
    }
    // Anyone who can reach the store directly bypasses the policy: writers can plant
    // anything, readers see every blob whatever `others=` says.
    if meta.mode() & 0o077 != 0 || meta.uid() != 0 {
        warn!(
            "store {} is reachable without hfcachefs (owner uid {}, mode {:o}): \
             make it root-only with: chown root {} && chmod 0700 {}",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777,
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// `f_type` of a FUSE filesystem: the kernel's passthrough opens of its files are checked
/// with the caller's credentials (`HfCacheFs::backing`).
const FUSE_MAGIC: i64 = 0x6573_5546;

/// Filesystems whose files other hosts may change behind this kernel's back, by `f_type`.
fn shared_filesystem(magic: i64) -> Option<&'static str> {
    Some(match magic {
        0x6969 => "NFS",
        FUSE_MAGIC => "a FUSE filesystem (GlusterFS, ...)",
        0x0BD0_0BD0 => "Lustre",
        0x00C3_6400 => "CephFS",
        0xFE53_4D42 | 0xFF53_4D42 => "SMB",
        0x4750_4653 => "GPFS",
        0x1983_0326 => "BeeGFS",
        0x7461_636f => "OCFS2",
        0x0116_1970 => "GFS2",
        _ => return None,
    })
}

/// Kernel cache lifetimes: 1 s by default (60 s for content-addressed names), but none on
/// a shared store, where a name cached as missing would hide another host's download until
/// it expires (and make the Hub libraries download it again).
fn cache_timeouts(o: &MountOptions, fs_magic: i64) -> Timeouts {
    let shared = shared_filesystem(fs_magic);
    let default = if shared.is_some() {
        Duration::ZERO
    } else {
        Duration::from_secs(1)
    };
    if let (Some(fs), None) = (shared, o.entry_timeout.or(o.attr_timeout)) {
        info!(
            "store is on {fs}: entry_timeout=0,attr_timeout=0 so other hosts' changes show at once"
        );
    }
    let entry = o.entry_timeout.unwrap_or(default);
    let content = match shared {
        Some(_) => entry,
        None => Duration::from_secs(60),
    };
    Timeouts {
        entry,
        attr: o.attr_timeout.or(o.entry_timeout).unwrap_or(default),
        content: o.content_timeout.unwrap_or(content),
    }
}

fn check_mountpoint(path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "mountpoint {} is not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Usage(format!(
            "mountpoint {} does not exist",
            path.display()
        ))),
        Err(e) => Err(Error::Usage(format!("mountpoint {}: {e}", path.display()))),
    }
}

fn fuse_config(o: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(o.store.to_string_lossy().into_owned()),
        // fuser passes Subtype only through fusermount; as a raw option the kernel takes it.
        MountOption::CUSTOM("subtype=hfcachefs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if o.read_only {
        config.mount_options.push(MountOption::RO);
    }
    if o.noexec {
        config.mount_options.push(MountOption::NoExec);
    }
    if o.noatime {
        config.mount_options.push(MountOption::NoAtime);
    }
    config.acl = SessionACL::All;
    config.n_threads = Some(o.threads);
    config.clone_fd = true;
    config
}

/// Mounts and serves until unmounted.
pub fn run(o: &MountOptions) -> Result<(), Error> {
    init_logging(o.debug);
    let gid = prepare(o)?;
    let (records, unrecorded) = eviction_records(o)?;
    let tracker = records.as_ref().map(|_| Arc::new(Tracker::default()));
    let (fs, store) = open_store(o, gid, tracker.clone())?;
    // Only once the store itself is known to be usable: its own failure is the cause to
    // report first.
    if let Some(why) = unrecorded {
        warn!("{why}; files open through this mount are not known to `hfcachefs gc`");
    }
    let session = mount(o, fs, gid)?;
    serve(o, session, records.zip(tracker).map(|(r, t)| (r, t, store)))
}

/// Checks what mounting needs before anything is mounted: root, the log of a background
/// daemon, the group (its gid returned), the store and the mountpoint.
fn prepare(o: &MountOptions) -> Result<u32, Error> {
    if !sys::is_root() {
        return Err(Error::Usage(
            "hfcachefs must run as root (it sets owners in the store)".into(),
        ));
    }
    if !o.foreground {
        open_log(o)?;
    }
    let gid = o.group.resolve().map_err(Error::Usage)?;
    prepare_store(o)?;
    check_mountpoint(&o.mountpoint)?;
    Ok(gid)
}

/// The filesystem serving the store with the group `gid`, once root is known to be able to
/// give what it creates there to users.
fn open_store(
    o: &MountOptions,
    gid: u32,
    tracker: Option<Arc<Tracker>>,
) -> Result<(HfCacheFs, Arc<Store>), Error> {
    let store_c = CString::new(o.store.as_os_str().as_bytes())
        .map_err(|_| Error::Usage("store path contains a NUL byte".into()))?;
    let failed = |what: &str, e: i32| {
        Error::Runtime(format!(
            "{what} {}: {}",
            o.store.display(),
            io::Error::from_raw_os_error(e)
        ))
    };
    let root = sys::open_root(&store_c).map_err(|e| failed("cannot open store", e))?;
    let fs_magic = sys::fs_type(root.as_fd()).unwrap_or(0);
    let timeouts = cache_timeouts(o, fs_magic);
    let policy = Policy {
        gid,
        others: o.others,
    };
    let mut store =
        Store::new(root, policy, fd_budget(), &o.private).map_err(|e| failed("store", e))?;
    if let Some(t) = tracker {
        store = store.with_tracker(t, o.record);
    }
    if !o.read_only {
        store.probe_ownership().map_err(|e| {
            Error::Runtime(format!(
                "store {}: root cannot create files and give them to users there ({}); \
                 hfcachefs needs a store where root may chown (on NFS: export it with no_root_squash)",
                o.store.display(),
                io::Error::from_raw_os_error(e)
            ))
        })?;
    }
    let settings = FuseSettings {
        timeouts,
        passthrough: o.passthrough == Passthrough::Auto,
        store_checks_caller: fs_magic == FUSE_MAGIC,
    };
    let store = Arc::new(store);
    Ok((HfCacheFs::new(Arc::clone(&store), settings), store))
}

/// How many inode descriptors the store may keep open: half the open file limit (raised as
/// far as allowed); the rest is for open files, directories and backings.
fn fd_budget() -> usize {
    let nofile = match sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            warn!("cannot raise the open file limit: {e}");
            1024
        }
    };
    let budget = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
    info!("open file limit {nofile}: up to {budget} inode descriptors kept open");
    budget
}

/// Mounts `fs` on the mountpoint.
fn mount(o: &MountOptions, fs: HfCacheFs, gid: u32) -> Result<Session<HfCacheFs>, Error> {
    let session = Session::new(fs, &o.mountpoint, &fuse_config(o)).map_err(|e| {
        Error::Runtime(format!(
            "cannot mount {} on {}: {e}",
            o.store.display(),
            o.mountpoint.display()
        ))
    })?;
    info!(
        "{}(group {gid}, others {:?})",
        status::mounted(&o.store, &o.mountpoint),
        o.others
    );
    Ok(session)
}

/// Detaches into the background (unless in the foreground), keeps only the capabilities it
/// needs, and serves requests until unmounted.
fn serve(
    o: &MountOptions,
    mut session: Session<HfCacheFs>,
    records: Option<(Records, Arc<Tracker>, Arc<Store>)>,
) -> Result<(), Error> {
    if !o.foreground {
        detach()?;
    }
    // Before any thread starts, so that every thread has the reduced set.
    sys::keep_only_capabilities(&sys::KEPT_CAPABILITIES)
        .map_err(|e| Error::Runtime(format!("cannot drop capabilities: {e}")))?;
    spawn_unmounter(&mut session, &o.mountpoint)?;
    let stop = Arc::new(AtomicBool::new(false));
    let background = match records {
        Some((records, t, store)) => {
            let notifier = session.notifier();
            // What an eviction removed leaves the kernel's caches at once.
            let forget = move |dir: u64, name: &std::ffi::OsStr| {
                if let Some(node) = store.node_of(dir) {
                    let _ = notifier.inval_entry(fuser::INodeNo(node), name);
                }
            };
            spawn_eviction(records, t, Box::new(forget), Arc::clone(&stop))?
        }
        None => Vec::new(),
    };
    let ran = session.run();
    stop.store(true, Ordering::Relaxed);
    for h in background {
        let _ = h.join();
    }
    ran.map_err(|e| Error::Runtime(format!("session ended with an error: {e}")))?;
    info!("{} unmounted, exiting", o.mountpoint.display());
    Ok(())
}

/// What the recorder calls for each entry an eviction removed: (directory inode, name).
type Forget = Box<dyn FnMut(u64, &std::ffi::OsStr) + Send>;

/// How often automatic eviction looks at the store though no download finished.
const EVICT_CHECK_EVERY: Duration = Duration::from_secs(60);
/// The least time between two automatic eviction checks (each walks the store).
const EVICT_CHECK_GAP: Duration = Duration::from_secs(2);

/// What the eviction threads start from, checked before mounting: a store whose
/// `.hfcachefs/` cannot be used fails the mount command, not the detached daemon.
struct Records {
    /// The store root the records are kept in (the recorder is made after detaching: its
    /// records are named by the daemon's pid).
    root: std::os::fd::OwnedFd,
    /// The store root automatic eviction walks, with its goals (none: no eviction thread).
    evict: Option<(crate::cache::walk::Node, Vec<Target>)>,
}

/// The records of this mount: the open-file record always (what keeps `gc` from removing
/// files open through it, `ro` and `record=off` mounts too), the access record unless
/// `record=off`. When `.hfcachefs/` cannot be used, a mount asking for `max_size`/`min_free`
/// is refused; any other mounts without records, and the reason is returned for the
/// warning the caller gives once the store itself has proved usable.
fn eviction_records(o: &MountOptions) -> Result<(Option<Records>, Option<Error>), Error> {
    let targets: Vec<Target> = o
        .max_size
        .map(Target::MaxSize)
        .into_iter()
        .chain(o.min_free.map(Target::FreePercent))
        .collect();
    let open_root = || {
        let c = CString::new(o.store.as_os_str().as_bytes())
            .map_err(|_| Error::Usage("store path contains a NUL byte".into()))?;
        sys::open_root(&c).map_err(|e| {
            Error::Runtime(format!(
                "cannot open store {}: {}",
                o.store.display(),
                io::Error::from_raw_os_error(e)
            ))
        })
    };
    let root = open_root().and_then(|root| {
        Recorder::new(root.as_fd()).map(|_| root).map_err(|e| {
            let why = match e {
                libc::EIO => "it must be a directory of root's, closed to others (chown root: and chmod 700 it)".to_owned(),
                e => io::Error::from_raw_os_error(e).to_string(),
            };
            Error::Runtime(format!(
                "cannot keep eviction records in {}/.hfcachefs: {why}",
                o.store.display(),
            ))
        })
    });
    let root = match root {
        Ok(r) => r,
        Err(e) if targets.is_empty() => return Ok((None, Some(e))),
        Err(e) => return Err(e),
    };
    let evict = if targets.is_empty() {
        None
    } else {
        Some((walk_root(open_root()?)?, targets))
    };
    Ok((Some(Records { root, evict }), None))
}

/// Starts the recorder thread (the access and open-file records, and `forget` called for
/// each entry an eviction removed) and, with `max_size=` or `min_free=`, the eviction
/// thread. Both stop once `stop` is set; the recorder writes its last batch first.
fn spawn_eviction(
    records: Records,
    tracker: Arc<Tracker>,
    mut forget: Forget,
    stop: Arc<AtomicBool>,
) -> Result<Vec<thread::JoinHandle<()>>, Error> {
    let Records { root, evict } = records;
    let mut recorder = Recorder::new(root.as_fd()).map_err(|e| {
        Error::Runtime(format!(
            "cannot keep eviction records: {}",
            io::Error::from_raw_os_error(e)
        ))
    })?;
    let mut handles = Vec::new();
    let (t, s) = (Arc::clone(&tracker), Arc::clone(&stop));
    let spawned = thread::Builder::new()
        .name("recorder".into())
        .spawn(move || {
            let mut failing = false;
            while !s.load(Ordering::Relaxed) {
                thread::sleep(TICK);
                match recorder.tick(&t, &mut forget) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        warn!(
                            "cannot write the access record: {}",
                            io::Error::from_raw_os_error(e)
                        );
                    }
                    Err(_) => {}
                }
            }
            if let Err(e) = recorder.finish(&t) {
                warn!(
                    "cannot write the access record: {}",
                    io::Error::from_raw_os_error(e)
                );
            }
        });
    handles.push(spawned.map_err(|e| Error::Runtime(format!("cannot start the recorder: {e}")))?);
    let Some((root, targets)) = evict else {
        return Ok(handles);
    };
    info!(
        "automatic eviction: {}",
        targets
            .iter()
            .map(Target::spec)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let spawned = thread::Builder::new()
        .name("evictor".into())
        .spawn(move || {
            let mut last = Instant::now() - EVICT_CHECK_EVERY;
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(TICK);
                let due = last.elapsed() >= EVICT_CHECK_EVERY
                    || (last.elapsed() >= EVICT_CHECK_GAP && tracker.take_published());
                if due {
                    last = Instant::now();
                    for t in &targets {
                        evict_once(&root, t);
                    }
                }
            }
        });
    handles.push(spawned.map_err(|e| Error::Runtime(format!("cannot start the evictor: {e}")))?);
    Ok(handles)
}

fn walk_root(fd: std::os::fd::OwnedFd) -> Result<crate::cache::walk::Node, Error> {
    let st = sys::fstat(fd.as_fd())
        .map_err(|e| Error::Runtime(format!("store: {}", io::Error::from_raw_os_error(e))))?;
    Ok(crate::cache::walk::Node { fd, st })
}

/// One automatic eviction towards `t`, logged revision by revision.
fn evict_once(root: &crate::cache::walk::Node, t: &Target) {
    let state = match StateDir::open(root.fd(), true) {
        Ok(s) => s,
        Err(e) => return warn!("eviction: .hfcachefs: {}", io::Error::from_raw_os_error(e)),
    };
    let now = SystemTime::now();
    let report = match evict::run(root, state.as_ref(), *t, false, now) {
        Ok(r) => r,
        Err(e) => return warn!("eviction ({}): {e}", t.spec()),
    };
    if report.removed.is_empty() && report.met {
        return;
    }
    for i in &report.removed {
        info!(
            "evicted {}@{} ({} bytes; {})",
            i.repo, i.commit, i.bytes, i.reason
        );
    }
    for i in &report.kept {
        info!("eviction kept {}@{}: {}", i.repo, i.commit, i.reason);
    }
    for e in &report.errors {
        warn!("eviction: {e}");
    }
    let line = evict::summary(&report, t, "daemon", now);
    if report.met {
        info!("eviction: {line}");
    } else {
        warn!("eviction: {line}");
    }
    if let Some(s) = &state {
        if let Err(e) = s.set_last_eviction(&line) {
            warn!(
                "eviction: cannot record it: {}",
                io::Error::from_raw_os_error(e)
            );
        }
    }
}

/// Stop signals go to one thread, which unmounts; the request threads never see them.
fn spawn_unmounter(session: &mut Session<HfCacheFs>, mountpoint: &Path) -> Result<(), Error> {
    sys::block_stop_signals();
    let mut unmounter = session.unmount_callable();
    let mountpoint = CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| Error::Usage("mountpoint path contains a NUL byte".into()))?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = sys::wait_stop_signal();
            info!("signal {sig}: unmounting");
            if let Err(e) = unmounter.unmount() {
                warn!("unmount failed ({e}); detaching the mount lazily");
                if let Err(e) = sys::umount_detach(&mountpoint) {
                    error!("lazy unmount failed: {}", io::Error::from_raw_os_error(e));
                }
            }
        })
        .map_err(|e| Error::Runtime(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// Forks into the background now that the mount is up: the parent exits 0 so that
/// mount(8) returns; the child loses its terminal.
fn detach() -> Result<(), Error> {
    match sys::fork().map_err(|e| Error::Runtime(format!("cannot fork: {e}")))? {
        // Exit without destructors: dropping the session here would unmount it.
        sys::Forked::Parent => sys::exit_now(0),
        sys::Forked::Child => {}
    }
    ECHO_WARNINGS.store(false, Ordering::Relaxed);
    sys::detach().map_err(|e| Error::Runtime(format!("cannot detach: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Command, parse};

    fn opts(args: &[&str]) -> MountOptions {
        match parse(args) {
            Ok(Command::Mount(o)) => *o,
            other => panic!("{other:?}"),
        }
    }

    const EXT4: i64 = 0xEF53;
    const NFS: i64 = 0x6969;

    fn timeouts(entry: f64, attr: f64, content: f64) -> Timeouts {
        Timeouts {
            entry: Duration::from_secs_f64(entry),
            attr: Duration::from_secs_f64(attr),
            content: Duration::from_secs_f64(content),
        }
    }

    #[test]
    fn local_store_caches_one_second_and_content_a_minute() {
        assert_eq!(
            cache_timeouts(&opts(&["/m"]), EXT4),
            timeouts(1.0, 1.0, 60.0)
        );
        assert_eq!(
            cache_timeouts(&opts(&["/m", "-o", "attr_timeout=2"]), EXT4),
            timeouts(1.0, 2.0, 60.0)
        );
        assert_eq!(
            cache_timeouts(&opts(&["/m", "-o", "content_timeout=0"]), EXT4),
            timeouts(1.0, 1.0, 0.0)
        );
    }

    #[test]
    fn shared_store_caches_nothing_unless_asked() {
        assert_eq!(cache_timeouts(&opts(&["/m"]), NFS), timeouts(0.0, 0.0, 0.0));
        assert_eq!(
            cache_timeouts(&opts(&["/m", "-o", "entry_timeout=0.5"]), NFS),
            timeouts(0.5, 0.5, 0.5)
        );
        assert_eq!(
            cache_timeouts(&opts(&["/m", "-o", "content_timeout=30"]), NFS),
            timeouts(0.0, 0.0, 30.0)
        );
    }
}
