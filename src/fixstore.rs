//! `hfcachefs fix-store STORE [--dry-run] [--group G]`: makes every entry of an existing
//! store follow the policy on disk (configured group, group bits mirroring the owner's,
//! setgid directories), so that tools reading the store directly, backups and a later
//! `others=` change see what members see through the mount.
//!
//! Changes go through the O_PATH handle of each entry (`fchownat` with `AT_EMPTY_PATH`,
//! chmod through `/proc/self/fd`), never through a path, and symlinks are never followed.

use std::path::Path;
use std::process::ExitCode;

use crate::admin::{self, AdminError, AdminResult, Parsed};
use crate::mounts;
use crate::policy::Policy;
use crate::sys::{self, Stat};
use crate::tree::{self, Node, Visit};

const USAGE: &str = "\
Usage: hfcachefs fix-store STORE [--dry-run] [--group NAME|GID]

Makes every entry of STORE follow the hfcachefs policy on disk: the configured group,
group bits copying the owner bits, setgid directories, no setuid/sticky bits, and the
store root itself 0700 root. Symlinks are never followed (their own group is set).
Prints each change; --dry-run prints them without changing anything.

The group (and others=) come from the hfcachefs mount serving STORE, if any, else the
default group hf-users; --group overrides. Must run as root.
";

/// What an entry needs to follow the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fix {
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl Fix {
    pub fn is_needed(&self) -> bool {
        self.gid.is_some() || self.mode.is_some()
    }
}

/// The changes that make an entry below the store root follow `policy` (a symlink's own
/// mode means nothing, so only its group is checked).
pub fn needed(st: &Stat, policy: &Policy) -> Fix {
    let kind = st.st_mode & libc::S_IFMT;
    let mode = st.st_mode & 0o7777;
    let want = policy.mode(kind, mode);
    Fix {
        gid: (st.st_gid != policy.gid).then_some(policy.gid),
        mode: (kind != libc::S_IFLNK && mode != want).then_some(want),
    }
}

/// The changes that make the store root root-only (0700, owned by root), as the daemon
/// creates it: users must reach the store only through the mount.
pub fn needed_root(st: &Stat) -> (Option<u32>, Option<u32>) {
    let mode = st.st_mode & 0o7777;
    (
        (st.st_uid != 0).then_some(0),
        (mode != 0o700).then_some(0o700),
    )
}

fn describe(rel: &Path, st: &Stat, fix: &Fix) -> String {
    let mut parts = Vec::new();
    if let Some(g) = fix.gid {
        parts.push(format!("group {} -> {g}", st.st_gid));
    }
    if let Some(m) = fix.mode {
        parts.push(format!("mode {:04o} -> {m:04o}", st.st_mode & 0o7777));
    }
    format!("{}: {}", rel.display(), parts.join(", "))
}

/// Applies `fix` to the entry behind `node` (group, then mode: chown may clear setgid).
fn apply(node: &Node, fix: &Fix) -> sys::SysResult<()> {
    let mode = match fix.mode {
        Some(m) => Some(m),
        // chown may clear a setgid bit the policy wants: put the mode back.
        None if fix.gid.is_some() && !node.is_symlink() => Some(node.st.st_mode & 0o7777),
        None => None,
    };
    sys::give(node.fd(), None, fix.gid, mode)
}

