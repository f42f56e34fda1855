//! `hfcachefs doctor [MOUNTPOINT]`: checks a shared cache the way a user or an
//! administrator would debug it, and says for each problem the exact command that fixes it.
//! Exit status 0 when healthy, 1 with findings.
//!
//! Everything that touches the mount runs in a child process with a time limit (see
//! `probe`), so a hung daemon makes doctor report it instead of hanging too. The group comes from the mount
//! itself (hfcachefs reports every entry, the root included, with its configured group);
//! the other options from the daemon's command line.
//!
//! The report ends with the mount's eviction (see `eviction`): its limits, the last run and
//! the pins, and a warning when the store is over its `max_size` now (counted by the tree
//! scan), the disk under its `min_free`, or the last eviction did not meet its goal.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use super::eviction;
use super::format::human_bytes;
use super::mounts::{self, FSTYPE, MountInfo};
use super::probe::{ANSWER_TIMEOUT, Probe, SCAN_TIMEOUT, Scan, decode_err, in_child};
use crate::cache::layout::{self, HUB, RepoType};
use crate::cache::walk;
use crate::error::CmdResult;
use crate::options::{DEFAULT_LOGFILE, MountOptions, Passthrough};
use crate::policy::{Others, Policy};
use crate::status::passthrough_from_log;
use crate::sys;

/// Free space below this share of the filesystem is reported.
const MIN_FREE_PERCENT: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One check's verdict.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// The report and the exit status of a list of checks, followed by `sections` (what the
/// mount's eviction is set to and did).
pub fn render(mnt: &Path, checks: &[Check], sections: &str) -> (String, u8) {
    let mut s = format!("hfcachefs doctor {}\n", mnt.display());
    for c in checks {
        let tag = match c.status {
            Status::Ok => "[ OK ]",
            Status::Warn => "[WARN]",
            Status::Fail => "[FAIL]",
            Status::Skip => "[SKIP]",
        };
        s += &format!("{tag} {}: {}\n", c.name, c.detail);
        if let Some(f) = &c.fix {
            s += &format!("       fix: {f}\n");
        }
    }
    s += sections;
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    if fails + warns == 0 {
        s += "healthy: no problems found\n";
        (s, 0)
    } else {
        s += &format!(
            "{} problem(s) found: {fails} failed, {warns} warning(s)\n",
            fails + warns
        );
        (s, 1)
    }
}

/// How much of the end of the daemon's log doctor reads: the last mount is near the end.
const LOG_TAIL: u64 = 1 << 20;

/// The last `limit` bytes of a regular file (from the first whole line in them), so that a
/// large log is not read into memory whole.
fn read_tail(path: &Path, limit: u64) -> io::Result<String> {
    // Non-blocking, so that a FIFO there cannot hold doctor up.
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let start = meta.len().saturating_sub(limit);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf)?;
    if start > 0 {
        let first_line_end = buf
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |i| i + 1);
        buf.drain(..first_line_end);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Whether a kernel release (`6.9.0-...`) has FUSE passthrough (6.9 and later).
pub fn kernel_has_passthrough(release: &str) -> Option<bool> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= (6, 9))
}

/// The environment check: `HF_HOME` (or at least the hub cache) must point at the mount.
pub fn env_check(
    mnt: &Path,
    hf_home: Option<&str>,
    hub_cache: Option<&str>,
    as_root: bool,
) -> Check {
    let norm = |s: &str| mounts::absolute(Path::new(s));
    let hub = mnt.join(HUB);
    let export = format!("export HF_HOME={}", mnt.display());
    let hub_ok = hub_cache.is_none_or(|h| norm(h) == hub);
    match hf_home.filter(|s| !s.is_empty()) {
        Some(h) if norm(h) == mnt && hub_ok => {
            check("environment", Status::Ok, format!("HF_HOME={h}"))
        }
        Some(h) if norm(h) == mnt => check(
            "environment",
            Status::Fail,
            format!(
                "HF_HOME={h} but HF_HUB_CACHE={} sends hub downloads elsewhere",
                hub_cache.unwrap_or_default()
            ),
        )
        .fix(
            "unset HF_HUB_CACHE HUGGINGFACE_HUB_CACHE (or set it to MNT/hub)"
                .replace("MNT", &mnt.display().to_string()),
        ),
        Some(h) => check(
            "environment",
            Status::Fail,
            format!("HF_HOME={h}: downloads do not go to the shared cache"),
        )
        .fix(export),
        None if hub_cache.is_some_and(|h| norm(h) == hub) => check(
            "environment",
            Status::Warn,
            "only HF_HUB_CACHE points at the mount: datasets and xet caches stay private",
        )
        .fix(export),
        None if as_root => check(
            "environment",
            Status::Skip,
            "HF_HOME is not set for root (members get it from /etc/profile.d/hfcachefs.sh)",
        ),
        None => check(
            "environment",
            Status::Fail,
            "HF_HOME is not set: downloads go to ~/.cache/huggingface, not the shared cache",
        )
        .fix(format!(
            "{export} (members get it at login from /etc/profile.d/hfcachefs.sh: log in again)"
        )),
    }
}

/// The membership check from the group database and this process's groups.
pub fn membership_check(user: &str, group: &str, in_database: bool, in_session: bool) -> Check {
    match (in_database, in_session) {
        (true, true) => check(
            "membership",
            Status::Ok,
            format!("{user} is in group {group}, in this session too"),
        ),
        (true, false) => check(
            "membership",
            Status::Fail,
            format!("{user} was added to group {group} but this login session predates it"),
        )
        .fix(format!("log out and log in again (or run: newgrp {group})")),
        (false, true) => check(
            "membership",
            Status::Warn,
            format!(
                "{user} has group {group} in this session only; the group database does not list it"
            ),
        )
        .fix(format!("as root: usermod -aG {group} {user}")),
        (false, false) => check(
            "membership",
            Status::Fail,
            format!("{user} is not a member of group {group}: the cache refuses access"),
        )
        .fix(format!(
            "as root: usermod -aG {group} {user}, then log in again"
        )),
    }
}

