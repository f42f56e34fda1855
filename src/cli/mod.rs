//! The command line. `hfcachefs [STORE] MOUNTPOINT [-o OPTIONS]` mounts (the form mount(8)
//! and fstab use); a first argument naming an administration subcommand runs that instead.
//! Here the words become typed options; every failure ends as one line on stderr and an
//! exit status: 2 for bad usage, 1 for work that could not be done.

mod args;
mod usage;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::admin::{self, doctor, fixstore, gc, import, pin, probe, stats};
use crate::error::{CmdResult, Error};
use crate::evict::Target;
use crate::options::{self, Command, DEFAULT_STORE, SUBCOMMANDS, parse_duration, parse_size};
use args::Parsed;

/// Runs the command line `argv` (without the program name).
pub fn run(argv: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut args = Vec::new();
    for a in argv {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("hfcachefs: argument {a:?} is not valid UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    let (who, result) = match args.split_first() {
        Some((first, rest)) if SUBCOMMANDS.contains(&first.as_str()) => {
            (format!("hfcachefs {first}"), subcommand(first, rest))
        }
        _ => ("hfcachefs".to_owned(), mount(&args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{who}: {}", e.message());
            ExitCode::from(e.exit_status())
        }
    }
}

fn mount(args: &[String]) -> CmdResult {
    match options::parse(args)? {
        Command::Help => print!("{}", usage::MOUNT),
        Command::Version => println!("hfcachefs {}", env!("CARGO_PKG_VERSION")),
        Command::Mount(o) => crate::daemon::run(&o)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses a subcommand's flags; `None` when it asked for its help, which is then printed.
fn flags(
    args: &[String],
    help: &str,
    switches: &[&'static str],
    valued: &[&'static str],
) -> Result<Option<args::Args>, Error> {
    match args::parse(args, switches, valued)? {
        Parsed::Help => {
            print!("{help}");
            Ok(None)
        }
        Parsed::Run(a) => Ok(Some(a)),
    }
}

/// At most one positional: the path a command looks at, `default` when none is given.
fn one_path(a: &args::Args, default: &str, what: &str) -> Result<PathBuf, Error> {
    match a.positional.as_slice() {
        [] => Ok(PathBuf::from(default)),
        [p] => Ok(PathBuf::from(p)),
        _ => Err(Error::Usage(format!("expected one {what}"))),
    }
}

fn subcommand(name: &str, rest: &[String]) -> CmdResult {
    match name {
        "doctor" => {
            // The hidden probe mode of doctor's child processes (see admin::probe).
            if let Some(probe_args) = rest.strip_prefix(&[probe::FLAG.to_owned()]) {
                return probe::main(probe_args);
            }
            let Some(a) = flags(rest, usage::DOCTOR, &[], &[])? else {
                return Ok(ExitCode::SUCCESS);
            };
            doctor::run(&one_path(&a, "/huggingface", "MOUNTPOINT")?)
        }
        "import" => {
            let switches = ["--dry-run", "--move"];
            let Some(a) = flags(rest, usage::IMPORT, &switches, &["--store", "--group"])? else {
                return Ok(ExitCode::SUCCESS);
            };
            if a.positional.is_empty() {
                return Err(Error::Usage(
                    "expected at least one SRC (see --help)".into(),
                ));
            }
            import::run(&import::Options {
                sources: a.positional.iter().map(PathBuf::from).collect(),
                store: PathBuf::from(a.value("--store").unwrap_or(DEFAULT_STORE)),
                group: a.value("--group").map(str::to_owned),
                dry_run: a.has("--dry-run"),
                move_sources: a.has("--move"),
            })
        }
        "stats" => {
            let Some(a) = flags(rest, usage::STATS, &["--json"], &[])? else {
                return Ok(ExitCode::SUCCESS);
            };
            let path = one_path(&a, "/huggingface", "STORE or MOUNTPOINT")?;
            stats::run(&path, a.has("--json"))
        }
        "fix-store" => {
            let Some(a) = flags(rest, usage::FIX_STORE, &["--dry-run"], &["--group"])? else {
                return Ok(ExitCode::SUCCESS);
            };
            let [store] = a.positional.as_slice() else {
                return Err(Error::Usage(
                    "expected exactly one STORE (see --help)".into(),
                ));
            };
            admin::require_root()?;
            fixstore::run(Path::new(store), a.value("--group"), a.has("--dry-run"))
        }
        "gc" => {
            let valued = ["--max-size", "--free", "--older-than"];
            let Some(a) = flags(rest, usage::GC, &["--dry-run", "--json"], &valued)? else {
                return Ok(ExitCode::SUCCESS);
            };
            gc::run(&gc::Options {
                path: one_path(&a, "/huggingface", "MOUNTPOINT")?,
                target: gc_target(&a)?,
                dry_run: a.has("--dry-run"),
                json: a.has("--json"),
            })
        }
        "pin" | "unpin" => {
            let help = if name == "pin" {
                usage::PIN
            } else {
                usage::UNPIN
            };
            let Some(a) = flags(rest, help, &[], &[])? else {
                return Ok(ExitCode::SUCCESS);
            };
            let (spec, path) = match a.positional.as_slice() {
                [] if name == "pin" => (None, "/huggingface"),
                // A repo never starts with `/`: `pin /mnt` lists the pins of that mount.
                [p] if name == "pin" && p.starts_with('/') => (None, p.as_str()),
                [s] => (Some(s.as_str()), "/huggingface"),
                [s, p] => (Some(s.as_str()), p.as_str()),
                _ => {
                    return Err(Error::Usage(
                        "expected REPO[@REVISION] [MOUNTPOINT] (see --help)".into(),
                    ));
                }
            };
            pin::run(Path::new(path), spec, name == "pin")
        }
        _ => unreachable!("SUBCOMMANDS and this match list the same names"),
    }
}

/// The one goal of `gc`.
fn gc_target(a: &args::Args) -> Result<Target, Error> {
    let bad = |flag: &str, e: String| Error::Usage(format!("{flag} {e}"));
    let goals: Vec<Target> = [
        a.value("--max-size").map(|v| {
            parse_size(v)
                .map(Target::MaxSize)
                .map_err(|e| bad("--max-size", e))
        }),
        a.value("--free").map(|v| {
            parse_size(v)
                .map(Target::Free)
                .map_err(|e| bad("--free", e))
        }),
        a.value("--older-than").map(|v| {
            parse_duration(v)
                .map(Target::OlderThan)
                .map_err(|e| bad("--older-than", e))
        }),
    ]
    .into_iter()
    .flatten()
    .collect::<Result<_, _>>()?;
    match goals.as_slice() {
        [t] => Ok(*t),
        _ => Err(Error::Usage(
            "expected exactly one of --max-size, --free, --older-than (see --help)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_subcommand_has_help() {
        for name in SUBCOMMANDS {
            let r = subcommand(name, &strings(&["--help"]));
            assert!(matches!(r, Ok(c) if c == ExitCode::SUCCESS), "{name}");
        }
    }

    #[test]
    fn bad_subcommand_arguments_are_usage_errors() {
        let usage = |name: &str, args: &[&str]| match subcommand(name, &strings(args)) {
            Err(Error::Usage(m)) => m,
            other => panic!("{name} {args:?}: {other:?}"),
        };
        assert!(usage("doctor", &["/a", "/b"]).contains("one MOUNTPOINT"));
        assert!(usage("import", &["--dry-run"]).contains("at least one SRC"));
        assert!(usage("stats", &["--bogus"]).contains("--bogus"));
        assert!(usage("fix-store", &[]).contains("exactly one STORE"));
        assert!(usage("gc", &[]).contains("exactly one of"));
        assert!(usage("gc", &["--max-size", "1G", "--free", "1G"]).contains("exactly one of"));
        assert!(usage("gc", &["--max-size", "1G", "--max-size", "2G"]).contains("more than once"));
        assert!(usage("gc", &["--max-size", "lots"]).contains("--max-size lots"));
        assert!(usage("gc", &["--older-than", "3"]).contains("--older-than 3"));
        assert!(usage("unpin", &[]).contains("REPO"));
        assert!(usage("pin", &["o/m@"]).contains("REPO[@REVISION]"));
    }

    #[test]
    fn help_texts_name_their_forms() {
        assert!(usage::MOUNT.contains("fuse.hfcachefs"));
        for name in SUBCOMMANDS {
            assert!(
                usage::MOUNT.contains(&format!("hfcachefs {name}")),
                "{name}"
            );
        }
    }
}
