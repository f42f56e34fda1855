//! `hfcachefs fix-store STORE [--dry-run] [--group G]`: makes every entry of an existing
//! store follow the policy on disk (configured group, group bits mirroring the owner's,
//! setgid directories), so that tools reading the store directly, backups and a later
//! `others=` change see what members see through the mount.
//!
//! Changes go through the O_PATH handle of each entry (`fchownat` with `AT_EMPTY_PATH`,
//! chmod through `/proc/self/fd`), never through a path, and symlinks are never followed.

use std::path::Path;
use std::process::ExitCode;

use super::mounts;
use crate::cache::walk::{self, Node, Visit};
use crate::claim;
use crate::error::{CmdResult, Error};
use crate::policy::{self, Fix, Policy};
use crate::sys::{self, Stat};

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

/// Applies `fix` to the entry behind `node` (see [`claim::give`]: the mode is put back
/// after the group changes).
fn apply(node: &Node, fix: &Fix, policy: &Policy) -> sys::SysResult<()> {
    claim::give(node.fd(), policy, None, fix.gid, fix.mode)
}

/// Makes every entry of `store` follow the policy of the mount serving it (`group`
/// overrides its group); with `dry`, only says what it would change.
pub fn run(store: &Path, group: Option<&str>, dry: bool) -> CmdResult {
    let policy = mounts::policy_for_store(store, group).map_err(Error::Usage)?;
    let root = Node::open_trusted(store)
        .map_err(|e| Error::Usage(format!("store {}: {e}", store.display())))?;
    if !root.is_dir() {
        return Err(Error::Usage(format!(
            "store {} is not a directory",
            store.display()
        )));
    }
    let verb = if dry { "would fix" } else { "fixed" };
    let (root_uid, root_mode) = policy::needed_root(&root.st);
    if root_uid.is_some() || root_mode.is_some() {
        println!(
            "{verb} store root {}: owner {} mode {:04o} -> owner 0 mode 0700",
            store.display(),
            root.st.st_uid,
            root.st.st_mode & 0o7777
        );
        if !dry {
            claim::give(root.fd(), &policy, root_uid, None, Some(0o700)).map_err(|e| {
                Error::Runtime(format!(
                    "store root: {}",
                    std::io::Error::from_raw_os_error(e)
                ))
            })?;
        }
    }

    let (mut changed, mut failed, mut seen) = (0u64, 0u64, 0u64);
    let walked = walk::walk(&root, &mut |rel, node, _| {
        seen += 1;
        let fix = policy::needed(&node.st, &policy);
        if fix.is_needed() {
            match if dry {
                Ok(())
            } else {
                apply(node, &fix, &policy)
            } {
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
    .map_err(|e| Error::Runtime(format!("walking {}: {e}", store.display())))?;
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
