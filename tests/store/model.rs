//! Random sequences of operations run through the store and through a reference model
//! written from the README's rules and the kernel's (as mountpoint-s3's reference tests
//! do). Each step must give the same result or errno in both; afterwards the disk must hold
//! exactly the model's entries, each with the policy's group and mode and its creator as
//! owner, and every lookup must have been forgotten.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;

use hfcachefs::fs::store::{DirItem, Entry, NO_HANDLE, SetAttr};
use hfcachefs::policy::Others;
use hfcachefs::sys::SysResult;
use libc::{EACCES, EEXIST, EINVAL, EISDIR, ELOOP, ENOENT, ENOTDIR, ENOTEMPTY, EPERM};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::harness::{Attr, GID, Harness, KERNEL, caller, spec_mode};

/// Few names, so that operations keep meeting each other's entries.
const NAMES: [&str; 3] = ["a", "b", "c"];
/// Symlink targets: a sibling, out of the store, absolute. The store follows none of them.
const TARGETS: [&str; 3] = ["a", "../..", "/etc"];
/// (uid, gid, umask): a member by primary group, a member with umask 077, an outsider.
const CALLERS: [(u32, u32, u32); 3] = [
    (50001, GID, 0o022),
    (50002, GID, 0o077),
    (50003, 50003, 0o002),
];

/// A path below the store root, as indexes into [`NAMES`].
#[derive(Clone)]
struct P(Vec<usize>);

impl fmt::Debug for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", join(&self.0))
    }
}

impl P {
    fn parent(&self) -> &[usize] {
        &self.0[..self.0.len() - 1]
    }

    fn name(&self) -> &'static OsStr {
        OsStr::new(NAMES[self.0[self.0.len() - 1]])
    }
}

fn join(path: &[usize]) -> String {
    path.iter().map(|&i| NAMES[i]).collect::<Vec<_>>().join("/")
}

/// Permission bits asked for, shown in octal.
#[derive(Clone, Copy)]
struct Mode(u32);

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mkdir {
        at: P,
        mode: Mode,
        who: usize,
    },
    Mknod {
        at: P,
        mode: Mode,
        fifo: bool,
        who: usize,
    },
    Create {
        at: P,
        mode: Mode,
        excl: bool,
        trunc: bool,
        data: Vec<u8>,
        who: usize,
    },
    Symlink {
        at: P,
        target: usize,
        who: usize,
    },
    Link {
        from: P,
        at: P,
    },
    Unlink {
        at: P,
    },
    Rmdir {
        at: P,
    },
    Rename {
        from: P,
        to: P,
        /// 0, RENAME_NOREPLACE (1) or RENAME_EXCHANGE (2).
        flags: u32,
    },
    Chmod {
        at: P,
        mode: Mode,
    },
    Chown {
        at: P,
        who: usize,
    },
    Chgrp {
        at: P,
        ours: bool,
    },
    Truncate {
        at: P,
        size: u64,
    },
    Write {
        at: P,
        offset: u64,
        data: Vec<u8>,
    },
    Read {
        at: P,
    },
    Readlink {
        at: P,
    },
    Stat {
        at: P,
    },
    Readdir {
        at: P,
        plus: bool,
    },
}

/// What an operation answered.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Done,
    Attr(Attr),
    Data(Vec<u8>),
    /// Directory entries but `.` and `..`, with their `S_IF*` kinds.
    Names(BTreeMap<String, u32>),
}

