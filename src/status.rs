//! What a daemon writes in its log that `doctor` reads back. Each fact's words are written
//! once, here, used by the writer and the reader alike, so rewording a log line cannot
//! silently break a check.

use std::path::Path;

/// Logged while mounting when the kernel agreed to pass file I/O through.
pub const PASSTHROUGH_ENABLED: &str = "kernel passthrough enabled for file I/O";
/// Logged while mounting when the kernel offers no passthrough.
pub const PASSTHROUGH_UNAVAILABLE: &str =
    "the kernel offers no FUSE passthrough; serving file I/O from the daemon";
/// Logged at the first open whose backing file the kernel refused.
pub const PASSTHROUGH_REFUSED: &str = "kernel passthrough refused for this store";
/// What fuser logs as a session starts (`Mounting /huggingface`).
pub const FUSER_MOUNTING: &str = "Mounting ";

/// The start of the line a daemon logs once its mount of `store` on `mnt` is up.
pub fn mounted(store: &Path, mnt: &Path) -> String {
    format!("mounted {} on {} ", store.display(), mnt.display())
}

/// What the daemon's log says about passthrough for its last mount of `store` on `mnt`:
/// `Some(Ok)` in use, `Some(Err(line))` not in use, `None` unknown. The capability is
/// logged while mounting (before the "mounted" line); a refusal at the first open, after.
pub fn passthrough_from_log(log: &str, store: &Path, mnt: &Path) -> Option<Result<(), String>> {
    let mounted = mounted(store, mnt);
    let mounting = format!("{FUSER_MOUNTING}{}", mnt.display());
    let lines: Vec<&str> = log.lines().collect();
    let at = lines.iter().rposition(|l| l.contains(&mounted))?;
    let from = lines[..at]
        .iter()
        .rposition(|l| l.contains(&mounting))
        .unwrap_or(at.saturating_sub(10));
    let mut verdict = None;
    for l in &lines[from..at] {
        if l.contains(PASSTHROUGH_ENABLED) {
            verdict = Some(Ok(()));
        } else if l.contains(PASSTHROUGH_UNAVAILABLE) {
            verdict = Some(Err(l.trim().to_owned()));
        }
    }
    let refused = lines[at + 1..]
        .iter()
        .take_while(|l| !l.contains(FUSER_MOUNTING))
        .find(|l| l.contains(PASSTHROUGH_REFUSED));
    match refused {
        Some(l) => Some(Err(l.trim().to_owned())),
        None => verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_in_the_log() {
        let (s, m) = (Path::new("/s"), Path::new("/m"));
        let log = format!(
            "[t INFO fuser::session] {FUSER_MOUNTING}/m\n\
             [t INFO hfcachefs::fs::fuse] {PASSTHROUGH_ENABLED}\n\
             [t INFO hfcachefs::daemon] {}(group 5, others None)\n",
            mounted(s, m)
        );
        assert_eq!(passthrough_from_log(&log, s, m), Some(Ok(())));
        assert_eq!(passthrough_from_log(&log, s, Path::new("/other")), None);
        let refused = format!("{log}[t WARN hfcachefs::fs::fuse] {PASSTHROUGH_REFUSED} (x)\n");
        assert!(matches!(passthrough_from_log(&refused, s, m), Some(Err(l)) if l.contains("(x)")));
        let none = log.replace(PASSTHROUGH_ENABLED, PASSTHROUGH_UNAVAILABLE);
        assert!(matches!(passthrough_from_log(&none, s, m), Some(Err(_))));
        let later = format!("{refused}[t INFO fuser::session] {FUSER_MOUNTING}/m\n{log}");
        assert_eq!(passthrough_from_log(&later, s, m), Some(Ok(())));
    }
}
