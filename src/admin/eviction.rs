//! Eviction as `stats` and `doctor` show it: the limits the mount's daemon was given
//! (`max_size=`, `min_free=`), the last eviction and the pins (from the store's records,
//! which only root reads: the mount hides them), and for `doctor`, what is wrong with it
//! now: a store over its `max_size`, a disk under its `min_free`, a last eviction that
//! could not meet its goal.

use std::path::Path;

use super::format::{human_bytes, json_str};
use super::mounts;
use crate::cache::walk::Node;
use crate::evict;
use crate::evict::state::StateDir;
use crate::options::MountOptions;

/// What the daemon serving a mount was told, and what the store's records say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Eviction {
    pub max_size: Option<u64>,
    pub min_free: Option<f64>,
    /// Whether the store's records were read (root, on the store itself).
    pub records: bool,
    pub last: Option<String>,
    pub pins: Vec<String>,
}

/// Eviction at `path` (a mountpoint, or a store): the options of the daemon serving it and
/// the records of `store`, the store's root as root opened it (`None` for members, whom
/// the mount hides them from).
pub fn read(path: &Path, store: Option<&Node>) -> Eviction {
    from(mounts::daemon_options(path).as_ref(), store)
}

/// Eviction given the daemon's options and, for root, the store's root.
pub fn from(options: Option<&MountOptions>, store: Option<&Node>) -> Eviction {
    let state = store.and_then(|r| StateDir::open(r.fd(), false).ok());
    let dir = state.as_ref().and_then(Option::as_ref);
    Eviction {
        max_size: options.and_then(|o| o.max_size),
        min_free: options.and_then(|o| o.min_free),
        records: state.is_some(),
        last: dir.and_then(|s| s.last_eviction().ok().flatten()),
        pins: dir
            .and_then(|s| s.pins().ok())
            .map(|p| p.into_iter().collect())
            .unwrap_or_default(),
    }
}

/// What a member sees in place of the records.
const UNKNOWN: &str = "unknown (the store's records are root's: run as root)";

impl Eviction {
    /// The limits, as the mount options would write them, or none.
    pub fn limits(&self) -> String {
        let mut l = Vec::new();
        if let Some(b) = self.max_size {
            l.push(format!("max_size={}", human_bytes(b)));
        }
        if let Some(p) = self.min_free {
            l.push(format!("min_free={p}%"));
        }
        if l.is_empty() {
            "none (no automatic eviction)".into()
        } else {
            l.join(", ")
        }
    }

    pub fn last_line(&self) -> &str {
        match &self.last {
            Some(l) => l,
            None if self.records => "none recorded",
            None => UNKNOWN,
        }
    }

    pub fn pins_line(&self) -> String {
        if !self.records {
            UNKNOWN.to_owned()
        } else if self.pins.is_empty() {
            "nothing".to_owned()
        } else {
            self.pins.join(", ")
        }
    }

    /// Whether the last eviction recorded could not meet its goal.
    pub fn last_failed(&self) -> bool {
        self.last
            .as_deref()
            .and_then(evict::summary_met)
            .is_some_and(|met| !met)
    }

    /// `stats`'s lines.
    pub fn render(&self) -> String {
        format!(
            "eviction limit: {}\nlast eviction: {}\npinned: {}\n",
            self.limits(),
            self.last_line(),
            self.pins_line()
        )
    }

    /// `doctor`'s section.
    pub fn section(&self) -> String {
        format!(
            "eviction:\n  limit: {}\n  last eviction: {}\n  pinned: {}\n",
            self.limits(),
            self.last_line(),
            self.pins_line()
        )
    }

    pub fn json(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let pins: Vec<String> = self.pins.iter().map(|p| json_str(p)).collect();
        format!(
            "{{\"max_size\":{},\"min_free_percent\":{},\"records\":{},\"last\":{},\"last_met\":{},\"pins\":{}}}",
            opt(self.max_size.map(|b| b.to_string())),
            opt(self.min_free.map(|p| p.to_string())),
            self.records,
            opt(self.last.as_deref().map(json_str)),
            opt(self
                .last
                .as_deref()
                .and_then(evict::summary_met)
                .map(|m| m.to_string())),
            if self.records {
                format!("[{}]", pins.join(","))
            } else {
                "null".into()
            }
        )
    }

    /// What is wrong now, in words, given what the store takes on disk (as a size goal
    /// counts it; `None`: not known whole) and the disk's free and total bytes.
    pub fn problems(&self, store_bytes: Option<u64>, disk: Option<(u64, u64)>) -> Vec<Problem> {
        let mut out = Vec::new();
        if let (Some(max), Some(b)) = (self.max_size, store_bytes) {
            if b > max {
                out.push(Problem::OverMaxSize { bytes: b, max });
            }
        }
        if let (Some(pct), Some((free, total))) = (self.min_free, disk) {
            if total > 0 && (free as f64) < total as f64 * pct / 100.0 {
                out.push(Problem::UnderMinFree { free, total, pct });
            }
        }
        if self.last_failed() {
            out.push(Problem::LastFailed(self.last.clone().unwrap_or_default()));
        }
        out
    }
}

/// Something `doctor` warns about.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The store takes `bytes` on disk, over its `max_size`.
    OverMaxSize { bytes: u64, max: u64 },
    /// The disk has `free` of `total` bytes free, under its `min_free` percentage.
    UnderMinFree { free: u64, total: u64, pct: f64 },
    /// The last eviction (its line) did not meet its goal.
    LastFailed(String),
}