fn op() -> impl Strategy<Value = Op> {
    // Short paths mostly: a random deep path seldom exists.
    let names = |len| vec(0..NAMES.len(), len);
    let path = || prop_oneof![3 => names(1), 2 => names(2), 1 => names(3)].prop_map(P);
    let dir = prop_oneof![names(0), names(1), names(2)].prop_map(P);
    let mode = || (0u32..0o10000).prop_map(Mode);
    let who = || 0..CALLERS.len();
    let data = || vec(any::<u8>(), 0..8);
    let flags = prop_oneof![
        Just(0),
        Just(libc::RENAME_NOREPLACE),
        Just(libc::RENAME_EXCHANGE)
    ];
    prop_oneof![
        4 => (path(), mode(), who()).prop_map(|(at, mode, who)| Op::Mkdir { at, mode, who }),
        2 => (path(), mode(), any::<bool>(), who())
            .prop_map(|(at, mode, fifo, who)| Op::Mknod { at, mode, fifo, who }),
        3 => (path(), mode(), any::<bool>(), any::<bool>(), data(), who()).prop_map(
            |(at, mode, excl, trunc, data, who)| Op::Create { at, mode, excl, trunc, data, who }
        ),
        1 => (path(), 0..TARGETS.len(), who())
            .prop_map(|(at, target, who)| Op::Symlink { at, target, who }),
        1 => (path(), path()).prop_map(|(from, at)| Op::Link { from, at }),
        1 => path().prop_map(|at| Op::Unlink { at }),
        1 => path().prop_map(|at| Op::Rmdir { at }),
        3 => (path(), path(), flags).prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        1 => (path(), mode()).prop_map(|(at, mode)| Op::Chmod { at, mode }),
        1 => (path(), who()).prop_map(|(at, who)| Op::Chown { at, who }),
        1 => (path(), any::<bool>()).prop_map(|(at, ours)| Op::Chgrp { at, ours }),
        1 => (path(), 0u64..16).prop_map(|(at, size)| Op::Truncate { at, size }),
        1 => (path(), 0u64..8, data())
            .prop_map(|(at, offset, data)| Op::Write { at, offset, data }),
        1 => path().prop_map(|at| Op::Read { at }),
        1 => path().prop_map(|at| Op::Readlink { at }),
        1 => path().prop_map(|at| Op::Stat { at }),
        1 => (dir, any::<bool>()).prop_map(|(at, plus)| Op::Readdir { at, plus }),
    ]
}

// ------------------------------------------------------------------ the store

