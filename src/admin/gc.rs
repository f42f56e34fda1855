//! `hfcachefs gc [MOUNTPOINT] (--max-size SIZE | --free SIZE | --older-than DURATION)
//! [--dry-run] [--json]`: evicts whole revisions, least recently used first, until the
//! goal is met (see `evict` for the rules and the order of removal), and reports what went,
//! what stayed and why. Exit status 0 when the goal is met, 1 when not.
//!
//! MOUNTPOINT is the root of an hfcachefs mount (as the mount table has it), or for root
//! the store directory of a running mount: what the daemons record (opens, access, pins)
//! is in the store's `.hfcachefs/`, so a directory below either, or one no mount serves,
//! would be evicted without it, and is refused, naming the mountpoint to use.
//!
//! Root works on the store behind the mount; a member may only look (`--dry-run`), through
//! the mount, where hfcachefs's records are hidden: files' times then stand for use, and
//! open files and pins are unknown (the report says so).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use super::format::{human_bytes, json_str};
use super::mounts::{self, MountInfo};
use crate::cache::walk::Node;
use crate::error::{CmdResult, Error};
use crate::evict::state::StateDir;
use crate::evict::{self, Item, Report, Target};
use crate::sys;

pub struct Options {
    pub path: PathBuf,
    pub target: Target,
    pub dry_run: bool,
    pub json: bool,
}

/// The goal in words.
pub fn describe(t: &Target) -> String {
    match t {
        Target::MaxSize(b) => format!("store at most {}", human_bytes(*b)),
        Target::Free(b) => format!("at least {} free", human_bytes(*b)),
        Target::FreePercent(p) => format!("at least {p}% of the disk free"),
        Target::OlderThan(d) => format!("nothing unused for {}", evict::human_duration(*d)),
    }
}

/// What `gc PATH` works on.
#[derive(Debug, PartialEq, Eq)]
enum Given {
    /// The root of an hfcachefs mount.
    Mountpoint(PathBuf),
    /// The store of a running mount (the mountpoint).
    Store(PathBuf),
}

/// What `path` (absolute, lexically normal; `canonical`: as the kernel resolves it, if it
/// does) is among `mounts` (root's hfcachefs mounts), or the one-line refusal naming the
/// mountpoint to use.
fn given(path: &Path, canonical: Option<&Path>, mounts: &[MountInfo]) -> Result<Given, String> {
    let real = canonical.unwrap_or(path);
    // The topmost mount on a path is listed last.
    if let Some(m) = mounts.iter().rev().find(|m| m.mountpoint == path) {
        return Ok(Given::Mountpoint(m.mountpoint.clone()));
    }
    if let Some(m) = mounts.iter().find(|m| m.source == real) {
        return Ok(Given::Store(m.mountpoint.clone()));
    }
    let use_it = |m: &MountInfo, what: &str| {
        format!(
            "{} is below {what}: gc works on a whole store, give it the mountpoint: hfcachefs gc {}",
            path.display(),
            m.mountpoint.display()
        )
    };
    if let Some(m) = mounts
        .iter()
        .rev()
        .find(|m| path.starts_with(&m.mountpoint) || real.starts_with(&m.mountpoint))
    {
        return Err(use_it(
            m,
            &format!("the hfcachefs mount at {}", m.mountpoint.display()),
        ));
    }
    if let Some(m) = mounts.iter().find(|m| real.starts_with(&m.source)) {
        return Err(use_it(m, &format!("the store {}", m.source.display())));
    }
    Err(format!(
        "{} is neither an hfcachefs mountpoint nor the store of a running mount",
        path.display()
    ))
}

/// The store behind `path` (an hfcachefs mountpoint or a running mount's store, see
/// [`given`]) for root; for anyone else, the mountpoint as they see it and no state.
fn open(path: &Path, dry_run: bool) -> Result<(PathBuf, Node, Option<StateDir>, bool), Error> {
    let root = sys::is_root();
    if !root && !dry_run {
        return Err(Error::Usage(
            "must run as root to remove anything (members may use --dry-run)".into(),
        ));
    }
    let ours: Vec<MountInfo> = mounts::mounts()
        .into_iter()
        .filter(MountInfo::is_hfcachefs)
        .collect();
    let abs = mounts::absolute(path);
    // Resolved only when it is no mountpoint (a hung mount would hang it).
    let canonical = match ours.iter().any(|m| m.mountpoint == abs) {
        true => None,
        false => std::fs::canonicalize(&abs).ok(),
    };
    let mountpoint = match given(&abs, canonical.as_deref(), &ours).map_err(Error::Usage)? {
        Given::Mountpoint(m) => m,
        Given::Store(m) if root => m,
        Given::Store(m) => {
            return Err(Error::Usage(format!(
                "{} is the store of the mount at {}: members look through the mount: hfcachefs gc {} --dry-run",
                abs.display(),
                m.display(),
                m.display()
            )));
        }
    };
    let (walked, node) = mounts::open_tree(&mountpoint).map_err(Error::Usage)?;
    let state = if root {
        StateDir::open(node.fd(), !dry_run).map_err(|e| {
            Error::Runtime(format!(
                "{}/.hfcachefs: {}",
                walked.display(),
                std::io::Error::from_raw_os_error(e)
            ))
        })?
    } else {
        None
    };
    Ok((walked, node, state, root))
}

