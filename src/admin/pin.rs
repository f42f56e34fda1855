//! `hfcachefs pin [REPO[@REVISION]] [MOUNTPOINT]` and `hfcachefs unpin REPO[@REVISION]
//! [MOUNTPOINT]`: revisions eviction never removes, kept in the store (`.hfcachefs/pins`).
//! A repo is pinned whole; a revision by commit or by a ref (`@main`: whatever it points
//! to when eviction runs). Without REPO, `pin` lists the pins.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use super::mounts;
use crate::cache::layout;
use crate::cache::walk::Node;
use crate::error::{CmdResult, Error};
use crate::evict::state::StateDir;

/// `org/name` (a model), `datasets/org/name`, `spaces/org/name`, or a repo directory name
/// (`models--org--name`), with an optional `@REVISION` (a commit, or a ref as named below
/// `refs/`: `main`, `pr/1`), as stored in the pins.
pub fn normalize(spec: &str) -> Result<String, Error> {
    let (repo, rev) = match spec.split_once('@') {
        Some((r, v)) if !v.is_empty() && !v.contains(|c: char| c == '@' || c.is_whitespace()) => {
            (r, Some(v))
        }
        Some(_) => return Err(Error::Usage(format!("{spec}: expected REPO[@REVISION]"))),
        None => (spec, None),
    };
    let dir = if layout::is_repo_dir(repo.as_bytes()) {
        repo.to_owned()
    } else {
        let (kind, rest) = match repo.split_once('/') {
            Some(("datasets", r)) => ("datasets", r),
            Some(("spaces", r)) => ("spaces", r),
            Some(("models", r)) => ("models", r),
            _ => ("models", repo),
        };
        format!("{kind}--{}", rest.replace('/', "--"))
    };
    let ok = layout::is_repo_dir(dir.as_bytes())
        && !dir.contains(['\n', ' '])
        && dir
            .split("--")
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if !ok {
        return Err(Error::Usage(format!(
            "{spec}: expected REPO[@REVISION], e.g. org/name@main"
        )));
    }
    Ok(match rev {
        Some(v) => format!("{dir}@{v}"),
        None => dir,
    })
}

fn state(path: &Path) -> Result<StateDir, Error> {
    crate::admin::require_root()?;
    let store = match mounts::mount_at(path) {
        Some(m) if m.is_hfcachefs() => m.source,
        _ => path.to_path_buf(),
    };
    let root = Node::open_trusted(&store)
        .map_err(|e| Error::Usage(format!("{}: {e}", store.display())))?;
    let fail = |e: i32| {
        Error::Runtime(format!(
            "{}/.hfcachefs: {}",
            store.display(),
            std::io::Error::from_raw_os_error(e)
        ))
    };
    StateDir::open(root.fd(), true)
        .map_err(fail)?
        .ok_or_else(|| fail(libc::ENOENT))
}

/// Adds (`pin`) or removes a pin, or lists them (`pin` without `spec`).
pub fn run(path: &Path, spec: Option<&str>, pin: bool) -> CmdResult {
    let spec = spec.map(normalize).transpose()?;
    let s = state(path)?;
    let io = |e: i32| Error::Runtime(format!("pins: {}", std::io::Error::from_raw_os_error(e)));
    let mut pins: BTreeSet<String> = s.pins().map_err(io)?;
    let Some(spec) = spec else {
        for p in &pins {
            println!("{p}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let p = spec;
    let changed = if pin {
        pins.insert(p.clone())
    } else {
        pins.remove(&p)
    };
    if pin && !changed {
        println!("already pinned: {p}");
    } else if !pin && !changed {
        return Err(Error::Runtime(format!("not pinned: {p}")));
    } else {
        s.set_pins(&pins).map_err(io)?;
        println!("{}: {p}", if pin { "pinned" } else { "unpinned" });
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_as_people_write_them() {
        assert_eq!(normalize("org/name").unwrap(), "models--org--name");
        assert_eq!(normalize("gpt2").unwrap(), "models--gpt2");
        assert_eq!(
            normalize("datasets/o/d@main").unwrap(),
            "datasets--o--d@main"
        );
        assert_eq!(normalize("spaces/o/s").unwrap(), "spaces--o--s");
        assert_eq!(
            normalize("models--o--m@abc123").unwrap(),
            "models--o--m@abc123"
        );
        assert_eq!(normalize("o/m@pr/1").unwrap(), "models--o--m@pr/1");
        for bad in ["", "o/m@", "@x", "o//m", "a@b@c"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }
}