/// Runs `op` on the store as the kernel would: every path looked up one name at a time.
fn run(h: &Harness, op: &Op) -> SysResult<Out> {
    let s = &h.store;
    let resolve = |path: &[usize]| h.resolve(&path.iter().map(|&i| NAMES[i]).collect::<Vec<_>>());
    let as_who = |who: &usize| {
        let (uid, gid, umask) = CALLERS[*who];
        (caller(uid, gid), umask)
    };
    let entry = |e: Entry| {
        h.hold(&e);
        Out::Attr(Attr::of_stat(&e.st))
    };
    let attr = |id| -> SysResult<Out> { Ok(Out::Attr(Attr::of_stat(&s.getattr(id)?.st))) };
    let setattr = |at: &P, change: &dyn Fn(&mut SetAttr)| -> SysResult<Out> {
        let mut set = SetAttr::default();
        change(&mut set);
        let e = s.setattr(resolve(&at.0)?, None, set)?;
        Ok(Out::Attr(Attr::of_stat(&e.st)))
    };
    match op {
        Op::Mkdir { at, mode, who } => {
            let ((who, umask), dir) = (as_who(who), resolve(at.parent())?);
            Ok(entry(s.mkdir(dir, at.name(), mode.0, umask, who)?))
        }
        Op::Mknod {
            at,
            mode,
            fifo,
            who,
        } => {
            let ((who, umask), dir) = (as_who(who), resolve(at.parent())?);
            let kind = if *fifo { libc::S_IFIFO } else { libc::S_IFREG };
            Ok(entry(s.mknod(dir, at.name(), kind | mode.0, umask, who)?))
        }
        Op::Create {
            at,
            mode,
            excl,
            trunc,
            data,
            who,
        } => {
            let ((who, umask), dir) = (as_who(who), resolve(at.parent())?);
            let mut flags = libc::O_CREAT | libc::O_RDWR;
            if *excl {
                flags |= libc::O_EXCL;
            }
            if *trunc {
                flags |= libc::O_TRUNC;
            }
            let (e, fh) = s.create(dir, at.name(), mode.0, umask, flags, who)?;
            let id = h.hold(&e);
            let written = s.write(fh, 0, data);
            s.release(fh);
            assert_eq!(written, Ok(data.len()), "write after create");
            attr(id)
        }
        Op::Symlink { at, target, who } => {
            let ((who, _), dir) = (as_who(who), resolve(at.parent())?);
            let target = OsStr::new(TARGETS[*target]);
            Ok(entry(s.symlink(dir, at.name(), target, who)?))
        }
        Op::Link { from, at } => {
            let id = resolve(&from.0)?;
            let dir = resolve(at.parent())?;
            Ok(entry(s.link(id, dir, at.name(), KERNEL)?))
        }
        Op::Unlink { at } => {
            s.unlink(resolve(at.parent())?, at.name(), KERNEL)?;
            Ok(Out::Done)
        }
        Op::Rmdir { at } => {
            s.rmdir(resolve(at.parent())?, at.name(), KERNEL)?;
            Ok(Out::Done)
        }
        Op::Rename { from, to, flags } => {
            let (old, new) = (resolve(from.parent())?, resolve(to.parent())?);
            s.rename(old, from.name(), new, to.name(), *flags, KERNEL)?;
            Ok(Out::Done)
        }
        Op::Chmod { at, mode } => setattr(at, &|set| set.mode = Some(mode.0)),
        Op::Chown { at, who } => setattr(at, &|set| set.uid = Some(CALLERS[*who].0)),
        Op::Chgrp { at, ours } => {
            let gid = if *ours { GID } else { GID + 1 };
            setattr(at, &|set| set.gid = Some(gid))
        }
        Op::Truncate { at, size } => setattr(at, &|set| set.size = Some(*size)),
        Op::Write { at, offset, data } => {
            let id = resolve(&at.0)?;
            let fh = s.open(id, libc::O_RDWR)?;
            let written = s.write(fh, *offset, data);
            s.release(fh);
            assert_eq!(written, Ok(data.len()), "write");
            attr(id)
        }
        Op::Read { at } => {
            let fh = s.open(resolve(&at.0)?, libc::O_RDONLY)?;
            let data = s.read(fh, 0, 64);
            s.release(fh);
            Ok(Out::Data(data?))
        }
        Op::Readlink { at } => Ok(Out::Data(s.readlink(resolve(&at.0)?)?)),
        Op::Stat { at } => attr(resolve(&at.0)?),
        Op::Readdir { at, plus } => {
            let id = resolve(&at.0)?;
            let mut names = BTreeMap::new();
            let add = |item: &DirItem| {
                if let Some(e) = &item.entry {
                    h.hold(e);
                }
                if item.name != b"." && item.name != b".." {
                    let name = String::from_utf8(item.name.clone()).expect("UTF-8 test names");
                    names.insert(name, item.kind);
                }
                false
            };
            // readdirplus through an opened directory, plain readdir without one.
            if *plus {
                let fh = s.opendir(id)?;
                let listed = s.readdir(id, fh, 0, true, KERNEL, add);
                s.releasedir(fh);
                listed?;
            } else {
                s.readdir(id, NO_HANDLE, 0, false, KERNEL, add)?;
            }
            Ok(Out::Names(names))
        }
    }
}

// ------------------------------------------------------------------ the model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Fifo,
    Symlink,
}

impl Kind {
    fn bits(self) -> u32 {
        match self {
            Kind::Dir => libc::S_IFDIR,
            Kind::File => libc::S_IFREG,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Symlink => libc::S_IFLNK,
        }
    }
}

/// An inode: hard links share one.
struct Node {
    kind: Kind,
    uid: u32,
    /// Permission bits on disk (symlinks: 0777).
    mode: u32,
    data: Vec<u8>,
    target: &'static str,
}

