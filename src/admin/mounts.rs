//! Finding hfcachefs mounts and the options their daemons were started with, so that the
//! administration commands apply the same group and policy as the mount serving a store.
//!
//! The kernel's mount table names the store (the source) but not our options; the daemon's
//! command line (`/proc/PID/cmdline`) has them in the exact form `options::parse` reads.
//!
//! Neither is taken on trust. Anyone can make a FUSE mount of type `fuse.hfcachefs` with any
//! source through fusermount, and anyone can start a process whose command line looks like
//! a daemon's (`exec -a hfcachefs sleep ...`): only mounts the kernel records as root's
//! (`user_id=0`) count, and only processes whose real and effective uid are 0. The group
//! is read from the mount itself where it answers: hfcachefs reports its root with the
//! configured group.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::probe;
use crate::cache::walk::Node;
use crate::options::{self, Command, DEFAULT_GROUP, GroupSpec, MountOptions};
use crate::policy::{Others, Policy};
use crate::sys::{self, Name};

/// The fstype hfcachefs mounts show in the mount table.
pub const FSTYPE: &str = "fuse.hfcachefs";

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: PathBuf,
    /// `major:minor` of the mount, which names its FUSE connection.
    pub dev: (u32, u32),
    /// The filesystem's own options (for FUSE: `rw,user_id=0,group_id=0,...`).
    pub super_options: String,
}

impl MountInfo {
    /// The `user_id=` of a FUSE mount: the user the kernel recorded as mounting it.
    pub fn fuse_user_id(&self) -> Option<u32> {
        self.super_options
            .split(',')
            .find_map(|o| o.strip_prefix("user_id="))?
            .parse()
            .ok()
    }

    /// Whether this is an hfcachefs mount made by root, as only the daemon makes them (a
    /// user's fusermount mount may call itself `fuse.hfcachefs` too, with their own id).
    pub fn is_hfcachefs(&self) -> bool {
        self.fstype == FSTYPE && self.fuse_user_id() == Some(0)
    }
}

/// Undoes the octal escapes (`\040` for a space) of the mount table.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Three octal digits, computed wide: `\777` is not a byte and stays as it is.
        let byte = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|o| {
                u8::try_from(o.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))).ok()
            });
        match byte {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Parses the text of a mountinfo file.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            let (maj, min) = f.get(2)?.split_once(':')?;
            Some(MountInfo {
                mountpoint: unescape(f.get(4)?),
                fstype: (*f.get(dash + 1)?).to_owned(),
                source: unescape(f.get(dash + 2)?),
                dev: (maj.parse().ok()?, min.parse().ok()?),
                super_options: f
                    .get(dash + 3)
                    .map_or_else(String::new, |o| (*o).to_owned()),
            })
        })
        .collect()
}

/// The mounts of this process's mount namespace.
pub fn mounts() -> Vec<MountInfo> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// An absolute, lexically normalised path (no filesystem access: the path may be a hung
/// mount).
pub fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The directory tree an admin command walks for `path` (a mountpoint or a directory),
/// with the path it really is: root reads the store behind an hfcachefs mount directly
/// (faster, and the on-disk truth); any other path may lead through a tree users control,
/// so only root's symlinks are followed on the way there.
pub fn open_tree(path: &Path) -> Result<(PathBuf, Node), String> {
    let (walked, node) = match mount_at(path) {
        Some(m) if m.is_hfcachefs() && sys::is_root() => {
            let node = Node::open_trusted(&m.source);
            (m.source, node)
        }
        _ => (path.to_path_buf(), Node::open_untrusted(path)),
    };
    let node = node.map_err(|e| format!("{}: {e}", walked.display()))?;
    if !node.is_dir() {
        return Err(format!("{} is not a directory", walked.display()));
    }
    Ok((walked, node))
}