/// The verdict on secrets lying shared in the store root (found by the root scan).
pub fn secrets_verdict(exposed: &[String], store: &str) -> Check {
    if exposed.is_empty() {
        return check(
            "secrets",
            Status::Ok,
            "no token lies shared in the store; each member's is owner-only",
        );
    }
    check(
        "secrets",
        Status::Fail,
        format!(
            "exposed secret(s) every member can read: {}",
            exposed.join(", ")
        ),
    )
    .fix(format!(
        "hfcachefs fix-store {store} (moves each into its owner's private place)"
    ))
}

/// The verdict on the caller's own secrets as the mount shows them (`secrets` probe).
pub fn my_secrets_verdict(reply: Option<&str>) -> Check {
    let Some(reply) = reply else {
        return check("secrets", Status::Skip, "the mount did not answer in time");
    };
    let exposed: Vec<&str> = reply
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("exposed"))
        .collect();
    let mine: Vec<&str> = reply
        .lines()
        .filter(|l| l.ends_with(" private"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    if !exposed.is_empty() {
        return check(
            "secrets",
            Status::Fail,
            format!("shared, not yours alone: {}", exposed.join("; ")),
        )
        .fix("ask an administrator to mount the current hfcachefs and run: hfcachefs fix-store STORE");
    }
    let detail = if mine.is_empty() {
        "no token of yours here (hf auth login stores it owner-only)".to_owned()
    } else {
        format!("{} yours alone (owner-only)", mine.join(", "))
    };
    check("secrets", Status::Ok, detail)
}

/// Everything the checks share.
struct Doctor {
    mnt: PathBuf,
    root: bool,
    mount: Option<MountInfo>,
    daemon: Option<MountOptions>,
    probe: Option<Probe>,
    /// What the tree scan counted of the store by a size goal's count, and whether it
    /// counted all of it.
    store_bytes: Option<(u64, bool)>,
    checks: Vec<Check>,
    /// The eviction section.
    eviction: String,
}

impl Doctor {
    fn push(&mut self, c: Check) {
        self.checks.push(c);
    }

    fn mnt_s(&self) -> String {
        self.mnt.display().to_string()
    }

    fn check_mounted(&mut self) {
        let m = self.mnt_s();
        let c = match &self.mount {
            None => check("mounted", Status::Fail, format!("{m} is not mounted")).fix(format!(
                "mount {m} (given its fstab line; scripts/install.sh adds one), or: mount -t fuse.hfcachefs /var/lib/hfcachefs/store {m} -o group=hf-users"
            )),
            Some(mi) if mi.fstype == FSTYPE && !mi.is_hfcachefs() => check(
                "mounted",
                Status::Fail,
                format!(
                    "{m} is a {FSTYPE} mount made by uid {}, not by root: not the shared cache",
                    mi.fuse_user_id()
                        .map_or_else(|| "unknown".to_owned(), |u| u.to_string())
                ),
            )
            .fix(format!("umount {m}, then mount {m} as root")),
            Some(mi) if mi.fstype != FSTYPE => check(
                "mounted",
                Status::Fail,
                format!("{m} is a {} mount, not hfcachefs", mi.fstype),
            )
            .fix(format!("umount {m}, then mount {m} (hfcachefs)")),
            Some(mi) => check(
                "mounted",
                Status::Ok,
                format!("{m} is {FSTYPE}, store {}", mi.source.display()),
            ),
        };
        self.push(c);
    }

    fn check_answering(&mut self) {
        let Some(mi) = self.mount.clone().filter(MountInfo::is_hfcachefs) else {
            return;
        };
        let m = self.mnt_s();
        let conn = (mi.dev.0 << 20) | mi.dev.1;
        let start = Instant::now();
        let reply = in_child(
            &[OsStr::new("answer"), self.mnt.as_os_str()],
            ANSWER_TIMEOUT,
        );
        let c = match reply.as_deref().and_then(Probe::decode) {
            Some(Ok(p)) => {
                self.probe = Some(p);
                check(
                    "answering",
                    Status::Ok,
                    format!("answered in {} ms", start.elapsed().as_millis()),
                )
            }
            Some(Err(libc::ENOTCONN)) => check(
                "answering",
                Status::Fail,
                "the daemon is gone (transport endpoint is not connected)",
            )
            .fix(format!("umount {m} && mount {m}")),
            Some(Err(e)) => check(
                "answering",
                Status::Fail,
                format!("{m}: {}", io::Error::from_raw_os_error(e)),
            )
            .fix(format!("umount {m} && mount {m}")),
            None => check(
                "answering",
                Status::Fail,
                format!(
                    "no answer within {} s: the daemon is hung",
                    ANSWER_TIMEOUT.as_secs()
                ),
            )
            .fix(format!(
                "echo 1 > /sys/fs/fuse/connections/{conn}/abort; umount -l {m}; mount {m}"
            )),
        };
        self.push(c);
    }

    /// The group: as the mount reports it, else as the daemon was told.
    fn group(&mut self) -> Option<u32> {
        if let Some(p) = &self.probe {
            return Some(p.root_gid);
        }
        let spec = self.daemon.as_ref()?.group.clone();
        spec.resolve().ok()
    }

    fn check_group(&mut self) -> Option<(u32, String)> {
        let Some(gid) = self.group() else {
            self.push(check(
                "group",
                Status::Skip,
                "unknown: the mount did not answer and no daemon was found",
            ));
            return None;
        };
        match sys::group_by_gid(gid) {
            Ok(Some(g)) => {
                self.push(check(
                    "group",
                    Status::Ok,
                    format!("group {} (gid {gid}) exists", g.name),
                ));
                Some((gid, g.name))
            }
            Ok(None) => {
                self.push(
                    check(
                        "group",
                        Status::Fail,
                        format!("the mount's group id {gid} has no group"),
                    )
                    .fix(format!("groupadd -g {gid} hf-users")),
                );
                None
            }
            Err(e) => {
                self.push(check(
                    "group",
                    Status::Fail,
                    format!("cannot read the group database: {e}"),
                ));
                None
            }
        }
    }

    fn check_membership(&mut self, gid: u32, group: &str) {
        if self.root {
            self.push(check(
                "membership",
                Status::Skip,
                "running as root, which needs no membership (members: run doctor as yourself)",
            ));
            return;
        }
        let uid = sys::real_uid();
        let (user, primary) = match sys::user_by_uid(uid) {
            Ok(Some(u)) => u,
            _ => (uid.to_string(), u32::MAX),
        };
        let listed = sys::group_by_gid(gid)
            .ok()
            .flatten()
            .is_some_and(|g| g.members.contains(&user));
        let in_session = sys::process_groups().is_ok_and(|g| g.contains(&gid));
        self.push(membership_check(
            &user,
            group,
            listed || primary == gid,
            in_session,
        ));
    }

    fn check_env(&mut self) {
        let home = std::env::var("HF_HOME").ok();
        let hub = std::env::var("HF_HUB_CACHE")
            .or_else(|_| std::env::var("HUGGINGFACE_HUB_CACHE"))
            .ok();
        let c = env_check(&self.mnt, home.as_deref(), hub.as_deref(), self.root);
        self.push(c);
    }

    fn check_store(&mut self) {
        let Some(mi) = self.mount.clone().filter(MountInfo::is_hfcachefs) else {
            return;
        };
        let store = mi.source;
        let s = store.display().to_string();
        let meta = match std::fs::symlink_metadata(&store) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                self.push(check(
                    "store",
                    Status::Skip,
                    format!("{s}: cannot be read as this user (run doctor as root)"),
                ));
                return;
            }
            Err(e) => {
                self.push(check("store", Status::Fail, format!("{s}: {e}")));
                return;
            }
        };
        let mode = meta.mode() & 0o7777;
        if meta.uid() != 0 || mode & 0o077 != 0 || !meta.is_dir() {
            self.push(
                check(
                    "store",
                    Status::Fail,
                    format!(
                        "{s} is owned by uid {} with mode {mode:04o}: users could reach it without hfcachefs",
                        meta.uid()
                    ),
                )
                .fix(format!("chown root:root {s} && chmod 0700 {s}")),
            );
            return;
        }
        // A parent others can write to could have the store swapped underneath the daemon.
        let weak = store.ancestors().skip(1).find(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| {
                let mode = m.mode();
                m.uid() != 0 || (mode & 0o022 != 0 && mode & 0o1000 == 0)
            })
        });
        let c = match weak {
            Some(p) => check(
                "store",
                Status::Warn,
                format!(
                    "{s} is 0700 root, but its parent {} can be changed by users",
                    p.display()
                ),
            )
            .fix(format!(
                "chown root:root {0} && chmod go-w {0}",
                p.display()
            )),
            None => check("store", Status::Ok, format!("{s} is 0700 root")),
        };
        self.push(c);
        if !self.root {
            // Closed to members, as the store.
            return;
        }
        let records = store.join(layout::STATE_DIR);
        let found = match std::fs::symlink_metadata(&records) {
            Ok(m) => Ok(Some((m.is_dir(), m.uid(), m.mode() & 0o7777))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        let c = records_verdict(&records.display().to_string(), &self.mnt_s(), found);
        self.push(c);
    }

    fn check_passthrough(&mut self) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let release = release.trim().to_owned();
        if self
            .daemon
            .as_ref()
            .is_some_and(|o| o.passthrough == Passthrough::Off)
        {
            self.push(check(
                "passthrough",
                Status::Ok,
                "disabled by the mount's passthrough=off",
            ));
            return;
        }
        let c = match kernel_has_passthrough(&release) {
            Some(false) => check(
                "passthrough",
                Status::Warn,
                format!(
                    "kernel {release} has no FUSE passthrough (needs 6.9): file I/O goes through the daemon, slower"
                ),
            )
            .fix("upgrade the kernel to 6.9 or later"),
            None => check(
                "passthrough",
                Status::Skip,
                format!("cannot tell from kernel release '{release}'"),
            ),
            Some(true) => {
                let logfile = self
                    .daemon
                    .as_ref()
                    .map_or(PathBuf::from(DEFAULT_LOGFILE), |o| o.logfile.clone());
                let from_log = match (&self.mount, read_tail(&logfile, LOG_TAIL)) {
                    (Some(mi), Ok(log)) => passthrough_from_log(&log, &mi.source, &self.mnt),
                    _ => None,
                };
                match from_log {
                    Some(Ok(())) => check(
                        "passthrough",
                        Status::Ok,
                        format!("kernel {release}; the daemon's log says it is in use"),
                    ),
                    Some(Err(line)) => check(
                        "passthrough",
                        Status::Warn,
                        format!("kernel {release}, but the daemon does not use it: {line}"),
                    )
                    .fix(
                        "put the store on a plain local filesystem (not overlayfs or another FUSE mount), then remount",
                    ),
                    None => check(
                        "passthrough",
                        Status::Ok,
                        format!(
                            "kernel {release} supports it (the daemon's log {} did not confirm)",
                            logfile.display()
                        ),
                    ),
                }
            }
        };
        self.push(c);
    }

    fn check_flock(&mut self) {
        if self.probe.is_none() {
            return;
        }
        let m = self.mnt_s();
        let reply = in_child(&[OsStr::new("flock"), self.mnt.as_os_str()], ANSWER_TIMEOUT);
        let r = reply.map(|out| match out.trim() {
            "ok 1" => Ok(true),
            "ok 0" => Ok(false),
            other => Err(io::Error::from_raw_os_error(
                decode_err(other).unwrap_or(libc::EIO),
            )),
        });
        let c = match r {
            Some(Ok(true)) => check(
                "flock",
                Status::Ok,
                "a lock taken through the mount excludes another open and is released",
            ),
            Some(Ok(false)) => check(
                "flock",
                Status::Fail,
                "two opens through the mount did not exclude each other",
            )
            .fix(format!(
                "umount {m} && mount {m} with the installed hfcachefs"
            )),
            Some(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => check(
                "flock",
                Status::Fail,
                format!("cannot create a file in {m}: permission denied"),
            )
            .fix("see the membership check"),
            Some(Err(e)) => check("flock", Status::Fail, format!("flock through {m}: {e}")),
            None => check(
                "flock",
                Status::Fail,
                format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()),
            )
            .fix(format!("umount -l {m}; mount {m}")),
        };
        self.push(c);
    }

    /// As a member: the caller's token, if any, is theirs alone through the mount.
    fn check_my_secrets(&mut self) {
        if self.root || self.probe.is_none() {
            return;
        }
        let reply = in_child(
            &[OsStr::new("secrets"), self.mnt.as_os_str()],
            ANSWER_TIMEOUT,
        );
        self.push(my_secrets_verdict(reply.as_deref()));
    }

    fn check_space(&mut self) {
        let Some(p) = &self.probe else { return };
        let (total, free) = (p.total, p.free);
        if total == 0 {
            return;
        }
        let pct = free * 100 / total;
        let detail = format!(
            "{} free of {} ({pct}%)",
            human_bytes(free),
            human_bytes(total)
        );
        let c = if pct < MIN_FREE_PERCENT {
            check("free space", Status::Warn, detail).fix(format!(
                "see what is large with: hfcachefs stats {0}; remove unused revisions with: HF_HOME={0} hf cache delete",
                self.mnt_s()
            ))
        } else {
            check("free space", Status::Ok, detail)
        };
        self.push(c);
    }

    /// Stale temporary files, and as root, entries that do not follow the policy.
    fn check_tree(&mut self, gid: Option<u32>) {
        let Some(mi) = self.mount.clone().filter(MountInfo::is_hfcachefs) else {
            return;
        };
        let Some((root, policy)) = self.scan_target(&mi, gid) else {
            return;
        };
        let s = match scan(root, policy.as_ref()) {
            Ok(s) => s,
            Err(c) => return self.push(c),
        };
        self.store_bytes = Some((s.store_bytes, !s.capped && s.too_deep == 0));
        self.push(temporary_files_check(&self.mnt, &s));
        if let Some(c) = nesting_check(&self.mnt, &s) {
            self.push(c);
        }
        for c in links_checks(&self.mnt, &s) {
            self.push(c);
        }
        let store = mi.source.display().to_string();
        if let Some(c) = xet_check(&store, &s, policy.is_some()) {
            self.push(c);
        }
        if policy.is_some() {
            self.push(secrets_verdict(
                &s.exposed,
                &mi.source.display().to_string(),
            ));
        }
        match policy {
            Some(_) => self.push(store_policy_check(&mi.source, &s)),
            None if !self.root => self.push(check(
                "store policy",
                Status::Skip,
                "run doctor as root to check the store's entries",
            )),
            None => {}
        }
    }

    /// The mount's eviction: its limits, its last run and the pins (as root), as a section
    /// of the report; a warning when the store is over its `max_size` now, the disk under
    /// its `min_free`, or the last eviction did not meet its goal.
    fn check_eviction(&mut self) {
        let Some(mi) = self.mount.clone().filter(MountInfo::is_hfcachefs) else {
            return;
        };
        let store = if self.root {
            walk::Node::open_trusted(&mi.source).ok()
        } else {
            None
        };
        let ev = eviction::from(self.daemon.as_ref(), store.as_ref());
        self.eviction = ev.section();
        // A store counted in part is known to be over its limit, never within it.
        let bytes = self
            .store_bytes
            .and_then(|(b, whole)| (whole || ev.max_size.is_some_and(|max| b > max)).then_some(b));
        let disk = self.probe.map(|p| (p.free, p.total));
        let problems = ev.problems(bytes, disk);
        let m = self.mnt_s();
        for p in &problems {
            let (what, fix) = p.describe(&m);
            self.push(check("eviction", Status::Warn, what).fix(fix));
        }
        if !problems.is_empty() {
            return;
        }
        let c = match (ev.max_size, ev.min_free, bytes) {
            (None, None, _) => check("eviction", Status::Ok, "no limit set"),
            (Some(max), _, None) => check(
                "eviction",
                Status::Skip,
                format!(
                    "the store was not counted whole; as root, hfcachefs gc {m} --max-size {max} --dry-run counts it"
                ),
            ),
            (_, _, b) => check(
                "eviction",
                Status::Ok,
                match b {
                    Some(b) => format!(
                        "within {} (the store takes {})",
                        ev.limits(),
                        human_bytes(b)
                    ),
                    None => format!("within {}", ev.limits()),
                },
            ),
        };
        self.push(c);
    }

    /// What the tree checks scan: as root, the store, against the policy (when the group is
    /// known); as a member, the mount, if it answers.
    fn scan_target(&self, mi: &MountInfo, gid: Option<u32>) -> Option<(PathBuf, Option<Policy>)> {
        if self.root {
            let others = self.daemon.as_ref().map_or(Others::None, |o| o.others);
            Some((mi.source.clone(), gid.map(|gid| Policy { gid, others })))
        } else if self.probe.is_some() {
            Some((self.mnt.clone(), None))
        } else {
            None
        }
    }
}

