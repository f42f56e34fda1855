//! `hfcachefs fix-store STORE [--dry-run] [--group G]`: makes every entry of an existing
//! store follow the policy on disk (configured group, group bits mirroring the owner's,
//! setgid directories; shared payloads read-only, their `.refs` and hf_xet's directories
//! writable: [`policy::needed_at`]), so that tools reading the store directly, backups and a later
//! `others=` change see what members see through the mount.
//!
//! Changes go through the O_PATH handle of each entry (`fchownat` with `AT_EMPTY_PATH`,
//! chmod through `/proc/self/fd`), never through a path, and symlinks are never followed.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use super::mounts;
use crate::cache::layout::Place;
use crate::cache::walk::{self, Node, Visit};
use crate::claim;
use crate::error::{CmdResult, Error};
use crate::policy::{self, Fix, Policy};
use crate::sys::{self, Name, Stat};

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

/// Applies `fix` to the entry behind `node`, at `place` (see [`claim::give`]: the mode the
/// place wants is put back after the group changes, which may clear setgid bits).
fn apply(node: &Node, place: Place, fix: &Fix, policy: &Policy) -> sys::SysResult<()> {
    let mode = fix
        .mode
        .or_else(|| fix.gid.map(|_| policy.mode_at(place, node.st.st_mode)));
    claim::give(node.fd(), policy, None, fix.gid, mode)
}

/// Moves a shared secret `name` in the store root (made before private names existed, or
/// put there by another tool) into its owner's private place, owner-only: from then on
/// the mount shows it to its owner alone. `Some(owner)` when there was one to move.
fn move_secret(root: &Node, name: &str, policy: &Policy, dry: bool) -> Result<Option<u32>, String> {
    let e = |e: i32| std::io::Error::from_raw_os_error(e).to_string();
    let Some(secret) = root.child_opt(OsStr::new(name)).map_err(e)? else {
        return Ok(None);
    };
    if !secret.is_file() {
        return Ok(None);
    }
    let owner = secret.st.st_uid;
    if dry {
        return Ok(Some(owner));
    }
    let dir = claim::private_dir(root.fd(), owner, true)
        .map_err(e)?
        .ok_or_else(|| "no private directory".to_owned())?;
    let n = Name::new(OsStr::new(name)).map_err(e)?;
    match sys::rename_noreplace(root.fd(), &n, dir.as_fd(), &n) {
        Ok(()) => {}
        Err(libc::EEXIST) => {
            return Err(format!(
                "{} already has a private {name}: the shared one was left in the store root; remove it",
                sys::describe_user(owner)
            ));
        }
        Err(err) => return Err(e(err)),
    }
    let moved = sys::open_path(dir.as_fd(), &n).map_err(e)?;
    let mode = policy.private_mode(secret.st.st_mode);
    claim::give(moved.as_fd(), policy, None, None, Some(mode)).map_err(e)?;
    Ok(Some(owner))
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
    for name in mounts::private_names_for_store(store) {
        match move_secret(&root, &name, &policy, dry) {
            Ok(None) => {}
            Ok(Some(owner)) => {
                changed += 1;
                let verb = if dry { "would move" } else { "moved" };
                println!(
                    "{verb} {name} (a secret every member could read) into the private place of {}",
                    sys::describe_user(owner)
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("cannot make {name} private: {e}");
            }
        }
    }
    let walked = walk::walk(&root, &mut |rel, node, place| {
        seen += 1;
        let fix = policy::needed_at(&node.st, place, &policy);
        if fix.is_needed() {
            match if dry {
                Ok(())
            } else {
                apply(node, place, &fix, &policy)
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
