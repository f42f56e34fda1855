//! A mount's options: the command line `hfcachefs [STORE] MOUNTPOINT -o ...` in the forms
//! mount(8), mount.fuse and fstab produce. Parsed by `cli` to mount, and by `admin` from a
//! running daemon's `/proc/PID/cmdline` to learn the policy it serves.

use std::path::PathBuf;
use std::time::Duration;

use crate::cache::layout;
use crate::error::Error;
use crate::policy::Others;

/// Where the store lives when no store is named (`mount -t fuse hfcachefs /huggingface`).
pub const DEFAULT_STORE: &str = "/var/lib/hfcachefs/store";
/// The group that shares the cache when none is named.
pub const DEFAULT_GROUP: &str = "hf-users";
/// Where a detached daemon writes its log when no `logfile=` is given.
pub const DEFAULT_LOGFILE: &str = "/var/log/hfcachefs.log";

/// The group, as the administrator named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupSpec {
    Name(String),
    Id(u32),
}

impl GroupSpec {
    /// A group as `group=` or `--group` names it: a number is a gid.
    pub fn parse(s: &str) -> GroupSpec {
        match s.parse::<u32>() {
            Ok(gid) => GroupSpec::Id(gid),
            Err(_) => GroupSpec::Name(s.to_owned()),
        }
    }

    /// The gid, checked against the group database, with a one-line error that says how
    /// to create a missing group.
    pub fn resolve(&self) -> Result<u32, String> {
        let found = match self {
            GroupSpec::Name(name) => crate::sys::group_by_name(name),
            GroupSpec::Id(gid) => crate::sys::group_by_gid(*gid),
        };
        match (found, self) {
            (Ok(Some(g)), _) => Ok(g.gid),
            (Ok(None), GroupSpec::Name(name)) => Err(format!(
                "group '{name}' does not exist (create it with: groupadd {name})"
            )),
            (Ok(None), GroupSpec::Id(gid)) => Err(format!("group id {gid} does not exist")),
            (Err(e), _) => Err(format!("cannot read the group database: {e}")),
        }
    }
}

/// Whether reads and writes of regular files go through kernel passthrough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    /// Use it when the kernel and the store allow it, else serve I/O from the daemon.
    Auto,
    /// Always serve I/O from the daemon.
    Off,
}

/// Everything a mount needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct MountOptions {
    pub store: PathBuf,
    /// True when the store is the default one, which is created if missing.
    pub default_store: bool,
    pub mountpoint: PathBuf,
    pub group: GroupSpec,
    pub others: Others,
    pub foreground: bool,
    pub debug: bool,
    pub threads: usize,
    pub logfile: PathBuf,
    /// `None`: 1 s on a local store, 0 on a store shared with other hosts.
    pub entry_timeout: Option<Duration>,
    pub attr_timeout: Option<Duration>,
    /// `None`: 60 s on a local store, as entry_timeout on a shared one.
    pub content_timeout: Option<Duration>,
    pub passthrough: Passthrough,
    /// Names at the top of the mount that are each user's own (`private=`).
    pub private: Vec<String>,
    pub read_only: bool,
    pub noexec: bool,
    pub noatime: bool,
    /// Automatic eviction: keep what the store's files take on disk under this many bytes
    /// (`max_size=`).
    pub max_size: Option<u64>,
    /// Automatic eviction: keep this percentage of the store's disk free (`min_free=`).
    pub min_free: Option<f64>,
    /// Whether the daemon keeps the access record eviction reads (`record=on|off`; off only
    /// to measure what it costs). The open-file record is kept either way.
    pub record: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Mount(Box<MountOptions>),
    Help,
    Version,
}

/// The administration subcommands: given first, these words are never a mountpoint (a
/// mountpoint named like one is given as `./doctor`).
pub const SUBCOMMANDS: [&str; 7] = [
    "doctor",
    "import",
    "stats",
    "fix-store",
    "gc",
    "pin",
    "unpin",
];

fn err<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Usage(msg.into()))
}