/// Scans the tree at `root` in a child process (see `probe`); what went wrong as a check.
fn scan(root: PathBuf, policy: Option<&Policy>) -> Result<Scan, Check> {
    let mut args = vec![OsString::from("scan"), root.into_os_string()];
    if let Some(p) = policy {
        args.push(p.gid.to_string().into());
        args.push(p.others.as_str().into());
    }
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    let skip = |detail: String| check("temporary files", Status::Skip, detail);
    match in_child(&args, SCAN_TIMEOUT)
        .as_deref()
        .and_then(Scan::decode)
    {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => Err(skip(format!(
            "cannot read the cache: {}",
            io::Error::from_raw_os_error(e)
        ))),
        None => Err(skip(format!(
            "the scan took over {} s",
            SCAN_TIMEOUT.as_secs()
        ))),
    }
}

/// Says that the counts are of a sample when the scan stopped at its cap.
fn sample(s: &Scan) -> String {
    if s.capped {
        format!(" (in the first {} entries)", s.entries)
    } else {
        String::new()
    }
}

/// A path quoted for a shell command line.
fn shell_quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// The verdict on temporary files older than a day: abandoned downloads, with the command
/// that removes them through the mount `mnt`.
pub fn temporary_files_check(mnt: &Path, s: &Scan) -> Check {
    let sample = sample(s);
    if s.stale_count == 0 {
        return check(
            "temporary files",
            Status::Ok,
            format!("none older than a day{sample}"),
        );
    }
    // Through the mount, as a member: root deleting by path in a tree members control
    // would follow the symlinks they put there.
    let quoted: Vec<String> = s
        .stale
        .iter()
        .map(|(rel, _)| shell_quoted(&mnt.join(rel)))
        .collect();
    let more = match s.stale_count.saturating_sub(s.stale.len() as u64) {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    check(
        "temporary files",
        Status::Warn,
        format!(
            "{} older than a day ({}){sample}: abandoned downloads",
            s.stale_count,
            human_bytes(s.stale_bytes)
        ),
    )
    .fix(format!(
        "if no download is running, as a member of the group (not as root): rm -f -- {}{more}",
        quoted.join(" ")
    ))
}

/// The verdict on directories nested too deep to scan below, if there are any.
pub fn nesting_check(mnt: &Path, s: &Scan) -> Option<Check> {
    if s.too_deep == 0 {
        return None;
    }
    let first = mnt.join(&s.first_too_deep);
    Some(
        check(
            "nesting",
            Status::Warn,
            format!(
                "{} directories {} levels down, e.g. {}: what is below them was not scanned",
                s.too_deep,
                walk::MAX_DEPTH,
                first.display()
            ),
        )
        .fix(format!(
            "nesting that deep is no cache: as a member of the group (not as root), remove it: rm -r -- {}",
            shell_quoted(&first)
        )),
    )
}

/// The Hugging Face repo id and `hf download` type flag of a repo directory
/// (`datasets--org--name` -> `org/name`, ` --repo-type dataset`).
pub fn repo_id(dir: &str) -> (String, &'static str) {
    match layout::repo_id(dir) {
        Some((RepoType::Model, id)) => (id, ""),
        Some((RepoType::Dataset, id)) => (id, " --repo-type dataset"),
        Some((RepoType::Space, id)) => (id, " --repo-type space"),
        None => (dir.to_owned(), ""),
    }
}

/// "(and N more)" when a list names fewer than it counts.
fn and_more(named: usize, count: u64) -> String {
    match count.saturating_sub(named as u64) {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    }
}

/// The verdicts on the links of the hub cache: links that dangle, shared payloads no repo
/// links to, and `.refs` that disagree with the links. Skipped when the scan stopped at
/// its cap (part of the tree would make whole ones look broken).
pub fn links_checks(mnt: &Path, s: &Scan) -> Vec<Check> {
    if s.capped {
        return vec![check(
            "links",
            Status::Skip,
            format!(
                "the scan stopped after {} entries: links and payloads not checked",
                s.entries
            ),
        )];
    }
    vec![
        dangling_check(mnt, s),
        orphan_payloads_check(mnt, s),
        payload_refs_check(mnt, s),
    ]
}

/// Links that lead nowhere: a snapshot entry whose blob is gone, a repo blob whose shared
/// payload is gone. Downloading the revision again mends them.
pub fn dangling_check(mnt: &Path, s: &Scan) -> Check {
    if s.dangling_count == 0 {
        return check(
            "dangling links",
            Status::Ok,
            "every snapshot entry reaches its blob, every blob link its payload",
        );
    }
    let named: Vec<String> = s
        .dangling
        .iter()
        .take(3)
        .map(|d| {
            format!(
                "{} ({} missing)",
                mnt.join(&d.rel).display(),
                d.missing.as_str()
            )
        })
        .collect();
    let m = mnt.display();
    let mut fixes: Vec<String> = s
        .redownload
        .iter()
        .map(|(repo, rev)| {
            let (id, kind) = repo_id(repo);
            format!("HF_HOME={m} hf download {id} --revision {rev}{kind}")
        })
        .collect();
    // Blob links no snapshot uses: nothing to download them for.
    let unused: Vec<String> = s
        .dangling
        .iter()
        .filter(|d| d.revision.is_none())
        .map(|d| shell_quoted(&mnt.join(&d.rel)))
        .collect();
    if !unused.is_empty() {
        fixes.push(format!("rm -f -- {}", unused.join(" ")));
    }
    check(
        "dangling links",
        Status::Fail,
        format!(
            "{} link(s) lead nowhere, e.g. {}{}",
            s.dangling_count,
            named.join(", "),
            and_more(named.len(), s.dangling_count)
        ),
    )
    .fix(format!(
        "as a member of the group, download again what they belong to: {}",
        fixes.join("; ")
    ))
}

/// Shared payloads no repo links to: space `hf cache prune` frees (or, for those it leaves
/// alone, removing them by hand through the mount).
pub fn orphan_payloads_check(mnt: &Path, s: &Scan) -> Check {
    if s.orphan_count == 0 {
        return check(
            "orphan payloads",
            Status::Ok,
            "every shared payload is linked by a repo",
        );
    }
    let named: Vec<String> = s
        .orphans
        .iter()
        .take(3)
        .map(|o| mnt.join(&o.rel).display().to_string())
        .collect();
    let m = mnt.display();
    let mut fixes = Vec::new();
    if s.orphan_prunable > 0 {
        fixes.push(format!("HF_HOME={m} hf cache prune"));
    }
    // Payloads prune leaves alone (no readable .refs, or no marked store): by hand.
    let by_hand: Vec<String> = s
        .orphans
        .iter()
        .filter(|o| !o.prunable)
        .map(|o| shell_quoted(&mnt.join(&o.rel)))
        .collect();
    if !by_hand.is_empty() {
        let more = and_more(by_hand.len(), s.orphan_count - s.orphan_prunable);
        fixes.push(format!("rm -f -- {}{more}", by_hand.join(" ")));
    }
    check(
        "orphan payloads",
        Status::Warn,
        format!(
            "{} shared payload(s) ({}) no repo links to, e.g. {}{}; {} of them hf cache prune deletes",
            s.orphan_count,
            human_bytes(s.orphan_bytes),
            named.join(", "),
            and_more(named.len(), s.orphan_count),
            s.orphan_prunable
        ),
    )
    .fix(format!(
        "if no download is running, as a member of the group (not as root): {}",
        fixes.join("; ")
    ))
}

/// `.refs` that do not list a repo link to their payload: `hf cache prune` and `hf cache
/// rm` trust them, and delete a payload whose `.refs` names no live link.
pub fn payload_refs_check(mnt: &Path, s: &Scan) -> Check {
    let stale = match s.stale_lines {
        0 => String::new(),
        n => format!("; {n} line(s) name links that are gone (harmless)"),
    };
    if s.unlisted_count == 0 {
        return check(
            "payload refs",
            Status::Ok,
            format!("every link to a shared payload is listed in its .refs{stale}"),
        );
    }
    let appends: Vec<String> = s
        .unlisted
        .iter()
        .map(|u| {
            format!(
                "printf '%s\\n' {} >> {}",
                shell_quoted(Path::new(&u.line)),
                shell_quoted(&mnt.join(&u.refs))
            )
        })
        .collect();
    let risk = match s.at_risk {
        0 => String::new(),
        n => format!(
            "; hf cache prune would delete {n} payload(s) repos still use, leaving their links dangling"
        ),
    };
    let status = if s.at_risk > 0 {
        Status::Fail
    } else {
        Status::Warn
    };
    let first = s
        .unlisted
        .first()
        .map(|u| format!(", e.g. {} lacks {}", mnt.join(&u.refs).display(), u.line))
        .unwrap_or_default();
    check(
        "payload refs",
        status,
        format!(
            "{} repo link(s) missing from their payload's .refs{first}{risk}{stale}",
            s.unlisted_count
        ),
    )
    .fix(format!(
        "as a member of the group: {}{}",
        appends.join("; "),
        and_more(appends.len(), s.unlisted_count)
    ))
}

/// The verdict on `xet/`: hf_xet creates logs and staging files in its directories, and a
/// member who cannot gets `os error 13`. As root the store's directories are checked
/// against the policy (through the mount they may look writable while the store says
/// otherwise); as a member, by creating a file in each. `None` when `xet/` was not seen.
pub fn xet_check(store: &str, s: &Scan, as_root: bool) -> Option<Check> {
    if s.xet_blocked_count == 0 {
        return None;
    }
    let how = if as_root {
        "directories in xet/ not setgid, group-owned and group-writable in the store"
    } else {
        "directories in xet/ you cannot create files in"
    };
    let fix = if as_root {
        format!("hfcachefs fix-store {store}")
    } else {
        format!("ask an administrator to run: hfcachefs fix-store {store}")
    };
    Some(
        check(
            "xet",
            Status::Fail,
            format!(
                "{} {how} (hf_xet fails there with os error 13), e.g. {}{}",
                s.xet_blocked_count,
                s.xet_blocked.join(", "),
                and_more(s.xet_blocked.len(), s.xet_blocked_count)
            ),
        )
        .fix(fix),
    )
}

/// The verdict on the store's entries against the group and mode policy.
pub fn store_policy_check(store: &Path, s: &Scan) -> Check {
    let sample = sample(s);
    if s.stray_count == 0 {
        return check(
            "store policy",
            Status::Ok,
            format!(
                "{} entries follow the group and mode policy{sample}",
                s.entries
            ),
        );
    }
    let store = store.display();
    check(
        "store policy",
        Status::Fail,
        format!(
            "{} of {} entries do not follow the group/mode policy{sample}, e.g. {}",
            s.stray_count,
            s.entries,
            s.stray.join(", ")
        ),
    )
    .fix(format!(
        "hfcachefs fix-store {store} --dry-run, then: hfcachefs fix-store {store}"
    ))
}

/// Whether the store's `.hfcachefs/` (at `dir`) can hold the records of the mount at `mnt`,
/// as the daemon requires it (`found`: whether a directory, its owner and mode; `None`:
/// missing). Without it the daemon mounts with no eviction and records no open files, so
/// `gc` could remove files open through the mount.
pub fn records_verdict(
    dir: &str,
    mnt: &str,
    found: Result<Option<(bool, u32, u32)>, String>,
) -> Check {
    const NAME: &str = "eviction records";
    let lost = "the mount runs without eviction, and gc will not know its open files";
    let remount = format!("then remount {mnt} (a mount started without it keeps no records)");
    match found {
        Ok(Some((true, 0, mode))) if mode & 0o077 == 0 => {
            check(NAME, Status::Ok, format!("{dir} is 0700 root"))
        }
        Ok(Some((true, uid, mode))) => check(
            NAME,
            Status::Warn,
            format!("{dir} is owned by uid {uid} with mode {mode:04o}, not 0700 root: {lost}"),
        )
        .fix(format!(
            "chown root:root {dir} && chmod 0700 {dir}, {remount}"
        )),
        Ok(Some((false, _, _))) => check(
            NAME,
            Status::Warn,
            format!("{dir} is not a directory: {lost}"),
        )
        .fix(format!(
            "move it away, then: mkdir -m 0700 {dir} && chown root:root {dir}, {remount}"
        )),
        Ok(None) => check(NAME, Status::Warn, format!("{dir} is missing: {lost}")).fix(format!(
            "mkdir -m 0700 {dir} && chown root:root {dir}, {remount}"
        )),
        Err(e) => check(NAME, Status::Fail, format!("{dir}: {e}")),
    }
}

/// Checks the shared cache mounted at `mnt` and prints the report.
pub fn run(mnt: &Path) -> CmdResult {
    let mnt = mounts::absolute(mnt);
    let mut d = Doctor {
        mount: mounts::mount_at(&mnt),
        daemon: mounts::daemon_options(&mnt),
        mnt,
        root: sys::is_root(),
        probe: None,
        store_bytes: None,
        checks: Vec::new(),
        eviction: String::new(),
    };
    d.check_mounted();
    d.check_answering();
    let group = d.check_group();
    if let Some((gid, name)) = &group {
        d.check_membership(*gid, name);
    }
    d.check_env();
    d.check_store();
    d.check_passthrough();
    d.check_flock();
    d.check_my_secrets();
    d.check_space();
    d.check_tree(group.map(|(gid, _)| gid));
    d.check_eviction();
    let (text, code) = render(&d.mnt, &d.checks, &d.eviction);
    print!("{text}");
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_starts_at_a_whole_line() {
        let dir = std::env::temp_dir().join(format!("hfcachefs-tail-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        std::fs::write(&dir, "first line\nsecond\nthird\n").unwrap();
        assert_eq!(
            read_tail(&dir, 1000).unwrap(),
            "first line\nsecond\nthird\n"
        );
        assert_eq!(read_tail(&dir, 10).unwrap(), "third\n");
        std::fs::remove_file(&dir).unwrap();
        assert!(read_tail(Path::new("/"), 10).is_err());
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_has_passthrough("6.18.44-fc-v669"), Some(true));
        assert_eq!(kernel_has_passthrough("6.9.0"), Some(true));
        assert_eq!(kernel_has_passthrough("6.8.12-amd64"), Some(false));
        assert_eq!(kernel_has_passthrough("5.15.0"), Some(false));
        assert_eq!(kernel_has_passthrough("garbage"), None);
    }

    #[test]
    fn environment() {
        let m = Path::new("/huggingface");
        assert_eq!(
            env_check(m, Some("/huggingface/"), None, false).status,
            Status::Ok
        );
        assert_eq!(
            env_check(m, Some("/huggingface"), Some("/huggingface/hub"), false).status,
            Status::Ok
        );
        let c = env_check(m, Some("/huggingface"), Some("/home/a/hub"), false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap_or_default().contains("unset HF_HUB_CACHE"));
        let c = env_check(m, Some("/home/a/.cache/huggingface"), None, false);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.fix.as_deref(), Some("export HF_HOME=/huggingface"));
        assert_eq!(env_check(m, None, None, false).status, Status::Fail);
        assert_eq!(env_check(m, None, None, true).status, Status::Skip);
        assert_eq!(
            env_check(m, None, Some("/huggingface/hub"), false).status,
            Status::Warn
        );
    }

    #[test]
    fn secrets() {
        assert_eq!(secrets_verdict(&[], "/s").status, Status::Ok);
        let c = secrets_verdict(&["token of alice (uid 1000)".into()], "/s");
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("fix-store /s"));
        let mine = my_secrets_verdict(Some("token private\nstored_tokens absent\n"));
        assert_eq!(mine.status, Status::Ok);
        assert!(mine.detail.contains("token yours alone"));
        let bad = my_secrets_verdict(Some("token exposed 1001 660\nstored_tokens absent\n"));
        assert_eq!(bad.status, Status::Fail);
        assert_eq!(my_secrets_verdict(None).status, Status::Skip);
    }

    #[test]
    fn membership() {
        assert_eq!(membership_check("a", "g", true, true).status, Status::Ok);
        let c = membership_check("a", "g", true, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap_or_default().contains("log in again"));
        let c = membership_check("a", "g", false, false);
        assert!(c.fix.unwrap_or_default().contains("usermod -aG g a"));
        assert_eq!(membership_check("a", "g", false, true).status, Status::Warn);
    }

    #[test]
    fn stale_temporary_files_get_a_command_through_the_mount() {
        let m = Path::new("/hf");
        let c = temporary_files_check(m, &Scan::default());
        assert_eq!(
            (c.status, c.detail.as_str()),
            (Status::Ok, "none older than a day")
        );
        let capped = Scan {
            entries: 7,
            capped: true,
            ..Scan::default()
        };
        let c = temporary_files_check(m, &capped);
        assert!(
            c.detail.ends_with("(in the first 7 entries)"),
            "{}",
            c.detail
        );
        let s = Scan {
            stale: vec![("hub/it's.incomplete".into(), 2048)],
            stale_count: 3,
            stale_bytes: 4096,
            ..Scan::default()
        };
        let c = temporary_files_check(m, &s);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.starts_with("3 older than a day (4.0 KiB)"),
            "{}",
            c.detail
        );
        assert_eq!(
            c.fix.as_deref(),
            Some(
                "if no download is running, as a member of the group (not as root): \
                 rm -f -- '/hf/hub/it'\\''s.incomplete' (and 2 more)"
            )
        );
    }

    #[test]
    fn deep_nesting_is_a_warning_only_when_found() {
        let m = Path::new("/hf");
        assert!(nesting_check(m, &Scan::default()).is_none());
        let s = Scan {
            too_deep: 2,
            first_too_deep: "datasets/d/d".into(),
            ..Scan::default()
        };
        let c = nesting_check(m, &s).unwrap();
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail
                .starts_with("2 directories 128 levels down, e.g. /hf/datasets/d/d")
        );
        assert!(c.fix.unwrap().ends_with("rm -r -- '/hf/datasets/d/d'"));
    }

    #[test]
    fn records_must_be_a_root_only_directory() {
        let v = |found| records_verdict("/s/.hfcachefs", "/hf", found);
        assert_eq!(v(Ok(Some((true, 0, 0o700)))).status, Status::Ok);
        for (found, fix) in [
            (Some((true, 0, 0o755)), "chmod 0700 /s/.hfcachefs"),
            (Some((true, 1000, 0o700)), "chown root:root /s/.hfcachefs"),
            (Some((false, 0, 0o600)), "move it away"),
            (None, "mkdir -m 0700 /s/.hfcachefs"),
        ] {
            let c = v(Ok(found));
            assert_eq!(c.status, Status::Warn, "{found:?}");
            assert!(
                c.detail.contains("gc will not know its open files"),
                "{}",
                c.detail
            );
            let f = c.fix.unwrap();
            assert!(f.contains(fix) && f.contains("remount /hf"), "{f}");
        }
        assert_eq!(v(Err("EACCES".into())).status, Status::Fail);
    }

    #[test]
    fn stray_store_entries_fail_with_fix_store() {
        let store = Path::new("/srv/store");
        let ok = Scan {
            entries: 5,
            ..Scan::default()
        };
        let c = store_policy_check(store, &ok);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.starts_with("5 entries follow"));
        let s = Scan {
            entries: 5,
            stray: vec!["hub (group 0, mode 0755)".into()],
            stray_count: 1,
            ..Scan::default()
        };
        let c = store_policy_check(store, &s);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("1 of 5 entries") && c.detail.contains("e.g. hub (group 0"));
        assert_eq!(
            c.fix.as_deref(),
            Some("hfcachefs fix-store /srv/store --dry-run, then: hfcachefs fix-store /srv/store")
        );
    }

    #[test]
    fn report_and_exit_status() {
        let ok = [
            check("mounted", Status::Ok, "fine"),
            check("x", Status::Skip, "n/a"),
        ];
        let (text, code) = render(Path::new("/m"), &ok, "");
        assert_eq!(code, 0);
        assert!(text.contains("[ OK ] mounted: fine") && text.contains("healthy"));
        let bad = [
            check("a", Status::Warn, "low"),
            check("b", Status::Fail, "broken").fix("do it"),
        ];
        let (text, code) = render(Path::new("/m"), &bad, "");
        assert_eq!(code, 1);
        assert!(text.contains("[FAIL] b: broken\n       fix: do it"));
        assert!(text.contains("2 problem(s) found: 1 failed, 1 warning(s)"));
    }

    #[test]
    fn repo_ids_for_hf_download() {
        assert_eq!(repo_id("models--org--name"), ("org/name".into(), ""));
        assert_eq!(repo_id("models--gpt2"), ("gpt2".into(), ""));
        assert_eq!(
            repo_id("datasets--o--d"),
            ("o/d".into(), " --repo-type dataset")
        );
        assert_eq!(repo_id("spaces--o--s").1, " --repo-type space");
    }

    #[test]
    fn dangling_links_get_a_download_per_revision() {
        use crate::cache::links::{Dangling, Missing};
        let m = Path::new("/hf");
        let c = dangling_check(m, &Scan::default());
        assert_eq!(c.status, Status::Ok);
        let s = Scan {
            dangling: vec![
                Dangling {
                    repo: "models--o--m".into(),
                    revision: Some("c1".into()),
                    rel: "hub/models--o--m/snapshots/c1/w.bin".into(),
                    missing: Missing::Payload,
                },
                Dangling {
                    repo: "datasets--o--d".into(),
                    revision: None,
                    rel: "hub/datasets--o--d/blobs/e".into(),
                    missing: Missing::Payload,
                },
            ],
            dangling_count: 5,
            redownload: vec![
                ("datasets--o--d".into(), "c2".into()),
                ("models--o--m".into(), "c1".into()),
            ],
            ..Scan::default()
        };
        let c = dangling_check(m, &s);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.starts_with(
                "5 link(s) lead nowhere, e.g. /hf/hub/models--o--m/snapshots/c1/w.bin (payload missing)"
            ),
            "{}",
            c.detail
        );
        assert!(c.detail.ends_with("(and 3 more)"), "{}", c.detail);
        assert_eq!(
            c.fix.as_deref(),
            Some(
                "as a member of the group, download again what they belong to: \
                 HF_HOME=/hf hf download o/d --revision c2 --repo-type dataset; \
                 HF_HOME=/hf hf download o/m --revision c1; \
                 rm -f -- '/hf/hub/datasets--o--d/blobs/e'"
            )
        );
    }

    #[test]
    fn orphan_payloads_are_pruned_or_removed_by_hand() {
        use crate::cache::links::Orphan;
        let m = Path::new("/hf");
        assert_eq!(
            orphan_payloads_check(m, &Scan::default()).status,
            Status::Ok
        );
        let s = Scan {
            orphans: vec![
                Orphan {
                    rel: "hub/blobs/ab/abc".into(),
                    size: 2048,
                    prunable: true,
                },
                Orphan {
                    rel: "hub/blobs/cd/cde".into(),
                    size: 2048,
                    prunable: false,
                },
            ],
            orphan_count: 2,
            orphan_bytes: 4096,
            orphan_prunable: 1,
            ..Scan::default()
        };
        let c = orphan_payloads_check(m, &s);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.starts_with("2 shared payload(s) (4.0 KiB) no repo links to, e.g. /hf/hub/blobs/ab/abc, /hf/hub/blobs/cd/cde; 1 of them"),
            "{}",
            c.detail
        );
        assert_eq!(
            c.fix.as_deref(),
            Some(
                "if no download is running, as a member of the group (not as root): \
                 HF_HOME=/hf hf cache prune; rm -f -- '/hf/hub/blobs/cd/cde'"
            )
        );
    }

    #[test]
    fn refs_missing_links_are_appended_and_fail_when_prune_would_delete() {
        use crate::cache::links::Unlisted;
        let m = Path::new("/hf");
        let ok = Scan {
            stale_lines: 2,
            ..Scan::default()
        };
        let c = payload_refs_check(m, &ok);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail
                .ends_with("2 line(s) name links that are gone (harmless)")
        );
        let mut s = Scan {
            unlisted: vec![Unlisted {
                refs: "hub/blobs/ab/abc.refs".into(),
                line: "models--o--m/blobs/e".into(),
            }],
            unlisted_count: 1,
            ..Scan::default()
        };
        let c = payload_refs_check(m, &s);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(
            c.fix.as_deref(),
            Some(
                "as a member of the group: printf '%s\\n' 'models--o--m/blobs/e' >> '/hf/hub/blobs/ab/abc.refs'"
            )
        );
        s.at_risk = 1;
        let c = payload_refs_check(m, &s);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .contains("hf cache prune would delete 1 payload(s) repos still use")
        );
    }

    #[test]
    fn xet_directories_members_cannot_create_in() {
        assert!(xet_check("/s", &Scan::default(), true).is_none());
        let s = Scan {
            xet_blocked: vec!["xet/logs (group 0, mode 0755)".into()],
            xet_blocked_count: 1,
            ..Scan::default()
        };
        let c = xet_check("/s", &s, true).unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("e.g. xet/logs (group 0, mode 0755)"));
        assert_eq!(c.fix.as_deref(), Some("hfcachefs fix-store /s"));
        let c = xet_check("/s", &s, false).unwrap();
        assert!(c.fix.unwrap().starts_with("ask an administrator"));
    }

    #[test]
    fn a_capped_scan_checks_no_links() {
        let s = Scan {
            capped: true,
            entries: 9,
            dangling_count: 1,
            ..Scan::default()
        };
        let c = links_checks(Path::new("/hf"), &s);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, Status::Skip);
        assert_eq!(links_checks(Path::new("/hf"), &Scan::default()).len(), 3);
    }
}