struct Model {
    others: Others,
    /// Every path below the root and its node.
    names: BTreeMap<Vec<usize>, usize>,
    nodes: Vec<Node>,
}

/// `data` after pwrite(2) of `buf` at `offset`.
fn write_at(data: &mut Vec<u8>, offset: u64, buf: &[u8]) {
    if buf.is_empty() {
        return;
    }
    let end = offset as usize + buf.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(buf);
}

impl Model {
    fn new(others: Others) -> Model {
        Model {
            others,
            names: BTreeMap::new(),
            nodes: Vec::new(),
        }
    }

    fn kind(&self, path: &[usize]) -> Option<Kind> {
        if path.is_empty() {
            return Some(Kind::Dir);
        }
        self.names.get(path).map(|&n| self.nodes[n].kind)
    }

    /// The lookups of the harness: each name looked up in a directory.
    fn walk(&self, path: &[usize]) -> Result<(), i32> {
        for i in 0..path.len() {
            if self.kind(&path[..i]) != Some(Kind::Dir) {
                return Err(ENOTDIR);
            }
            if self.kind(&path[..=i]).is_none() {
                return Err(ENOENT);
            }
        }
        Ok(())
    }

    /// The lookups, then the operation's own check that it works in a directory.
    fn dir(&self, path: &[usize]) -> Result<(), i32> {
        self.walk(path)?;
        match self.kind(path) {
            Some(Kind::Dir) => Ok(()),
            _ => Err(ENOTDIR),
        }
    }

    fn node(&self, path: &P) -> Result<usize, i32> {
        self.walk(&path.0)?;
        Ok(self.names[&path.0])
    }

    fn absent(&self, path: &P) -> Result<(), i32> {
        match self.names.contains_key(&path.0) {
            true => Err(EEXIST),
            false => Ok(()),
        }
    }

    fn has_children(&self, path: &[usize]) -> bool {
        self.names
            .keys()
            .any(|k| k.len() == path.len() + 1 && k.starts_with(path))
    }

    fn attr(&self, n: usize) -> Attr {
        let node = &self.nodes[n];
        Attr {
            kind: node.kind.bits(),
            mode: node.mode,
            uid: node.uid,
            gid: GID,
            size: (node.kind == Kind::File).then_some(node.data.len() as u64),
        }
    }

    /// What the store opens for I/O: regular files; a symlink as with O_NOFOLLOW.
    fn openable(&self, n: usize) -> Result<(), i32> {
        match self.nodes[n].kind {
            Kind::File => Ok(()),
            Kind::Dir => Err(EISDIR),
            Kind::Symlink => Err(ELOOP),
            Kind::Fifo => Err(EINVAL),
        }
    }