/// Options that mount(8), mount.fuse or fstab pass along and that need no action of ours
/// (nodev and nosuid are always in force; allow_other and default_permissions always on).
const IGNORED: &[&str] = &[
    "rw",
    "dev",
    "suid",
    "nodev",
    "nosuid",
    "atime",
    "relatime",
    "strictatime",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "nofail",
    "_netdev",
    "allow_other",
    "default_permissions",
    "async",
];

fn parse_seconds(key: &str, value: &str) -> Result<Duration, Error> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => err(format!(
            "{key}={value}: expected a number of seconds between 0 and 86400"
        )),
    }
}

/// A size as people write it: bytes, or a number with K, M, G, T or P (powers of 1024,
/// an optional trailing `B` or `iB`): `500M`, `2G`, `1.5T`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let upper = s.trim().to_ascii_uppercase();
    let t = upper.as_str();
    let t = t
        .strip_suffix("IB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                _ => {
                    return Err(format!(
                        "{s}: unknown unit {c:?} (expected K, M, G, T or P)"
                    ));
                }
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let bytes = num.parse::<f64>().map(|n| n * (1u64 << shift) as f64);
    match bytes {
        Ok(b) if (0.0..1.8e19).contains(&b) => Ok(b.round() as u64),
        _ => Err(format!("{s}: expected a size such as 500M, 2G or 1.5T")),
    }
}

/// A duration as people write it: a number with s, m, h, d or w: `30d`, `12h`, `1.5h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let unit = t.chars().last().unwrap_or(' ');
    let secs = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        'w' => 7.0 * 86400.0,
        _ => return Err(format!("{s}: expected a duration such as 30d, 12h or 90m")),
    };
    match t[..t.len() - 1].parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * secs < 1e15 => {
            Ok(Duration::from_secs_f64(n * secs))
        }
        _ => Err(format!("{s}: expected a duration such as 30d, 12h or 90m")),
    }
}

/// The `private=NAME[:NAME...]` list: single names for the top of the mount (empty: none).
fn parse_private(value: &str) -> Result<Vec<String>, Error> {
    let names: Vec<String> = value
        .split(':')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    for n in &names {
        if n == "."
            || n == ".."
            || n.contains('/')
            || n.len() > 255
            || layout::is_hidden_root_name(n.as_bytes())
        {
            return err(format!(
                "private={value}: {n:?} is not a name for the top of the mount"
            ));
        }
    }
    Ok(names)
}

/// The command line sorted out, before any option is read.
enum Words {
    Help,
    Version,
    /// The positional arguments, and the `-o` lists (with `-f` and `-d` as options).
    Mount {
        positional: Vec<String>,
        opts: Vec<String>,
    },
}

/// Sorts the arguments into flags, option lists and positional arguments.
fn sort_words<I, S>(args: I) -> Result<Words, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut positional = Vec::new();
    let mut opts = Vec::new();
    let mut args = args.into_iter().map(|a| a.as_ref().to_owned()).peekable();
    if let Some(sub) = args.peek().filter(|a| SUBCOMMANDS.contains(&a.as_str())) {
        return err(format!(
            "{sub} is an administration command, not a mount (a mountpoint of that name is given as ./{sub})"
        ));
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Words::Help),
            "-V" | "--version" => return Ok(Words::Version),
            "-f" => opts.push("foreground".into()),
            "-d" => opts.push("debug".into()),
            "-o" => match args.next() {
                Some(o) => opts.push(o),
                None => return err("-o needs a comma-separated option list"),
            },
            a if a.starts_with("-o") => opts.push(a[2..].to_owned()),
            a if a.starts_with('-') && a.len() > 1 => return err(format!("unknown flag {a}")),
            _ => positional.push(arg),
        }
    }
    Ok(Words::Mount { positional, opts })
}