/// The topmost mount on `mountpoint` (the last one listed), if any.
pub fn mount_at(mountpoint: &Path) -> Option<MountInfo> {
    let want = absolute(mountpoint);
    mounts().into_iter().rfind(|m| m.mountpoint == want)
}

/// The hfcachefs mounts (root's) serving `store`.
pub fn mounts_of_store(store: &Path) -> Vec<MountInfo> {
    let want = std::fs::canonicalize(store).unwrap_or_else(|_| absolute(store));
    mounts()
        .into_iter()
        .filter(|m| m.is_hfcachefs() && m.source == want)
        .collect()
}

/// Whether the `Uid:` line of a `/proc/PID/status` has real and effective uid 0.
pub fn status_is_root(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| {
            let mut ids = ids.split_whitespace();
            ids.next() == Some("0") && ids.next() == Some("0")
        })
}

/// The mount options of a daemon's command line (`/proc/PID/cmdline`): `argv[0]` names
/// hfcachefs and the rest parses as a mount (a running `hfcachefs doctor /huggingface`
/// does not: `options::parse` refuses a subcommand's name).
pub fn daemon_command(cmdline: &[u8]) -> Option<MountOptions> {
    let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
    if !args.next()?.ends_with(b"hfcachefs") {
        return None;
    }
    let args: Vec<String> = args
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    match options::parse(&args) {
        Ok(Command::Mount(o)) => Some(*o),
        _ => None,
    }
}

/// Reads one file of a process's `/proc` directory through a handle on that directory, so
/// that every read is about the same process (a pid reused meanwhile makes them fail).
fn proc_file(dir: BorrowedFd<'_>, name: &str) -> Option<Vec<u8>> {
    let fd = sys::open_at(dir, &Name::new(OsStr::new(name)).ok()?, libc::O_RDONLY, 0).ok()?;
    let mut out = Vec::new();
    File::from(fd).take(1 << 20).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The options of the daemon serving `mountpoint`, read from its command line: only a
/// process running as root (real and effective uid 0) counts.
pub fn daemon_options(mountpoint: &Path) -> Option<MountOptions> {
    let want = absolute(mountpoint);
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(dir) = CString::new(format!("/proc/{pid}")).map(|p| sys::open_root(&p)) else {
            continue;
        };
        let Ok(dir) = dir else { continue };
        let Some(o) = proc_file(dir.as_fd(), "cmdline").and_then(|c| daemon_command(&c)) else {
            continue;
        };
        let mnt = if o.mountpoint.is_absolute() {
            absolute(&o.mountpoint)
        } else {
            let cwd = Name::new(OsStr::new("cwd"))
                .and_then(|n| sys::open_path(dir.as_fd(), &n))
                .and_then(|l| sys::readlink(l.as_fd()));
            match cwd {
                Ok(cwd) => absolute(&Path::new(OsStr::from_bytes(&cwd)).join(&o.mountpoint)),
                Err(_) => continue,
            }
        };
        // Read last: a uid never goes back to 0 without root, so a process that is root
        // now was root when it set the command line read above.
        let root = proc_file(dir.as_fd(), "status")
            .is_some_and(|s| status_is_root(&String::from_utf8_lossy(&s)));
        if mnt == want && root {
            return Some(o);
        }
    }
    None
}

/// The policy to apply to `store`: the group of the hfcachefs mount serving it (as the mount
/// reports its root), and the `others=` of its daemon (as root started it); else the
/// daemon's group, else the defaults. `group` (from `--group`) overrides.
pub fn policy_for_store(store: &Path, group: Option<&str>) -> Result<Policy, String> {
    let served = mounts_of_store(store);
    let daemon = served.iter().find_map(|m| daemon_options(&m.mountpoint));
    let gid = match group {
        Some(g) => GroupSpec::parse(g).resolve()?,
        None => match served
            .iter()
            .find_map(|m| probe::mount_root_gid(&m.mountpoint))
        {
            Some(gid) => gid,
            None => daemon
                .as_ref()
                .map_or_else(
                    || GroupSpec::Name(DEFAULT_GROUP.into()),
                    |o| o.group.clone(),
                )
                .resolve()?,
        },
    };
    Ok(Policy {
        gid,
        others: daemon.map_or(Others::None, |o| o.others),
    })
}

