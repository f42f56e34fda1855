//! The help texts of the command line: the mount's, and each administration subcommand's.

pub const MOUNT: &str = "\
hfcachefs - one shared Hugging Face cache for every member of a group

Usage:
  hfcachefs [STORE] MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d]
  mount -t fuse hfcachefs /huggingface
  mount -t fuse.hfcachefs /srv/hfstore /huggingface -o group=hf-users

Everything created through the mount is stored in STORE owned by the caller, with the
configured group and the owner's permission bits copied to the group, whatever the
caller's umask or primary group. Members then never get EACCES on each other's blobs or
lock files; people outside the group get nothing. Users set HF_HOME=MOUNTPOINT.

Options:
  store=PATH          backing store (default /var/lib/hfcachefs/store, created 0700 if
                      missing); a STORE argument does the same
  group=NAME|GID      group that shares the cache (default hf-users)
  others=none|read    what non-members get: nothing (default) or read-only access
  passthrough=auto|off  kernel passthrough for file I/O (default auto)
  entry_timeout=SECS  how long the kernel caches names, found or not (default 1, or 0
                      when the store is on a network/cluster filesystem)
  attr_timeout=SECS   how long the kernel caches attributes (default as entry_timeout)
  content_timeout=SECS  the same for what nothing rewrites: the hub cache layout,
                      blobs, snapshots, .no_exist markers and blob lock files (default
                      60, or entry_timeout on a shared store)
  private=NAME[:NAME...]  names at the top of the mount that each user has for
                      themselves, stored owner-only (default token:stored_tokens)
  threads=N           request threads (default 8)
  logfile=PATH        log of the detached daemon (default /var/log/hfcachefs.log)
  ro, noexec, noatime honoured; rw, dev, suid, nodev, nosuid, exec, atime, relatime,
                      defaults, auto, noauto, user, nofail, _netdev, allow_other,
                      default_permissions and x-* are accepted and need nothing
  foreground, -f      stay in the foreground (log to stderr)
  debug, -d           log every request (implies foreground)
  -h, --help          this text
  -V, --version       version

Logging: RUST_LOG=info|debug|trace overrides the level.

fstab:
  /srv/hfstore  /huggingface  fuse.hfcachefs  group=hf-users,nofail  0 0

Unmount with `umount /huggingface`; SIGTERM, SIGINT or SIGHUP unmounts too.

Administration (each has --help; a mountpoint named like one is given as ./doctor):
  hfcachefs doctor [MOUNTPOINT]          check a mount and say how to fix what is wrong
  hfcachefs import SRC... [--store S]    move users' caches into the store, deduplicated
  hfcachefs stats [STORE|MOUNTPOINT]     sizes per repo and owner, savings, stale files
  hfcachefs fix-store STORE [--dry-run]  make every store entry follow the policy
  hfcachefs gc [MOUNTPOINT] --max-size SIZE|--free SIZE|--older-than DURATION
                                         evict least recently used revisions
  hfcachefs pin [REPO[@REVISION]]        list pins, or keep a repo or revision from eviction
  hfcachefs unpin REPO[@REVISION]        remove a pin

Eviction options:
  max_size=SIZE       evict least recently used revisions in the background when what
                      the store's files take on disk (as du) passes SIZE (500M, 2G, 1.5T:
                      powers of 1024)
  min_free=PERCENT    ... when less than PERCENT of the store's disk is free
  record=on|off       the access record eviction reads (default on; off only to measure
                      it: revisions then count from their files' times); files open
                      through any mount are always recorded, so gc never removes them
";

pub const DOCTOR: &str = "\
Usage: hfcachefs doctor [MOUNTPOINT]

Checks the shared Hugging Face cache at MOUNTPOINT (default /huggingface) and prints each
check as OK, WARN, FAIL or SKIP, with the command that fixes each problem:
  mounted as fuse.hfcachefs and answering (a hung daemon is reported, not waited for);
  the group exists and you are in it, in the group database and in this login session;
  HF_HOME / HF_HUB_CACHE point at the mount; the store is 0700 root;
  kernel FUSE passthrough; flock through the mount; free space (warns under 10%);
  temporary files older than a day; directories nested too deep to scan; as root, store
  entries whose group or mode do not follow the policy (a sample of the store);
  eviction: the mount's limits, the last eviction and the pins (as root), with a warning
  when the store is over max_size, the disk under min_free, or the last eviction could not
  meet its goal.
Exit status 0 when healthy, 1 with findings.
";

pub const IMPORT: &str = "\
Usage: hfcachefs import SRC... [--store STORE] [--dry-run] [--move] [--group NAME|GID]

Imports existing Hugging Face caches into the hfcachefs store (default
/var/lib/hfcachefs/store). SRC is an HF_HOME-like directory (~/.cache/huggingface, an old
shared /huggingface) or a hub cache directory (~/.cache/huggingface/hub).

  hub repos    merged: blobs deduplicated by content name, snapshots and .no_exist markers
               merged, refs merged (the newest, by mtime, wins); hub/.locks is skipped
  hub/blobs    shared payloads of hub >= 1.33 (blobs/<2hex>/<xet hash>): each once, by
               hash; their .refs lists merged (union); .lock files skipped
  checked      every snapshot entry of every repo imported must lead to a file in the
               store: a repo that does not is an error (exit status 1), named
  datasets/, xet/  copied as they are (entries already in the store are kept)
  token, stored_tokens  never copied; anything else (e.g. modules/) is left alone

New entries keep their source owner, get the group (from the mount serving STORE, else
hf-users; --group overrides) and the policy's modes. Files are hard-linked when SRC and
STORE share a filesystem (their group and mode then change in SRC too), else copied and
verified byte for byte. Temporary files (*.incomplete) and lock files are skipped.
On the way to SRC only root's symlinks are followed (a user's symlink there is refused).

  --dry-run   show what would be imported, change nothing
  --move      at the end, delete each source file the store holds (verified); empty
              source directories are removed. A repo that could not be completed stays
              whole in SRC, with the shared payloads it links to
  --store     the store to import into
  --group     the group new entries get