pub fn run(o: &Options) -> CmdResult {
    let (walked, root, state, is_root) = open(&o.path, o.dry_run)?;
    let report = evict::run(
        &root,
        state.as_ref(),
        o.target,
        o.dry_run,
        SystemTime::now(),
    )
    .map_err(|e| Error::Runtime(format!("{}: {e}", walked.display())))?;
    if let (Some(s), false) = (&state, o.dry_run) {
        let line = evict::summary(&report, &o.target, "gc", SystemTime::now());
        if let Err(e) = s.set_last_eviction(&line) {
            eprintln!(
                "hfcachefs gc: cannot record the last eviction: {}",
                std::io::Error::from_raw_os_error(e)
            );
        }
    }
    let note = (!is_root).then_some(
        "not root: read through the mount, where access records, open files and pins are hidden; files' times stand for use",
    );
    if o.json {
        print!("{}", json(&report, &o.target, &walked, note));
    } else {
        print!("{}", render(&report, &o.target, &walked, note));
    }
    for e in &report.errors {
        eprintln!("hfcachefs gc: {e}");
    }
    Ok(if report.met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn item_line(i: &Item, bytes: bool) -> String {
    if bytes {
        format!(
            "  {:>10}  {}@{}  ({})\n",
            human_bytes(i.bytes),
            i.repo,
            i.commit,
            i.reason
        )
    } else {
        format!("  {}@{}: {}\n", i.repo, i.commit, i.reason)
    }
}

pub fn render(r: &Report, t: &Target, store: &Path, note: Option<&str>) -> String {
    let mut s = format!(
        "hfcachefs gc {}{}: goal: {}\n",
        store.display(),
        if r.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        },
        describe(t)
    );
    if let Some(n) = note {
        s += &format!("note: {n}\n");
    }
    s += &format!(
        "store: {} on disk (its files, as du), {} free on the disk; to free: {}\n",
        human_bytes(r.store_bytes),
        human_bytes(r.avail_bytes),
        human_bytes(r.need)
    );
    s += if r.dry_run {
        "would remove:\n"
    } else {
        "removed:\n"
    };
    if r.removed.is_empty() {
        s += "  nothing\n";
    }
    for i in &r.removed {
        s += &item_line(i, true);
    }
    if !r.kept.is_empty() {
        s += "kept (would have gone):\n";
        for i in &r.kept {
            s += &item_line(i, false);
        }
    }
    s += &format!(
        "{}: {} ({} bytes)\n",
        if r.dry_run { "would free" } else { "freed" },
        human_bytes(r.freed),
        r.freed
    );
    match &r.reason {
        None => s += "goal met\n",
        Some(why) => s += &format!("goal not met: {why}\n"),
    }
    s
}

fn json_items(items: &[Item]) -> String {
    let v: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{{\"repo\":{},\"commit\":{},\"last_used\":{},\"bytes\":{},\"reason\":{}}}",
                json_str(&i.repo),
                json_str(&i.commit),
                i.last_used,
                i.bytes,
                json_str(&i.reason)
            )
        })
        .collect();
    format!("[{}]", v.join(","))
}

