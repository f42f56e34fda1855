//! Users and groups: the NSS databases and this process's credentials.

use super::*;

/// A group as the group database (NSS) knows it.
pub struct GroupEntry {
    pub gid: u32,
    pub name: String,
    pub members: Vec<String>,
}

/// Reads C strings from a NULL-terminated array of pointers.
///
/// # Safety
/// `list` must be null or point to a NULL-terminated array of valid C strings.
unsafe fn c_string_list(mut list: *mut *mut libc::c_char) -> Vec<String> {
    let mut out = Vec::new();
    if list.is_null() {
        return out;
    }
    // SAFETY: guaranteed by the caller.
    unsafe {
        while !(*list).is_null() {
            out.push(CStr::from_ptr(*list).to_string_lossy().into_owned());
            list = list.add(1);
        }
    }
    out
}

/// Runs a reentrant NSS lookup (`get*_r`) with a buffer that grows on ERANGE. `call` gets
/// the buffer and returns the function's result and what it found, copied out of the buffer.
fn nss_lookup<T>(mut call: impl FnMut(&mut [u8]) -> (i32, Option<T>)) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match call(&mut buf) {
            (libc::ERANGE, _) if buf.len() < (1 << 24) => buf.resize(buf.len() * 4, 0),
            (0, found) => return Ok(found),
            (r, _) => return Err(io::Error::from_raw_os_error(r)),
        }
    }
}

/// Copies a group entry filled by `getgr*_r` out of its buffer.
///
/// # Safety
/// `result` must be null or point to a group entry whose strings are still valid.
unsafe fn group_entry(result: *mut libc::group) -> Option<GroupEntry> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        result.as_ref().map(|g| GroupEntry {
            gid: g.gr_gid,
            name: CStr::from_ptr(g.gr_name).to_string_lossy().into_owned(),
            members: c_string_list(g.gr_mem),
        })
    }
}

/// Looks up a group by name; `Ok(None)` if there is none.
pub fn group_by_name(name: &str) -> io::Result<Option<GroupEntry>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    nss_lookup(|buf| {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers valid for the given sizes; the entry is copied out while
        // `buf` is alive.
        unsafe {
            let r = libc::getgrnam_r(
                cname.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (r, group_entry(result))
        }
    })
}

/// Looks up a group by id; `Ok(None)` if there is none.
pub fn group_by_gid(gid: u32) -> io::Result<Option<GroupEntry>> {
    nss_lookup(|buf| {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in group_by_name.
        unsafe {
            let r = libc::getgrgid_r(
                gid,
                grp.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (r, group_entry(result))
        }
    })
}

/// A user's name and primary group from the user database; `Ok(None)` if there is none.
pub fn user_by_uid(uid: u32) -> io::Result<Option<(String, u32)>> {
    nss_lookup(|buf| {
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers valid for the given sizes; the name is copied out while
        // `buf` is alive.
        unsafe {
            let r = libc::getpwuid_r(
                uid,
                pwd.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            let found = result.as_ref().map(|p| {
                (
                    CStr::from_ptr(p.pw_name).to_string_lossy().into_owned(),
                    p.pw_gid,
                )
            });
            (r, found)
        }
    })
}

/// The real user id of this process.
pub fn real_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The groups this process carries now (primary and supplementary): what the kernel checks,
/// which lags behind the group database until the user logs in again.
pub fn process_groups() -> io::Result<Vec<u32>> {
    // SAFETY: getgid/getegid cannot fail.
    let (gid, egid) = unsafe { (libc::getgid(), libc::getegid()) };
    // SAFETY: a zero-sized query returns the count only.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds `n` entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    groups.extend([gid, egid]);
    Ok(groups)
}

/// A user's name from the user database, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    user_by_uid(uid).ok().flatten().map(|(name, _)| name)
}

/// A user for messages: `alice (uid 1000)`, or `uid 1000` without a name.
pub fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}