    /// A new entry made by caller `who` who asked for `mode`.
    fn make(&mut self, at: &P, kind: Kind, who: usize, mode: u32, target: &'static str) -> usize {
        let (uid, _, umask) = CALLERS[who];
        let mode = match kind {
            Kind::Symlink => 0o777,
            _ => spec_mode(kind == Kind::Dir, mode & !umask, self.others),
        };
        self.nodes.push(Node {
            kind,
            uid,
            mode,
            data: Vec::new(),
            target,
        });
        self.names.insert(at.0.clone(), self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    /// Removes `path` and everything below it, returning them by their path below it.
    fn take(&mut self, path: &[usize]) -> Vec<(Vec<usize>, usize)> {
        let below: Vec<_> = self
            .names
            .keys()
            .filter(|k| k.starts_with(path))
            .cloned()
            .collect();
        below
            .into_iter()
            .map(|k| {
                let n = self.names.remove(&k).expect("listed");
                (k[path.len()..].to_vec(), n)
            })
            .collect()
    }

    fn put(&mut self, path: &[usize], entries: Vec<(Vec<usize>, usize)>) {
        for (rest, n) in entries {
            self.names.insert([path, &rest].concat(), n);
        }
    }

    fn apply(&mut self, op: &Op) -> Result<Out, i32> {
        match op {
            Op::Mkdir { at, mode, who } => {
                self.dir(at.parent())?;
                self.absent(at)?;
                let n = self.make(at, Kind::Dir, *who, mode.0, "");
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Mknod {
                at,
                mode,
                fifo,
                who,
            } => {
                self.dir(at.parent())?;
                self.absent(at)?;
                let kind = if *fifo { Kind::Fifo } else { Kind::File };
                let n = self.make(at, kind, *who, mode.0, "");
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Create {
                at,
                mode,
                excl,
                trunc,
                data,
                who,
            } => {
                self.dir(at.parent())?;
                let n = match self.names.get(&at.0) {
                    None => self.make(at, Kind::File, *who, mode.0, ""),
                    Some(_) if *excl => return Err(EEXIST),
                    Some(&n) => {
                        // Found, not made: opened read-write as open(2) would allow it.
                        let (uid, gid, _) = CALLERS[*who];
                        let node = &self.nodes[n];
                        let bits = if uid == node.uid {
                            node.mode >> 6
                        } else if gid == GID {
                            node.mode >> 3
                        } else {
                            node.mode
                        };
                        if bits & 0o6 != 0o6 {
                            return Err(EACCES);
                        }
                        self.openable(n)?;
                        if *trunc {
                            self.nodes[n].data.clear();
                        }
                        n
                    }
                };
                write_at(&mut self.nodes[n].data, 0, data);
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Symlink { at, target, who } => {
                self.dir(at.parent())?;
                self.absent(at)?;
                let n = self.make(at, Kind::Symlink, *who, 0, TARGETS[*target]);
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Link { from, at } => {
                let n = self.node(from)?;
                self.walk(at.parent())?;
                if self.nodes[n].kind == Kind::Dir {
                    return Err(EPERM);
                }
                self.dir(at.parent())?;
                self.absent(at)?;
                self.names.insert(at.0.clone(), n);
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Unlink { at } => {
                self.dir(at.parent())?;
                match self.kind(&at.0) {
                    None => return Err(ENOENT),
                    Some(Kind::Dir) => return Err(EISDIR),
                    Some(_) => self.names.remove(&at.0),
                };
                Ok(Out::Done)
            }
            Op::Rmdir { at } => {
                self.dir(at.parent())?;
                match self.kind(&at.0) {
                    None => return Err(ENOENT),
                    Some(Kind::Dir) if self.has_children(&at.0) => return Err(ENOTEMPTY),
                    Some(Kind::Dir) => self.names.remove(&at.0),
                    Some(_) => return Err(ENOTDIR),
                };
                Ok(Out::Done)
            }
            Op::Rename { from, to, flags } => self.rename(from, to, *flags),
            Op::Chmod { at, mode } => {
                let n = self.node(at)?;
                let kind = self.nodes[n].kind;
                if kind != Kind::Symlink {
                    self.nodes[n].mode = spec_mode(kind == Kind::Dir, mode.0, self.others);
                }
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Chown { at, who } => {
                let n = self.node(at)?;
                self.nodes[n].uid = CALLERS[*who].0;
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Chgrp { at, ours } => {
                let n = self.node(at)?;
                match ours {
                    true => Ok(Out::Attr(self.attr(n))),
                    false => Err(EPERM),
                }
            }
            Op::Truncate { at, size } => {
                let n = self.node(at)?;
                match self.nodes[n].kind {
                    Kind::File => self.nodes[n].data.resize(*size as usize, 0),
                    Kind::Dir => return Err(EISDIR),
                    _ => return Err(EINVAL),
                }
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Write { at, offset, data } => {
                let n = self.node(at)?;
                self.openable(n)?;
                write_at(&mut self.nodes[n].data, *offset, data);
                Ok(Out::Attr(self.attr(n)))
            }
            Op::Read { at } => {
                let n = self.node(at)?;
                self.openable(n)?;
                Ok(Out::Data(self.nodes[n].data.clone()))
            }
            Op::Readlink { at } => {
                let node = &self.nodes[self.node(at)?];
                match node.kind {
                    Kind::Symlink => Ok(Out::Data(node.target.as_bytes().to_vec())),
                    _ => Err(EINVAL),
                }
            }
            Op::Stat { at } => Ok(Out::Attr(self.attr(self.node(at)?))),
            Op::Readdir { at, .. } => {
                self.dir(&at.0)?;
                let names = self
                    .names
                    .iter()
                    .filter(|(k, _)| k.len() == at.0.len() + 1 && k.starts_with(&at.0))
                    .map(|(k, &n)| (NAMES[k[k.len() - 1]].to_string(), self.nodes[n].kind.bits()))
                    .collect();
                Ok(Out::Names(names))
            }
        }
    }

    /// renameat2(2) in the order the kernel checks: both names, the flags, a directory
    /// moved into itself or over its own ancestor, the same inode, then the kinds.
    fn rename(&mut self, from: &P, to: &P, flags: u32) -> Result<Out, i32> {
        let (old_dir, new_dir) = (from.parent(), to.parent());
        self.walk(old_dir)?;
        self.walk(new_dir)?;
        self.dir(old_dir)?;
        self.dir(new_dir)?;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let Some(&src) = self.names.get(&from.0) else {
            return Err(ENOENT);
        };
        let dst = self.names.get(&to.0).copied();
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(EEXIST);
        }
        if exchange && dst.is_none() {
            return Err(ENOENT);
        }
        // lock_rename()'s trap: the child of the upper directory on the way to the lower.
        if old_dir != new_dir {
            if new_dir.starts_with(old_dir) && from.0 == new_dir[..=old_dir.len()] {
                return Err(EINVAL);
            }
            if old_dir.starts_with(new_dir) && to.0 == old_dir[..=new_dir.len()] {
                return Err(if exchange { EINVAL } else { ENOTEMPTY });
            }
        }
        if dst == Some(src) {
            return Ok(Out::Done);
        }
        if exchange {
            let (a, b) = (self.take(&from.0), self.take(&to.0));
            self.put(&from.0, b);
            self.put(&to.0, a);
            return Ok(Out::Done);
        }
        if let Some(dst) = dst {
            match (self.nodes[src].kind, self.nodes[dst].kind) {
                (Kind::Dir, Kind::Dir) if self.has_children(&to.0) => return Err(ENOTEMPTY),
                (Kind::Dir, Kind::Dir) => {}
                (Kind::Dir, _) => return Err(ENOTDIR),
                (_, Kind::Dir) => return Err(EISDIR),
                _ => {}
            }
            self.take(&to.0);
        }
        let moved = self.take(&from.0);
        self.put(&to.0, moved);
        Ok(Out::Done)
    }

    fn on_disk(&self) -> BTreeMap<String, Attr> {
        self.names
            .iter()
            .map(|(path, &n)| (join(path), self.attr(n)))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_store_does_what_the_model_does(
        others_read in any::<bool>(),
        ops in vec(op(), 1..40),
    ) {
        let others = if others_read { Others::Read } else { Others::None };
        let h = Harness::new(others);
        let mut model = Model::new(others);
        for (step, op) in ops.iter().enumerate() {
            let got = run(&h, op);
            h.forget_all();
            let want = model.apply(op);
            prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            prop_assert_eq!(h.store.inode_count().0, 1, "step {}: lookups left", step);
            prop_assert_eq!(h.on_disk(), model.on_disk(), "step {}: {:?}", step, op);
            prop_assert_eq!(h.violations(), Vec::<String>::new(), "step {}", step);
        }
    }
}
