//! Helpers of the eviction tests (`tests/gc*.rs`): running the CLI, reading its JSON.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{BIN, run_timeout};

/// `hfcachefs ARGS`, as root, within two minutes.
pub fn hf(args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    run_timeout(c, Duration::from_secs(120))
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn sha256(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

/// The first number named `key` in gc's JSON report `j`.
pub fn json_u64(j: &str, key: &str) -> u64 {
    let at = j
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {j}"))
        + key.len()
        + 3;
    j[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Whether anything (a dangling link too) is at `p`.
pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}
