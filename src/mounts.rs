//! Finding hfcachefs mounts and the options their daemons were started with, so that the
//! administration commands apply the same group and policy as the mount serving a store.
//!
//! The kernel's mount table names the store (the source) but not our options; the daemon's
//! command line (`/proc/PID/cmdline`) has them in the exact form `options::parse` reads.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::options::{self, Command, DEFAULT_GROUP, GroupSpec, MountOptions};
use crate::policy::{Others, Policy};

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

/// The topmost mount on `mountpoint` (the last one listed), if any.
pub fn mount_at(mountpoint: &Path) -> Option<MountInfo> {
    let want = absolute(mountpoint);
    mounts().into_iter().rfind(|m| m.mountpoint == want)
}

/// The hfcachefs mounts serving `store`.
pub fn mounts_of_store(store: &Path) -> Vec<MountInfo> {
    let want = std::fs::canonicalize(store).unwrap_or_else(|_| absolute(store));
    mounts()
        .into_iter()
        .filter(|m| m.fstype == FSTYPE && m.source == want)
        .collect()
}

/// The options of the daemon serving `mountpoint`, read from its command line.
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
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
        if !args.next().is_some_and(|a0| a0.ends_with(b"hfcachefs")) {
            continue;
        }
        let args: Vec<String> = args
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Ok(Command::Mount(o)) = options::parse(&args) else {
            continue;
        };
        let mnt = if o.mountpoint.is_absolute() {
            absolute(&o.mountpoint)
        } else {
            match std::fs::read_link(format!("/proc/{pid}/cwd")) {
                Ok(cwd) => absolute(&cwd.join(&o.mountpoint)),
                Err(_) => continue,
            }
        };
        if mnt == want {
            return Some(*o);
        }
    }
    None
}

/// The policy to apply to `store`: the group and `others=` of the hfcachefs daemon serving
/// it when there is one, else the defaults; `group` (from `--group`) overrides.
pub fn policy_for_store(store: &Path, group: Option<&str>) -> Result<Policy, String> {
    let daemon = mounts_of_store(store)
        .iter()
        .find_map(|m| daemon_options(&m.mountpoint));
    let spec = match (group, &daemon) {
        (Some(g), _) => GroupSpec::parse(g),
        (None, Some(o)) => o.group.clone(),
        (None, None) => GroupSpec::Name(DEFAULT_GROUP.into()),
    };
    Ok(Policy {
        gid: spec.resolve()?,
        others: daemon.map_or(Others::None, |o| o.others),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    90 29 0:52 / /hug\\040face rw,nosuid,nodev,relatime shared:5 - fuse.hfcachefs /srv/hf\\040store rw,user_id=0\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
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
    fn group_specs() {
        assert_eq!(GroupSpec::parse("12"), GroupSpec::Id(12));
        assert_eq!(GroupSpec::parse("hf"), GroupSpec::Name("hf".into()));
    }
}
