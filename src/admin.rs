//! The administration subcommands (`doctor`, `import`, `stats`, `fix-store`): dispatch and
//! their shared argument handling. They are recognised only as the first argument, before
//! the mount command line is parsed (a mountpoint named like one must be given as `./doctor`).

use std::collections::HashMap;
use std::process::ExitCode;

use crate::{doctor, fixstore, import, stats};

/// Why a subcommand stopped.
#[derive(Debug)]
pub enum AdminError {
    /// Bad arguments: one line, exit status 2.
    Usage(String),
    /// Could not do the work: one line, exit status 1.
    Runtime(String),
}

pub type AdminResult = Result<ExitCode, AdminError>;

/// The subcommands' names, recognised as the first argument only.
pub const SUBCOMMANDS: [&str; 4] = ["doctor", "import", "stats", "fix-store"];

/// Whether `arg`, given first, names a subcommand.
pub fn is_subcommand(arg: &str) -> bool {
    SUBCOMMANDS.contains(&arg)
}

/// Runs the subcommand named by `args[0]`, or returns `None` when it names none.
pub fn dispatch(args: &[String]) -> Option<ExitCode> {
    let (first, rest) = args.split_first()?;
    let result = match first.as_str() {
        "doctor" => doctor::main(rest),
        "import" => import::main(rest),
        "stats" => stats::main(rest),
        "fix-store" => fixstore::main(rest),
        _ => return None,
    };
    Some(match result {
        Ok(code) => code,
        Err(AdminError::Usage(m)) => {
            eprintln!("hfcachefs {first}: {m}");
            ExitCode::from(2)
        }
        Err(AdminError::Runtime(m)) => {
            eprintln!("hfcachefs {first}: {m}");
            ExitCode::from(1)
        }
    })
}

/// A subcommand's arguments: positionals and the flags it declared.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub positional: Vec<String>,
    values: HashMap<&'static str, String>,
    switches: Vec<&'static str>,
}

impl Args {
    /// Whether a flag without a value was given.
    pub fn has(&self, flag: &str) -> bool {
        self.switches.contains(&flag)
    }

    /// The value of a flag that takes one.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.values.get(flag).map(String::as_str)
    }
}

/// What a command line asks for.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Args),
    Help,
}

/// Parses `args` against declared `switches` (no value) and `valued` flags
/// (`--flag V` or `--flag=V`); `--` ends the flags.
pub fn parse(
    args: &[String],
    switches: &[&'static str],
    valued: &[&'static str],
) -> Result<Parsed, AdminError> {
    let mut out = Args::default();
    let mut it = args.iter();
    let mut flags_done = false;
    while let Some(a) = it.next() {
        if flags_done || !a.starts_with('-') || a == "-" {
            out.positional.push(a.clone());
            continue;
        }
        if a == "--" {
            flags_done = true;
            continue;
        }
        if a == "-h" || a == "--help" {
            return Ok(Parsed::Help);
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        if let Some(&s) = switches.iter().find(|s| **s == flag) {
            if inline.is_some() {
                return Err(AdminError::Usage(format!("{flag} takes no value")));
            }
            out.switches.push(s);
        } else if let Some(&v) = valued.iter().find(|v| **v == flag) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| AdminError::Usage(format!("{flag} needs a value")))?,
            };
            if value.is_empty() {
                return Err(AdminError::Usage(format!("{flag} needs a value")));
            }
            out.values.insert(v, value);
        } else {
            return Err(AdminError::Usage(format!(
                "unknown flag {flag} (see --help)"
            )));
        }
    }
    Ok(Parsed::Run(out))
}

/// These commands read and change a root-only store.
pub fn require_root() -> Result<(), AdminError> {
    if crate::sys::is_root() {
        Ok(())
    } else {
        Err(AdminError::Usage(
            "must run as root (the store is root-only)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, AdminError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args, &["--dry-run", "--json"], &["--store", "--group"])
    }

    #[test]
    fn flags_values_and_positionals() {
        let Ok(Parsed::Run(a)) = run(&["a", "--dry-run", "--store", "/s", "--group=g", "b"]) else {
            panic!("expected a run");
        };
        assert_eq!(a.positional, ["a", "b"]);
        assert!(a.has("--dry-run") && !a.has("--json"));
        assert_eq!(a.value("--store"), Some("/s"));
        assert_eq!(a.value("--group"), Some("g"));
        let Ok(Parsed::Run(a)) = run(&["--", "--json"]) else {
            panic!("expected a run");
        };
        assert_eq!(a.positional, ["--json"]);
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(run(&["x", "-h"]).ok(), Some(Parsed::Help));
        assert!(matches!(run(&["--bogus"]), Err(AdminError::Usage(m)) if m.contains("--bogus")));
        assert!(matches!(run(&["--store"]), Err(AdminError::Usage(m)) if m.contains("needs")));
        assert!(matches!(run(&["--json=1"]), Err(AdminError::Usage(m)) if m.contains("no value")));
    }

    #[test]
    fn only_subcommand_names_dispatch() {
        for name in SUBCOMMANDS {
            let help = [name.to_string(), "--help".to_string()];
            assert_eq!(dispatch(&help), Some(ExitCode::SUCCESS), "{name}");
        }
        assert!(!is_subcommand("./doctor"));
        assert!(dispatch(&["./doctor".to_string()]).is_none());
        assert!(dispatch(&["/mnt".to_string()]).is_none());
        assert!(dispatch(&[]).is_none());
    }
}
