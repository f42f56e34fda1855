//! hfcachefs: a FUSE filesystem that shares one Hugging Face cache between the members of a
//! group, with ownership and modes enforced on disk and lock files that always open.
//!
//! Architecture, one module per concern:
//! - `options`: command line and `-o` options (mount(8)/fstab forms);
//! - `daemon`: mount, detach, signals, logging;
//! - `fuse`: the thin FUSE adapter (fuser requests to store calls, capabilities, passthrough);
//! - `store`: the filesystem logic over the backing store;
//! - `inodes`: node ids mapped to O_PATH handles, with kernel lookup counts;
//! - `policy`: the pure ownership/mode rules;
//! - `locks`: flock forwarding and the non-blocking waiter;
//! - `sys`: every raw syscall, behind safe wrappers;
//! - `admin`: the administration subcommands' dispatch (`doctor`, `import`, `stats`,
//!   `fix-store`, one module each), with `mounts` (finding mounts and their daemons'
//!   options), `tree` (symlink-safe walks, cache layout) and `format` (sizes, JSON
//!   strings) shared by them.

mod admin;
mod cache_ttl;
mod daemon;
mod doctor;
mod fixstore;
mod format;
mod fuse;
mod import;
mod inodes;
mod locks;
mod mounts;
mod options;
mod policy;
mod stats;
mod store;
mod sys;
mod tree;

use std::process::ExitCode;

use options::Command;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("hfcachefs: argument {a:?} is not valid UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(code) = admin::dispatch(&args) {
        return code;
    }
    match options::parse(&args) {
        Ok(Command::Help) => {
            print!("{}", options::HELP);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("hfcachefs {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Mount(o)) => match daemon::run(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(daemon::Failure::Usage(m)) => {
                eprintln!("hfcachefs: {m}");
                ExitCode::from(2)
            }
            Err(daemon::Failure::Runtime(m)) => {
                eprintln!("hfcachefs: {m}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("hfcachefs: {e}");
            ExitCode::from(2)
        }
    }
}