/// The private names of the hfcachefs mount serving `store` (its daemon's `private=`),
/// else the default ones.
pub fn private_names_for_store(store: &Path) -> Vec<String> {
    mounts_of_store(store)
        .iter()
        .find_map(|m| daemon_options(&m.mountpoint))
        .map_or_else(
            || {
                crate::cache::layout::PRIVATE_NAMES
                    .map(str::to_owned)
                    .to_vec()
            },
            |o| o.private,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    90 29 0:52 / /hug\\040face rw,nosuid,nodev,relatime shared:5 - fuse.hfcachefs /srv/hf\\040store rw,user_id=0\n\
                    91 29 0:53 / /fake rw,nosuid,nodev - fuse.hfcachefs /srv/hf\\040store rw,user_id=1000,group_id=1000\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert!(m[1].is_hfcachefs());
        assert_eq!(m[2].fuse_user_id(), Some(1000));
        assert!(
            !m[2].is_hfcachefs(),
            "a user's mount calling itself hfcachefs"
        );
        assert!(!m[0].is_hfcachefs());
        assert_eq!(m[1].mountpoint, PathBuf::from("/hug face"));
        assert_eq!(m[1].fstype, FSTYPE);
        assert_eq!(m[1].source, PathBuf::from("/srv/hf store"));
        assert_eq!(m[1].dev, (0, 52));
        assert_eq!(m[0].fstype, "ext3");
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(
            unescape("/\\303\\251t\\351"),
            PathBuf::from(OsStr::from_bytes(b"/\xc3\xa9t\xe9"))
        );
        assert_eq!(unescape("/x\\777"), PathBuf::from("/x\\777"));
        assert_eq!(unescape("/x\\09"), PathBuf::from("/x\\09"));
        assert_eq!(unescape("/x\\"), PathBuf::from("/x\\"));
    }

    #[test]
    fn absolute_is_lexical() {
        assert_eq!(absolute(Path::new("/a/b/../c/./")), PathBuf::from("/a/c"));
        assert_eq!(absolute(Path::new("/../x")), PathBuf::from("/x"));
    }

    #[test]
    fn daemons_are_root_processes_with_a_mount_command_line() {
        let o = daemon_command(b"/usr/local/bin/hfcachefs\0/s\0/m\0-o\0group=g,others=read\0")
            .expect("a daemon");
        assert_eq!(o.mountpoint, PathBuf::from("/m"));
        assert_eq!(o.others, Others::Read);
        assert!(daemon_command(b"hfcachefs\0doctor\0/m\0").is_none());
        assert!(daemon_command(b"hfcachefs\0fix-store\0/s\0").is_none());
        assert!(daemon_command(b"sleep\0/s\0/m\0").is_none());
        assert!(daemon_command(b"").is_none());
        let status = |uids: &str| format!("Name:\thfcachefs\nUid:\t{uids}\nGid:\t0\t0\t0\t0\n");
        assert!(status_is_root(&status("0\t0\t0\t0")));
        assert!(!status_is_root(&status("1000\t1000\t1000\t1000")));
        assert!(
            !status_is_root(&status("1000\t0\t0\t0")),
            "setuid: real uid is the user"
        );
        assert!(!status_is_root(&status("0\t1000\t1000\t1000")));
        assert!(!status_is_root("Name:\tx\n"));
    }

    #[test]
    fn group_specs() {
        assert_eq!(GroupSpec::parse("12"), GroupSpec::Id(12));
        assert_eq!(GroupSpec::parse("hf"), GroupSpec::Name("hf".into()));
    }
}