/// The store (if named) and the mountpoint, from the positional arguments.
fn store_and_mountpoint(mut positional: Vec<String>) -> Result<(Option<String>, String), Error> {
    let (store, mountpoint) = match positional.len() {
        1 => (None, positional.remove(0)),
        2 => {
            let m = positional.remove(1);
            (Some(positional.remove(0)), m)
        }
        0 => return err("missing MOUNTPOINT (see --help)"),
        _ => return err(format!("too many arguments: {}", positional.join(" "))),
    };
    // fstab's `hfcachefs#/srv/store` form can reach us with the prefix left on.
    let store = store.map(|s| s.strip_prefix("hfcachefs#").map(str::to_owned).unwrap_or(s));
    Ok((store, mountpoint))
}

impl MountOptions {
    /// A mount of the default store at `mountpoint`, before any option.
    fn new(mountpoint: PathBuf) -> MountOptions {
        MountOptions {
            store: PathBuf::from(DEFAULT_STORE),
            default_store: true,
            mountpoint,
            group: GroupSpec::Name(DEFAULT_GROUP.into()),
            others: Others::None,
            foreground: false,
            debug: false,
            threads: 8,
            logfile: PathBuf::from(DEFAULT_LOGFILE),
            entry_timeout: None,
            attr_timeout: None,
            content_timeout: None,
            passthrough: Passthrough::Auto,
            private: layout::PRIVATE_NAMES.map(str::to_owned).to_vec(),
            read_only: false,
            noexec: false,
            noatime: false,
            max_size: None,
            min_free: None,
            record: true,
        }
    }