impl Problem {
    /// The finding and its fix, for the mount `mnt`.
    pub fn describe(&self, mnt: &str) -> (String, String) {
        let then = "hfcachefs unpin what may go, or raise the limit";
        let evict = |flags: &str| {
            format!(
                "as root: hfcachefs gc {mnt} {flags} (with --dry-run first: what goes, and what stays and why: pinned, open, downloading); if it cannot, {then}"
            )
        };
        match self {
            Problem::OverMaxSize { bytes, max } => (
                format!(
                    "the store takes {} on disk ({bytes} bytes), over its max_size={}",
                    human_bytes(*bytes),
                    human_bytes(*max)
                ),
                evict(&format!("--max-size {max}")),
            ),
            Problem::UnderMinFree { free, total, pct } => {
                let want = (*total as f64 * pct / 100.0) as u64;
                (
                    format!(
                        "{} free of {}, under its min_free={pct}%",
                        human_bytes(*free),
                        human_bytes(*total)
                    ),
                    evict(&format!("--free {want}")),
                )
            }
            Problem::LastFailed(line) => (
                format!("the last eviction did not meet its goal: {line}"),
                format!(
                    "see what stays and why (pinned, open, downloading): as root, hfcachefs gc {mnt} {} --dry-run; then {then}",
                    gc_flags(line).as_deref().unwrap_or("--max-size SIZE")
                ),
            ),
        }
    }
}

/// The `gc` flags of the goal a [`evict::summary`] line names (`min_free`, a share of the
/// disk, becomes `--free SIZE`: the share in bytes is not in the line).
fn gc_flags(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(": ")?;
    let (spec, _) = rest.split_once(';')?;
    let (k, v) = spec.split_once('=')?;
    let flag = match k {
        "max_size" => "--max-size",
        "free" => "--free",
        "older_than" => "--older-than",
        "min_free" => return Some("--free SIZE".into()),
        _ => return None,
    };
    Some(format!("{flag} {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json() {
        let e = Eviction {
            max_size: Some(2 << 30),
            records: true,
            last: Some("1 gc: x; goal met".into()),
            pins: vec!["models--a".into()],
            ..Eviction::default()
        };
        assert!(e.render().contains(
            "eviction limit: max_size=2.0 GiB\nlast eviction: 1 gc: x; goal met\npinned: models--a"
        ));
        assert!(e.section().contains(
            "eviction:\n  limit: max_size=2.0 GiB\n  last eviction: 1 gc: x; goal met\n  pinned: models--a\n"
        ));
        assert_eq!(
            e.json(),
            "{\"max_size\":2147483648,\"min_free_percent\":null,\"records\":true,\"last\":\"1 gc: x; goal met\",\"last_met\":true,\"pins\":[\"models--a\"]}"
        );
        let none = Eviction {
            records: true,
            ..Eviction::default()
        };
        assert!(none.render().contains("none (no automatic eviction)"));
        assert!(
            none.render()
                .contains("last eviction: none recorded\npinned: nothing")
        );
        let member = Eviction::default();
        assert!(
            member.render().contains("pinned: unknown"),
            "{}",
            member.render()
        );
        assert!(member.json().ends_with("\"pins\":null}"));
    }

    #[test]
    fn problems_now() {
        let e = Eviction {
            max_size: Some(1000),
            min_free: Some(10.0),
            records: true,
            last: Some(
                "5 daemon: max_size=1000; removed 0 revision(s), freed 0 bytes; goal not met: 1 revision(s) that would have gone are kept (pinned)".into(),
            ),
            pins: vec![],
        };
        assert!(e.last_failed());
        let p = e.problems(Some(1001), Some((9, 100)));
        assert_eq!(p.len(), 3, "{p:?}");
        let (what, fix) = p[0].describe("/m");
        assert!(what.contains("over its max_size=1000 B"), "{what}");
        assert!(
            fix.starts_with("as root: hfcachefs gc /m --max-size 1000 (with --dry-run"),
            "{fix}"
        );
        let (what, fix) = p[1].describe("/m");
        assert!(what.contains("under its min_free=10%"), "{what}");
        assert!(fix.contains("hfcachefs gc /m --free 10 ("), "{fix}");
        let (what, fix) = p[2].describe("/m");
        assert!(what.contains("goal not met: 1 revision(s)"), "{what}");
        assert!(
            fix.contains("hfcachefs gc /m --max-size 1000 --dry-run"),
            "{fix}"
        );
        // Within the limits, a last run that met its goal, or nothing known: nothing.
        let ok = Eviction {
            last: Some(
                "5 gc: older_than=1d; removed 1 revision(s), freed 9 bytes; goal met".into(),
            ),
            ..e.clone()
        };
        assert!(ok.problems(Some(1000), Some((10, 100))).is_empty());
        assert!(ok.problems(None, None).is_empty());
        assert_eq!(
            gc_flags("5 gc: older_than=30d; removed 0 revision(s), freed 0 bytes; goal not met")
                .as_deref(),
            Some("--older-than 30d")
        );
        assert_eq!(
            gc_flags("5 daemon: min_free=10%; removed ...").as_deref(),
            Some("--free SIZE")
        );
        assert_eq!(gc_flags("something else"), None);
    }
}