pub fn json(r: &Report, t: &Target, store: &Path, note: Option<&str>) -> String {
    format!(
        "{{\"store\":{},\"dry_run\":{},\"goal\":{},\"note\":{},\"store_bytes\":{},\"avail_bytes\":{},\"need_bytes\":{},\"removed\":{},\"kept\":{},\"freed_bytes\":{},\"met\":{},\"reason\":{},\"errors\":[{}]}}\n",
        json_str(&store.display().to_string()),
        r.dry_run,
        json_str(&describe(t)),
        note.map_or("null".into(), json_str),
        r.store_bytes,
        r.avail_bytes,
        r.need,
        json_items(&r.removed),
        json_items(&r.kept),
        r.freed,
        r.met,
        r.reason.as_deref().map_or("null".into(), json_str),
        r.errors
            .iter()
            .map(|e| json_str(e))
            .collect::<Vec<_>>()
            .join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn mount(mountpoint: &str, source: &str) -> MountInfo {
        MountInfo {
            mountpoint: mountpoint.into(),
            fstype: mounts::FSTYPE.into(),
            source: source.into(),
            dev: (0, 50),
            super_options: "rw,user_id=0".into(),
        }
    }

    #[test]
    fn gc_takes_a_mountpoint_or_its_store_and_nothing_below() {
        let ms = [mount("/hf", "/data/store"), mount("/teams/x", "/data/x")];
        let g = |p: &str, c: Option<&str>| given(Path::new(p), c.map(Path::new), &ms);
        assert_eq!(g("/hf", None), Ok(Given::Mountpoint("/hf".into())));
        assert_eq!(
            g("/teams/x", None),
            Ok(Given::Mountpoint("/teams/x".into()))
        );
        assert_eq!(g("/data/store", None), Ok(Given::Store("/hf".into())));
        // Reached through a symlink.
        assert_eq!(
            g("/srv/store", Some("/data/store")),
            Ok(Given::Store("/hf".into()))
        );
        for (p, c) in [
            ("/hf/hub", None),
            ("/hf/team/hub", None),
            ("/data/store/hub", Some("/data/store/hub")),
            ("/srv/store/hub", Some("/data/store/hub")),
            ("/data/store/.hfcachefs", Some("/data/store/.hfcachefs")),
        ] {
            let e = g(p, c).unwrap_err();
            assert!(
                e.starts_with(&format!("{p} is below ")) && e.ends_with("hfcachefs gc /hf"),
                "{p}: {e}"
            );
            assert!(!e.contains('\n'));
        }
        let e = g("/data/other", Some("/data/other")).unwrap_err();
        assert!(
            e.contains("neither an hfcachefs mountpoint nor the store"),
            "{e}"
        );
        assert!(g("/data", Some("/data")).is_err(), "above a store");
        assert!(g("/hfx", None).is_err(), "a sibling named alike");
    }

    #[test]
    fn reports_say_what_went_and_why() {
        let r = Report {
            dry_run: true,
            need: 10,
            removed: vec![Item {
                repo: "models--a".into(),
                commit: "c1".into(),
                last_used: 5,
                bytes: 12,
                reason: "least recently used".into(),
            }],
            kept: vec![Item {
                repo: "models--b".into(),
                commit: "c2".into(),
                last_used: 1,
                bytes: 0,
                reason: "pinned".into(),
            }],
            freed: 12,
            met: true,
            ..Report::default()
        };
        let t = Target::MaxSize(1 << 30);
        let text = render(&r, &t, Path::new("/s"), None);
        assert!(text.contains("dry run"), "{text}");
        assert!(text.contains("models--a@c1") && text.contains("models--b@c2: pinned"));
        assert!(text.contains("goal met"));
        let j = json(&r, &t, Path::new("/s"), None);
        assert!(
            j.contains("\"freed_bytes\":12,\"met\":true,\"reason\":null"),
            "{j}"
        );
        assert!(j.contains("\"kept\":[{\"repo\":\"models--b\""));
        let line = evict::summary(&r, &t, "gc", UNIX_EPOCH);
        assert_eq!(
            line,
            "0 gc: max_size=1073741824; removed 1 revision(s), freed 12 bytes; goal met"
        );
        assert_eq!(evict::summary_met(&line), Some(true));
        let short = Report {
            met: false,
            reason: Some("1 revision(s) that would have gone are kept (pinned)".into()),
            ..r.clone()
        };
        let line = evict::summary(&short, &t, "daemon", UNIX_EPOCH);
        assert_eq!(
            line,
            "0 daemon: max_size=1073741824; removed 1 revision(s), freed 12 bytes; goal not met: 1 revision(s) that would have gone are kept (pinned)"
        );
        assert_eq!(evict::summary_met(&line), Some(false));
        assert_eq!(
            evict::summary_met(
                "0 gc: older_than=1d; removed 0 revision(s), freed 0 bytes; goal not met"
            ),
            Some(false)
        );
        assert_eq!(evict::summary_met("something else"), None);
    }
}