pub fn main(args: &[String]) -> AdminResult {
    let a = match admin::parse(args, &["--dry-run"], &["--group"])? {
        Parsed::Help => {
            print!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Parsed::Run(a) => a,
    };
    let [store] = a.positional.as_slice() else {
        return Err(AdminError::Usage(
            "expected exactly one STORE (see --help)".into(),
        ));
    };
    admin::require_root()?;
    let dry = a.has("--dry-run");
    let store = Path::new(store);
    let policy = mounts::policy_for_store(store, a.value("--group")).map_err(AdminError::Usage)?;
    let root = Node::open_trusted(store)
        .map_err(|e| AdminError::Usage(format!("store {}: {e}", store.display())))?;
    if !root.is_dir() {
        return Err(AdminError::Usage(format!(
            "store {} is not a directory",
            store.display()
        )));
    }
    let verb = if dry { "would fix" } else { "fixed" };
    let (root_uid, root_mode) = needed_root(&root.st);
    if root_uid.is_some() || root_mode.is_some() {
        println!(
            "{verb} store root {}: owner {} mode {:04o} -> owner 0 mode 0700",
            store.display(),
            root.st.st_uid,
            root.st.st_mode & 0o7777
        );
        if !dry {
            sys::give(root.fd(), root_uid, None, Some(0o700)).map_err(|e| {
                AdminError::Runtime(format!(
                    "store root: {}",
                    std::io::Error::from_raw_os_error(e)
                ))
            })?;
        }
    }

    let (mut changed, mut failed, mut seen) = (0u64, 0u64, 0u64);
    let walked = tree::walk(&root, &mut |rel, node| {
        seen += 1;
        let fix = needed(&node.st, &policy);
        if fix.is_needed() {
            match if dry { Ok(()) } else { apply(node, &fix) } {
                Ok(()) => {
                    changed += 1;
                    println!("{verb} {}", describe(rel, &node.st, &fix));
                }
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "cannot fix {}: {}",
                        rel.display(),
                        std::io::Error::from_raw_os_error(e)
                    );
                }
            }
        }
        Visit::Descend
    })
    .map_err(|e| AdminError::Runtime(format!("walking {}: {e}", store.display())))?;
    let what = if dry { "to fix" } else { "fixed" };
    println!(
        "{seen} entries checked, {changed} {what}, {failed} failed (group {}, others={})",
        policy.gid,
        policy.others.as_str()
    );
    if let Some(w) = walked.warning() {
        // Not everything was checked: say so, and fail.
        eprintln!(
            "warning: {w}: what is below them was not checked; nesting that deep is no cache, \
             remove it through the mount as a member"
        );
    }
    Ok(if failed == 0 && walked.too_deep == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Others;

    fn st(kind: u32, mode: u32, gid: u32) -> Stat {
        let mut s = sys::empty_stat();
        s.st_mode = kind | mode;
        s.st_gid = gid;
        s
    }

    const P: Policy = Policy {
        gid: 500,
        others: Others::None,
    };

    #[test]
    fn files_get_group_bits_and_group() {
        assert_eq!(
            needed(&st(libc::S_IFREG, 0o644, 0), &P),
            Fix {
                gid: Some(500),
                mode: Some(0o660)
            }
        );
        assert!(!needed(&st(libc::S_IFREG, 0o660, 500), &P).is_needed());
        assert_eq!(
            needed(&st(libc::S_IFREG, 0o4770, 500), &P).mode,
            Some(0o770)
        );
    }

    #[test]
    fn dirs_get_setgid() {
        assert_eq!(
            needed(&st(libc::S_IFDIR, 0o755, 500), &P).mode,
            Some(0o2770)
        );
        assert!(!needed(&st(libc::S_IFDIR, 0o2770, 500), &P).is_needed());
    }

    #[test]
    fn symlinks_only_get_the_group() {
        assert_eq!(
            needed(&st(libc::S_IFLNK, 0o777, 0), &P),
            Fix {
                gid: Some(500),
                mode: None
            }
        );
    }

    #[test]
    fn others_read_keeps_read_bits() {
        let p = Policy {
            gid: 500,
            others: Others::Read,
        };
        assert!(!needed(&st(libc::S_IFREG, 0o664, 500), &p).is_needed());
        assert_eq!(needed(&st(libc::S_IFREG, 0o666, 500), &p).mode, Some(0o664));
    }

    #[test]
    fn store_root_is_root_only() {
        let mut s = st(libc::S_IFDIR, 0o755, 0);
        s.st_uid = 1000;
        assert_eq!(needed_root(&s), (Some(0), Some(0o700)));
        let s = st(libc::S_IFDIR, 0o700, 0);
        assert_eq!(needed_root(&s), (None, None));
    }
}
