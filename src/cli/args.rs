//! Flag parsing for the administration subcommands: positionals, switches and `--flag V`
//! (or `--flag=V`) values, `--` ending the flags.

use std::collections::HashMap;

use crate::error::Error;

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
/// (`--flag V` or `--flag=V`, at most once each); `--` ends the flags.
pub fn parse(
    args: &[String],
    switches: &[&'static str],
    valued: &[&'static str],
) -> Result<Parsed, Error> {
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
                return Err(Error::Usage(format!("{flag} takes no value")));
            }
            out.switches.push(s);
        } else if let Some(&v) = valued.iter().find(|v| **v == flag) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))?,
            };
            if value.is_empty() {
                return Err(Error::Usage(format!("{flag} needs a value")));
            }
            // Which of two values was meant is not for us to guess.
            if out.values.insert(v, value).is_some() {
                return Err(Error::Usage(format!("{flag} given more than once")));
            }
        } else {
            return Err(Error::Usage(format!("unknown flag {flag} (see --help)")));
        }
    }
    Ok(Parsed::Run(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, Error> {
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
        assert!(matches!(run(&["--bogus"]), Err(Error::Usage(m)) if m.contains("--bogus")));
        assert!(matches!(run(&["--store"]), Err(Error::Usage(m)) if m.contains("needs")));
        assert!(matches!(run(&["--json=1"]), Err(Error::Usage(m)) if m.contains("no value")));
        let twice = run(&["--store", "/a", "--store=/a"]);
        assert!(matches!(twice, Err(Error::Usage(m)) if m == "--store given more than once"));
        assert!(matches!(
            run(&["--dry-run", "--dry-run"]),
            Ok(Parsed::Run(_))
        ));
    }
}
