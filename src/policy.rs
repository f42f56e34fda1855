//! The ownership and mode policy: the heart of hfcachefs, kept pure so it can be tested alone.
//!
//! Everything in the shared store belongs to one group and gives that group what its owner
//! has, whatever umask, primary group or chmod the caller used. That is what lets every member
//! open every lock file and blob, which the setgid-plus-umask recipe cannot guarantee.
//!
//! A few places of the cache layout refine that rule ([`Policy::mode_at`]): shared payloads
//! stay read-only, their `.refs` stay writable, hf_xet's directories stay writable, and
//! the private area stays owner-only.

use crate::cache::layout::Place;

/// What people outside the group may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Others {
    /// Nothing at all (the default).
    None,
    /// Read and traverse, never write.
    Read,
}

/// The policy in force for one mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub gid: u32,
    pub others: Others,
}

const S_IFMT: u32 = libc::S_IFMT;
const S_IFDIR: u32 = libc::S_IFDIR;
const S_IFLNK: u32 = libc::S_IFLNK;
const S_IFREG: u32 = libc::S_IFREG;

impl Policy {
    /// Permission bits to store (and report) for an inode of type `kind` (`S_IF*`) whose
    /// owner asked for `mode`: group bits copy the owner bits, others are cleared or
    /// capped at r-x, setuid/sticky are dropped, and directories get setgid so that
    /// anything created in the store by other means inherits the group.
    pub fn mode(&self, kind: u32, mode: u32) -> u32 {
        let kind = kind & S_IFMT;
        if kind == S_IFLNK {
            return 0o777;
        }
        let owner = mode & 0o700;
        let group = owner >> 3;
        let others = match self.others {
            Others::None => 0,
            Others::Read => mode & 0o005,
        };
        let setgid = if kind == S_IFDIR { libc::S_ISGID } else { 0 };
        owner | group | others | setgid
    }

    /// Mode for a new inode created with `mode` under `umask` (the owner's own bits keep the
    /// umask; only the group and others bits are decided by the policy).
    pub fn create_mode(&self, kind: u32, mode: u32, umask: u32) -> u32 {
        self.mode(kind, mode & !umask & 0o7777)
    }

    /// The attributes reported to the kernel for an on-disk `st_mode`: the same rule as on
    /// creation, so entries made outside the mount (an old umask-022 cache, 0644 lock files
    /// of old filelock versions) are usable by every member at once.
    pub fn report_mode(&self, st_mode: u32) -> u32 {
        let kind = st_mode & S_IFMT;
        kind | self.mode(kind, st_mode)
    }

    /// Permission bits of a user's private copy of a secret (`token`): the owner's bits
    /// and nothing else, whatever was asked, as huggingface_hub means them (0600).
    pub fn private_mode(&self, mode: u32) -> u32 {
        mode & 0o700
    }

    /// Permission bits an entry at `place` with on-disk `st_mode` should have: the rule of
    /// [`Policy::mode`], refined where the cache layout says what an entry is for.
    ///
    /// - A shared payload (`hub/blobs/<2hex>/<hash>`) is read-only, as huggingface_hub makes
    ///   it: owner and group read, others read only with `others=read`; write (and execute)
    ///   bits are never given, whatever its mode (a 0444 payload becomes 0440, not 0660).
    /// - Its `.refs` list is appended to by every member that links the payload: owner and
    ///   group read-write, whatever its mode.
    /// - hf_xet creates logs and staging files in `xet/`'s directories: owner and group
    ///   `rwx` (and setgid), whatever their mode.
    /// - The private area: root's 0700 directories, the owner's bits alone on files.
    pub fn mode_at(&self, place: Place, st_mode: u32) -> u32 {
        let kind = st_mode & S_IFMT;
        let mode = st_mode & 0o7777;
        match place {
            _ if kind == S_IFLNK => 0o777,
            // The daemons' records: root's, as they made them.
            Place::State => mode,
            Place::Private if kind == S_IFDIR => 0o700,
            Place::Private => self.private_mode(mode),
            Place::Payload if kind == S_IFREG => 0o440 | self.others_read_bits(),
            Place::PayloadRefs if kind == S_IFREG => self.mode(kind, mode | 0o600),
            Place::Xet if kind == S_IFDIR => self.mode(kind, mode | 0o700),
            _ => self.mode(kind, mode),
        }
    }

    /// The read bit others get: set only with `others=read`.
    fn others_read_bits(&self) -> u32 {
        match self.others {
            Others::None => 0,
            Others::Read => 0o004,
        }
    }