Safe to interrupt and run again. Must run as root.
";

pub const STATS: &str = "\
Usage: hfcachefs stats [STORE|MOUNTPOINT] [--json]

Shows what the shared cache holds (default /huggingface): total size (each file counted
once, whatever its hard links), hub repos with their size and revisions, size per owner,
bytes shared by deduplication (a blob used by several revisions, hard links), bytes
hard-linked with files outside (e.g. imported caches not yet removed), and temporary
files (*.incomplete, import leftovers) older than a day. On an hfcachefs mountpoint, root
reads the store directly; members read through the mount. --json prints one JSON object.
";

pub const FIX_STORE: &str = "\
Usage: hfcachefs fix-store STORE [--dry-run] [--group NAME|GID]

Makes every entry of STORE follow the hfcachefs policy on disk: the configured group,
group bits copying the owner bits, setgid directories, no setuid/sticky bits, and the
store root itself 0700 root. Symlinks are never followed (their own group is set).
Prints each change; --dry-run prints them without changing anything.

The group (and others=) come from the hfcachefs mount serving STORE, if any, else the
default group hf-users; --group overrides. Must run as root.
";

pub const GC: &str = "\
Usage: hfcachefs gc [MOUNTPOINT] (--max-size SIZE | --free SIZE | --older-than DURATION)
                    [--dry-run] [--json]

Removes whole revisions from the shared cache at MOUNTPOINT (default /huggingface: the
root of an hfcachefs mount, or for root the store of a running mount; not a directory
below either), from every hub cache in it, least recently used first, until the goal is
met (each flag at most once):
  --max-size SIZE      the store's files take at most SIZE on disk, as du counts them
                       (500M, 2G, 1.5T; powers of 1024)
  --free SIZE          at least SIZE free on the store's disk
  --older-than DURATION  no revision unused for longer (30d, 12h, 90m)
A revision is used when any of its files is opened through a mount (the daemons record
it); revisions never opened through a mount count from their files' times.

A revision goes with the refs pointing at it; then the blobs and shared payloads no
remaining revision links to; then repos left empty (with their locks). Never removed: a
revision with a file open through any hfcachefs mount of the store (on any host), one
whose repo has a download in progress (an .incomplete file, a held lock), a pinned one
(see hfcachefs pin: with --older-than, pinned revisions do not leave the goal unmet).
Safe to interrupt: the next run finishes what was left.

  --dry-run   print the plan, change nothing (members may run it; through the mount
              they see files' times only)
  --json      one JSON object

Exit status 0 when the goal is met, 1 when not (the reason is printed), 2 for bad
arguments. Removing needs root.
";

pub const PIN: &str = "\
Usage: hfcachefs pin [REPO[@REVISION]] [MOUNTPOINT]

Keeps a repo (all its revisions) or one revision from eviction (gc and max_size=/min_free=
of the mount at MOUNTPOINT, default /huggingface; a store directory works too). REPO is
org/name (a model), datasets/org/name, spaces/org/name or models--org--name; REVISION a
commit or a ref (main: whatever it points to when eviction runs). Without REPO, lists the
pins (`hfcachefs pin /MOUNTPOINT` lists those of another mount). Pins are kept in the store. Must run as root.
";

pub const UNPIN: &str = "\
Usage: hfcachefs unpin REPO[@REVISION] [MOUNTPOINT]

Removes a pin made with hfcachefs pin (written the same way). Must run as root.
";