    /// Applies one option of a `-o` list (`key` or `key=value`).
    fn apply(&mut self, opt: &str) -> Result<(), Error> {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, value) {
            ("store", Some(v)) if !v.is_empty() => {
                self.store = PathBuf::from(v);
                self.default_store = false;
            }
            ("group", Some(v)) if !v.is_empty() => self.group = GroupSpec::parse(v),
            ("others", Some("none")) => self.others = Others::None,
            ("others", Some("read")) => self.others = Others::Read,
            ("others", Some(v)) => return err(format!("others={v}: expected none or read")),
            ("passthrough", Some("auto")) => self.passthrough = Passthrough::Auto,
            ("passthrough", Some("off")) => self.passthrough = Passthrough::Off,
            ("passthrough", Some(v)) => {
                return err(format!("passthrough={v}: expected auto or off"));
            }
            ("threads", Some(v)) => match v.parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => self.threads = n,
                _ => return err(format!("threads={v}: expected a number from 1 to 256")),
            },
            ("logfile", Some(v)) if !v.is_empty() => self.logfile = PathBuf::from(v),
            ("private", Some(v)) => self.private = parse_private(v)?,
            ("entry_timeout", Some(v)) => self.entry_timeout = Some(parse_seconds(key, v)?),
            ("attr_timeout", Some(v)) => self.attr_timeout = Some(parse_seconds(key, v)?),
            ("content_timeout", Some(v)) => self.content_timeout = Some(parse_seconds(key, v)?),
            ("max_size", Some(v)) => {
                self.max_size =
                    Some(parse_size(v).map_err(|e| Error::Usage(format!("max_size={e}")))?)
            }
            ("min_free", Some(v)) => match v.trim_end_matches('%').parse::<f64>() {
                Ok(p) if (0.0..100.0).contains(&p) => self.min_free = Some(p),
                _ => return err(format!("min_free={v}: expected a percentage from 0 to 99")),
            },
            ("record", Some("on")) => self.record = true,
            ("record", Some("off")) => self.record = false,
            ("record", Some(v)) => return err(format!("record={v}: expected on or off")),
            ("foreground", None) => self.foreground = true,
            ("debug", None) => {
                self.debug = true;
                self.foreground = true;
            }
            ("ro", None) => self.read_only = true,
            ("noexec", None) => self.noexec = true,
            ("exec", None) => self.noexec = false,
            ("noatime", None) => self.noatime = true,
            ("remount", None) => {
                return err(
                    "remount goes to the kernel, not to hfcachefs: use mount -i -o remount,... MOUNTPOINT",
                );
            }
            (k, None) if IGNORED.contains(&k) => {}
            (k, _) if k.starts_with("x-") || k == "comment" => {}
            (k, Some(v)) => return err(format!("unknown or invalid option {k}={v}")),
            (k, None) => return err(format!("unknown option {k}")),
        }
        Ok(())
    }
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let (positional, opts) = match sort_words(args)? {
        Words::Help => return Ok(Command::Help),
        Words::Version => return Ok(Command::Version),
        Words::Mount { positional, opts } => (positional, opts),
    };
    let (store, mountpoint) = store_and_mountpoint(positional)?;
    let mut o = MountOptions::new(PathBuf::from(mountpoint));
    if let Some(s) = store {
        o.store = PathBuf::from(s);
        o.default_store = false;
    }
    for opt in opts
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        o.apply(opt)?;
    }
    Ok(Command::Mount(Box::new(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn mount(args: &[&str]) -> MountOptions {
        match parse(args) {
            Ok(Command::Mount(o)) => *o,
            other => panic!("expected a mount, got {other:?}"),
        }
    }

    fn usage(args: &[&str]) -> String {
        match parse(args) {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn mount_t_fuse_form_uses_defaults() {
        let o = mount(&["/huggingface", "-o", "rw,dev,suid"]);
        assert_eq!(o.mountpoint, PathBuf::from("/huggingface"));
        assert_eq!(o.store, PathBuf::from(DEFAULT_STORE));
        assert!(o.default_store);
        assert_eq!(o.group, GroupSpec::Name("hf-users".into()));
        assert_eq!(o.others, Others::None);
        assert!(!o.foreground);
    }

    #[test]
    fn fstab_form_with_store_and_group() {
        let o = mount(&[
            "/srv/hfstore",
            "/huggingface",
            "-o",
            "group=hf-users,allow_other,nodev,nosuid",
        ]);
        assert_eq!(o.store, PathBuf::from("/srv/hfstore"));
        assert!(!o.default_store);
        assert_eq!(o.mountpoint, PathBuf::from("/huggingface"));
        assert_eq!(o.group, GroupSpec::Name("hf-users".into()));
    }

    #[test]
    fn hash_prefixed_source_is_stripped() {
        let o = mount(&["hfcachefs#/srv/hfstore", "/huggingface"]);
        assert_eq!(o.store, PathBuf::from("/srv/hfstore"));
    }

    #[test]
    fn foreground_by_hand_and_numeric_group() {
        let o = mount(&["/srv/s", "/mnt", "-f", "-ogroup=4242,others=read"]);
        assert!(o.foreground);
        assert_eq!(o.group, GroupSpec::Id(4242));
        assert_eq!(o.others, Others::Read);
    }

    #[test]
    fn store_option_and_repeated_o() {
        let o = mount(&["/mnt", "-o", "store=/data/s", "-o", "debug,threads=3"]);
        assert_eq!(o.store, PathBuf::from("/data/s"));
        assert!(!o.default_store);
        assert!(o.debug && o.foreground);
        assert_eq!(o.threads, 3);
    }

    #[test]
    fn generic_mount_options_are_accepted() {
        let o = mount(&[
            "/mnt",
            "-o",
            "rw,dev,suid,nodev,nosuid,exec,atime,relatime,defaults,auto,noauto,user,nofail,_netdev,allow_other,default_permissions,x-systemd.requires-mounts-for=/srv",
        ]);
        assert!(!o.read_only && !o.noexec && !o.noatime);
        let o = mount(&["/mnt", "-o", "ro,noexec,noatime"]);
        assert!(o.read_only && o.noexec && o.noatime);
    }

    #[test]
    fn timeouts_and_passthrough() {
        let o = mount(&[
            "/mnt",
            "-o",
            "entry_timeout=0.5,attr_timeout=0,passthrough=off",
        ]);
        assert_eq!(o.entry_timeout, Some(Duration::from_millis(500)));
        assert_eq!(o.attr_timeout, Some(Duration::ZERO));
        assert_eq!(o.content_timeout, None);
        let c = mount(&["/mnt", "-o", "content_timeout=600"]);
        assert_eq!(c.content_timeout, Some(Duration::from_secs(600)));
        assert!(usage(&["/mnt", "-o", "content_timeout=x"]).contains("content_timeout"));
        assert_eq!(mount(&["/mnt"]).entry_timeout, None);
        assert_eq!(o.passthrough, Passthrough::Off);
        assert!(usage(&["/mnt", "-o", "attr_timeout=-1"]).contains("attr_timeout"));
        assert!(usage(&["/mnt", "-o", "passthrough=yes"]).contains("passthrough"));
    }

    #[test]
    fn bad_input_is_a_clear_usage_error() {
        assert!(usage(&[]).contains("MOUNTPOINT"));
        assert!(usage(&["a", "b", "c"]).contains("too many"));
        assert!(usage(&["/mnt", "-o", "bogus"]).contains("unknown option bogus"));
        assert!(usage(&["/mnt", "-o", "others=all"]).contains("others=all"));
        assert!(usage(&["/mnt", "-o", "threads=0"]).contains("threads"));
        assert!(usage(&["/mnt", "-o"]).contains("-o needs"));
        assert!(usage(&["/mnt", "--frobnicate"]).contains("unknown flag"));
        assert!(usage(&["/mnt", "-o", "group="]).contains("group="));
        assert!(usage(&["/mnt", "-o", "remount,ro"]).contains("mount -i"));
        assert!(usage(&["fix-store", "/s"]).contains("./fix-store"));
        assert!(matches!(parse(["./doctor"]), Ok(Command::Mount(_))));
    }

    #[test]
    fn sizes_durations_and_eviction_options() {
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("3gb"), Ok(3 << 30));
        for bad in ["", "M", "-1G", "2X", "1e30T", "nanG"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        for bad in ["", "30", "d", "-1d", "3y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let o = mount(&["/m", "-o", "max_size=10G,min_free=15%"]);
        assert_eq!((o.max_size, o.min_free), (Some(10 << 30), Some(15.0)));
        assert!(o.record && !mount(&["/m", "-o", "record=off"]).record);
        assert!(usage(&["/m", "-o", "max_size=lots"]).contains("max_size=lots"));
        assert!(usage(&["/m", "-o", "min_free=100"]).contains("min_free"));
    }

    #[test]
    fn private_names() {
        assert_eq!(mount(&["/m"]).private, ["token", "stored_tokens"]);
        assert_eq!(
            mount(&["/m", "-o", "private=a:b:c"]).private,
            ["a", "b", "c"]
        );
        assert!(mount(&["/m", "-o", "private="]).private.is_empty());
        assert!(usage(&["/m", "-o", "private=a/b"]).contains("private="));
        assert!(usage(&["/m", "-o", "private=.."]).contains("private="));
    }

    #[test]
    fn one_option_at_a_time() {
        let mut o = MountOptions::new(PathBuf::from("/mnt"));
        o.apply("store=/s").unwrap();
        assert_eq!(
            (o.store.as_path(), o.default_store),
            (Path::new("/s"), false)
        );
        o.apply("debug").unwrap();
        assert!(o.debug && o.foreground);
        o.apply("noexec").unwrap();
        o.apply("exec").unwrap();
        assert!(!o.noexec, "the last of exec and noexec wins");
        o.apply("attr_timeout=2.5").unwrap();
        assert_eq!(o.attr_timeout, Some(Duration::from_millis(2500)));
        let before = o.clone();
        for ignored in ["nosuid", "x-systemd.automount", "comment=x", "_netdev"] {
            o.apply(ignored).unwrap();
        }
        assert_eq!(o, before, "options for mount(8) change nothing");
        let msg = |opt: &str| match o.clone().apply(opt) {
            Err(Error::Usage(m)) => m,
            other => panic!("{opt}: {other:?}"),
        };
        assert_eq!(
            msg("threads=300"),
            "threads=300: expected a number from 1 to 256"
        );
        assert_eq!(msg("store="), "unknown or invalid option store=");
        assert_eq!(msg("ro=1"), "unknown or invalid option ro=1");
        assert_eq!(msg("frob"), "unknown option frob");
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(["--help"]), Ok(Command::Help));
        assert_eq!(parse(["/mnt", "-h"]), Ok(Command::Help));
        assert_eq!(parse(["-V"]), Ok(Command::Version));
    }
}