    /// Whether a chown/chgrp request may pass: the group can only be ours.
    pub fn group_allowed(&self, gid: Option<u32>) -> bool {
        gid.is_none_or(|g| g == self.gid)
    }
}

impl Others {
    /// The `others=` value that selects this.
    pub fn as_str(&self) -> &'static str {
        match self {
            Others::None => "none",
            Others::Read => "read",
        }
    }
}

/// What an entry needs to follow the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fix {
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl Fix {
    pub fn is_needed(&self) -> bool {
        self.gid.is_some() || self.mode.is_some()
    }
}

/// The changes that make an entry below the store root follow `policy` (a symlink's own
/// mode means nothing, so only its group is checked).
pub fn needed(st: &libc::stat, policy: &Policy) -> Fix {
    let kind = st.st_mode & libc::S_IFMT;
    let mode = st.st_mode & 0o7777;
    let want = policy.mode(kind, mode);
    Fix {
        gid: (st.st_gid != policy.gid).then_some(policy.gid),
        mode: (kind != libc::S_IFLNK && mode != want).then_some(want),
    }
}

/// The changes that keep an entry of the store's private area owner-only: directories
/// root's 0700 as the daemon makes them, files (users' secrets) the owner's bits alone.
pub fn needed_private(st: &libc::stat, policy: &Policy) -> Fix {
    let kind = st.st_mode & libc::S_IFMT;
    let mode = st.st_mode & 0o7777;
    let want = if kind == libc::S_IFDIR {
        0o700
    } else {
        policy.private_mode(mode)
    };
    Fix {
        gid: None,
        mode: (kind != libc::S_IFLNK && mode != want).then_some(want),
    }
}

/// The changes that make an entry at `place` below the store root follow `policy` as
/// [`Policy::mode_at`] refines it: what `fix-store` applies and `doctor` checks. Entries of
/// the private area keep their group (only their owner reaches them); a symlink's own mode
/// means nothing, so only its group is checked.
pub fn needed_at(st: &libc::stat, place: Place, policy: &Policy) -> Fix {
    let kind = st.st_mode & libc::S_IFMT;
    let mode = st.st_mode & 0o7777;
    let want = policy.mode_at(place, st.st_mode);
    let gid = !place.is_hidden() && st.st_gid != policy.gid;
    Fix {
        gid: gid.then_some(policy.gid),
        mode: (kind != libc::S_IFLNK && mode != want).then_some(want),
    }
}

