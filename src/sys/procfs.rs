//! Facts about other processes, read from `/proc/PID/status`.

/// The state of a process that waits on us, read from `/proc/PID/status`.
///
/// Returns true when the process is gone or has a signal pending that it neither
/// blocks nor ignores: a FUSE request it waits on should then be abandoned.
pub fn process_interrupted(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    if status
        .lines()
        .any(|l| l.starts_with("State:") && (l.contains("zombie") || l.contains("dead")))
    {
        return true;
    }
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") & !field("SigIgn:") != 0
}

/// Whether process `pid` has `gid` among its supplementary groups (FUSE sends only the
/// primary group with a request).
pub fn process_in_group(pid: u32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|g| g.parse() == Ok(gid)))
}