/// The changes that make the store root root-only (0700, owned by root), as the daemon
/// creates it: users must reach the store only through the mount.
pub fn needed_root(st: &libc::stat) -> (Option<u32>, Option<u32>) {
    let mode = st.st_mode & 0o7777;
    (
        (st.st_uid != 0).then_some(0),
        (mode != 0o700).then_some(0o700),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: u32 = libc::S_IFREG;
    const DIR: u32 = libc::S_IFDIR;
    const LNK: u32 = libc::S_IFLNK;
    const FIFO: u32 = libc::S_IFIFO;

    fn none() -> Policy {
        Policy {
            gid: 1234,
            others: Others::None,
        }
    }

    fn read() -> Policy {
        Policy {
            gid: 1234,
            others: Others::Read,
        }
    }

    #[test]
    fn umask_022_file_gets_group_write() {
        assert_eq!(none().create_mode(REG, 0o666, 0o022), 0o660);
        assert_eq!(none().create_mode(REG, 0o644, 0o000), 0o660);
    }

    #[test]
    fn umask_077_file_still_shared_with_group() {
        assert_eq!(none().create_mode(REG, 0o666, 0o077), 0o660);
        assert_eq!(none().create_mode(REG, 0o600, 0o000), 0o660);
    }

    #[test]
    fn dirs_get_setgid_and_group_rwx() {
        assert_eq!(none().create_mode(DIR, 0o777, 0o022), 0o2770);
        assert_eq!(none().create_mode(DIR, 0o755, 0o000), 0o2770);
        assert_eq!(none().create_mode(DIR, 0o700, 0o000), 0o2770);
    }

    #[test]
    fn others_read_caps_at_r_x() {
        assert_eq!(read().create_mode(REG, 0o666, 0o022), 0o664);
        assert_eq!(read().create_mode(REG, 0o666, 0o077), 0o660);
        assert_eq!(read().create_mode(DIR, 0o777, 0o002), 0o2775);
        assert_eq!(read().mode(REG, 0o777), 0o775);
    }

    #[test]
    fn setuid_setgid_sticky_never_stored_on_files() {
        assert_eq!(none().mode(REG, 0o4755), 0o770);
        assert_eq!(none().mode(REG, 0o2755), 0o770);
        assert_eq!(none().mode(REG, 0o1644), 0o660);
        assert_eq!(none().mode(FIFO, 0o6666), 0o660);
    }

    #[test]
    fn sticky_dropped_on_dirs() {
        assert_eq!(none().mode(DIR, 0o1777), 0o2770);
    }

    #[test]
    fn chmod_cannot_take_group_access_away() {
        assert_eq!(none().mode(REG, 0o600), 0o660);
        assert_eq!(none().mode(REG, 0o400), 0o440);
        assert_eq!(none().mode(DIR, 0o700), 0o2770);
        assert_eq!(none().mode(REG, 0o000), 0o000);
    }

    #[test]
    fn symlinks_are_always_0777() {
        assert_eq!(none().mode(LNK, 0o700), 0o777);
        assert_eq!(none().report_mode(LNK | 0o777), LNK | 0o777);
    }

    #[test]
    fn existing_entries_are_reported_by_the_same_rule() {
        // An old filelock lock file and a umask-022 directory, made outside the mount.
        assert_eq!(none().report_mode(REG | 0o644), REG | 0o660);
        assert_eq!(none().report_mode(DIR | 0o755), DIR | 0o2770);
        assert_eq!(read().report_mode(REG | 0o644), REG | 0o664);
        // The 0700 store root is shown to members as a shared directory.
        assert_eq!(none().report_mode(DIR | 0o700), DIR | 0o2770);
    }

    #[test]
    fn private_copies_are_owner_only() {
        assert_eq!(none().private_mode(0o666), 0o600);
        assert_eq!(read().private_mode(0o4777), 0o700);
        assert_eq!(none().private_mode(0o644 & !0o022), 0o600);
    }

    #[test]
    fn group_changes_only_to_the_configured_group() {
        assert!(none().group_allowed(None));
        assert!(none().group_allowed(Some(1234)));
        assert!(!none().group_allowed(Some(0)));
        assert!(!none().group_allowed(Some(1235)));
    }

    fn st(kind: u32, mode: u32, gid: u32) -> libc::stat {
        let mut s = crate::sys::empty_stat();
        s.st_mode = kind | mode;
        s.st_gid = gid;
        s
    }

    const P: Policy = Policy {
        gid: 500,
        others: Others::None,
    };

    #[test]
    fn files_get_group_bits_and_group() {
        assert_eq!(
            needed(&st(libc::S_IFREG, 0o644, 0), &P),
            Fix {
                gid: Some(500),
                mode: Some(0o660)
            }
        );
        assert!(!needed(&st(libc::S_IFREG, 0o660, 500), &P).is_needed());
        assert_eq!(
            needed(&st(libc::S_IFREG, 0o4770, 500), &P).mode,
            Some(0o770)
        );
    }

    #[test]
    fn private_entries_stay_owner_only() {
        assert_eq!(
            needed_private(&st(libc::S_IFREG, 0o660, 500), &P).mode,
            Some(0o600)
        );
        assert!(!needed_private(&st(libc::S_IFREG, 0o600, 0), &P).is_needed());
        assert_eq!(
            needed_private(&st(libc::S_IFDIR, 0o2770, 0), &P).mode,
            Some(0o700)
        );
    }

    #[test]
    fn dirs_get_setgid() {
        assert_eq!(
            needed(&st(libc::S_IFDIR, 0o755, 500), &P).mode,
            Some(0o2770)
        );
        assert!(!needed(&st(libc::S_IFDIR, 0o2770, 500), &P).is_needed());
    }

    #[test]
    fn symlinks_only_get_the_group() {
        assert_eq!(
            needed(&st(libc::S_IFLNK, 0o777, 0), &P),
            Fix {
                gid: Some(500),
                mode: None
            }
        );
    }

    #[test]
    fn others_read_keeps_read_bits() {
        let p = Policy {
            gid: 500,
            others: Others::Read,
        };
        assert!(!needed(&st(libc::S_IFREG, 0o664, 500), &p).is_needed());
        assert_eq!(needed(&st(libc::S_IFREG, 0o666, 500), &p).mode, Some(0o664));
    }

    #[test]
    fn payloads_stay_read_only() {
        let payload = |mode, p: &Policy| needed_at(&st(REG, mode, 500), Place::Payload, p).mode;
        let read = Policy {
            gid: 500,
            others: Others::Read,
        };
        // As huggingface_hub makes them: 0400 plus group/other read.
        assert_eq!(payload(0o440, &P), None);
        assert_eq!(payload(0o444, &read), None);
        // Never write bits, whatever the mode: a 0444 payload is not made 0660.
        assert_eq!(payload(0o444, &P), Some(0o440));
        assert_eq!(payload(0o400, &P), Some(0o440));
        assert_eq!(payload(0o644, &P), Some(0o440));
        assert_eq!(payload(0o666, &read), Some(0o444));
        assert_eq!(payload(0o755, &read), Some(0o444));
        assert_eq!(payload(0o000, &P), Some(0o440));
        // The generic rule would have given group write to a writable one.
        assert_eq!(needed(&st(REG, 0o644, 500), &P).mode, Some(0o660));
        // What the daemon reports for a payload the client made 0444 or 0400 is the same.
        for mode in [0o444, 0o400] {
            assert_eq!(
                P.report_mode(REG | mode),
                REG | P.mode_at(Place::Payload, REG | 0o444)
            );
        }
        assert_eq!(read.report_mode(REG | 0o444), REG | 0o444);
        // The group, too.
        assert_eq!(
            needed_at(&st(REG, 0o440, 0), Place::Payload, &P).gid,
            Some(500)
        );
    }

    #[test]
    fn refs_locks_and_shards_are_shared_writable() {
        let at = |place, kind, mode| needed_at(&st(kind, mode, 500), place, &P).mode;
        // `.refs`: 0666 as the client makes it, appended to by every member.
        assert_eq!(at(Place::PayloadRefs, REG, 0o666), Some(0o660));
        assert_eq!(at(Place::PayloadRefs, REG, 0o660), None);
        assert_eq!(at(Place::PayloadRefs, REG, 0o444), Some(0o660));
        assert_eq!(at(Place::PayloadRefs, REG, 0o600), Some(0o660));
        // `<hash>.lock` (a fixed place) and the marker: the policy's rule.
        assert_eq!(at(Place::Fixed, REG, 0o666), Some(0o660));
        assert_eq!(at(Place::Fixed, REG, 0o660), None);
        // Shard directories and the shared blobs directory: setgid, group rwx.
        assert_eq!(at(Place::Shard, DIR, 0o755), Some(0o2770));
        assert_eq!(at(Place::SharedBlobs, DIR, 0o2770), None);
        // A payload-named symlink is still just a symlink.
        assert_eq!(at(Place::Payload, LNK, 0o777), None);
    }

    #[test]
    fn xet_directories_stay_writable() {
        let at = |place, kind, mode| needed_at(&st(kind, mode, 500), place, &P).mode;
        assert_eq!(at(Place::Xet, DIR, 0o555), Some(0o2770));
        assert_eq!(at(Place::Xet, DIR, 0o755), Some(0o2770));
        assert_eq!(at(Place::Xet, DIR, 0o2770), None);
        // Its files follow the ordinary rule.
        assert_eq!(at(Place::Xet, REG, 0o444), Some(0o440));
        // Elsewhere a read-only directory stays read-only for the group, as its owner chose.
        assert_eq!(at(Place::Other, DIR, 0o555), Some(0o2550));
    }

    #[test]
    fn needed_at_agrees_with_the_older_rules_elsewhere() {
        for place in [
            Place::Other,
            Place::Fixed,
            Place::Blobs,
            Place::Hub,
            Place::Loose,
        ] {
            for (kind, mode, gid) in [(REG, 0o644, 0), (DIR, 0o755, 500), (LNK, 0o777, 0)] {
                let s = st(kind, mode, gid);
                assert_eq!(needed_at(&s, place, &P), needed(&s, &P));
            }
        }
        for (kind, mode) in [(REG, 0o660), (DIR, 0o2770), (REG, 0o600)] {
            let s = st(kind, mode, 0);
            assert_eq!(needed_at(&s, Place::Private, &P), needed_private(&s, &P));
        }
    }

    #[test]
    fn store_root_is_root_only() {
        let mut s = st(libc::S_IFDIR, 0o755, 0);
        s.st_uid = 1000;
        assert_eq!(needed_root(&s), (Some(0), Some(0o700)));
        let s = st(libc::S_IFDIR, 0o700, 0);
        assert_eq!(needed_root(&s), (None, None));
    }
}
