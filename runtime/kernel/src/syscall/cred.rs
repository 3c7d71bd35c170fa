//! User and group ids: getuid and friends report, and setuid and friends
//! change, each process's real, effective and saved ids and its
//! supplementary groups, with Linux's rules for who may set what (an
//! effective uid of 0 may set anything; others only ids they already
//! have). Every program starts as root, forked children and execve keep
//! the ids. The ids are recorded and reported only: the file system does
//! not check permissions (everything in an image is root's).

use alloc::vec::Vec;

use kiln_kernel::errno::Errno;

use super::Call;
use crate::mm::uaccess::UserPtr;

/// `-1` for an id argument: leave that id as it is.
const UNCHANGED: u32 = u32::MAX;

/// Most supplementary groups (Linux's NGROUPS_MAX).
const NGROUPS_MAX: usize = 65536;

/// A process's ids.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// Real, effective and saved user ids.
    pub uids: [u32; 3],
    /// Real, effective and saved group ids.
    pub gids: [u32; 3],
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Credentials {
    fn privileged(&self) -> bool {
        self.uids[1] == 0
    }
}

/// Which ids a call changes.
#[derive(Clone, Copy)]
enum Kind {
    User,
    Group,
}

fn ids<'a>(p: &'a mut Call<'_>, kind: Kind) -> &'a mut [u32; 3] {
    match kind {
        Kind::User => &mut p.cred.uids,
        Kind::Group => &mut p.cred.gids,
    }
}

/// getuid(2).
pub fn getuid(p: &mut Call) -> Result<u64, Errno> {
    Ok(u64::from(p.cred.uids[0]))
}

/// geteuid(2).
pub fn geteuid(p: &mut Call) -> Result<u64, Errno> {
    Ok(u64::from(p.cred.uids[1]))
}

/// getgid(2).
pub fn getgid(p: &mut Call) -> Result<u64, Errno> {
    Ok(u64::from(p.cred.gids[0]))
}

/// getegid(2).
pub fn getegid(p: &mut Call) -> Result<u64, Errno> {
    Ok(u64::from(p.cred.gids[1]))
}

fn write_three(p: &mut Call, ids: [u32; 3], at: [UserPtr<u32>; 3]) -> Result<u64, Errno> {
    for (id, ptr) in ids.into_iter().zip(at) {
        p.mem.write(ptr, id)?;
    }
    Ok(0)
}

/// getresuid(2).
pub fn getresuid(
    p: &mut Call,
    real: UserPtr<u32>,
    effective: UserPtr<u32>,
    saved: UserPtr<u32>,
) -> Result<u64, Errno> {
    let ids = p.cred.uids;
    write_three(p, ids, [real, effective, saved])
}

/// getresgid(2).
pub fn getresgid(
    p: &mut Call,
    real: UserPtr<u32>,
    effective: UserPtr<u32>,
    saved: UserPtr<u32>,
) -> Result<u64, Errno> {
    let ids = p.cred.gids;
    write_three(p, ids, [real, effective, saved])
}

/// setresuid/setresgid: each id not UNCHANGED becomes the new one; an
/// unprivileged caller may only use ids it has.
fn set_three(p: &mut Call, kind: Kind, new: [u32; 3]) -> Result<u64, Errno> {
    let privileged = p.cred.privileged();
    let current = *ids(p, kind);
    if !privileged
        && new
            .iter()
            .any(|&id| id != UNCHANGED && !current.contains(&id))
    {
        return Err(Errno::Perm);
    }
    let target = ids(p, kind);
    for (slot, id) in target.iter_mut().zip(new) {
        if id != UNCHANGED {
            *slot = id;
        }
    }
    Ok(0)
}

/// setresuid(2).
pub fn setresuid(p: &mut Call, real: u32, effective: u32, saved: u32) -> Result<u64, Errno> {
    set_three(p, Kind::User, [real, effective, saved])
}

/// setresgid(2).
pub fn setresgid(p: &mut Call, real: u32, effective: u32, saved: u32) -> Result<u64, Errno> {
    set_three(p, Kind::Group, [real, effective, saved])
}

/// setreuid/setregid: the saved id follows the effective one when the real
/// id is set, or the effective one becomes other than the real one.
fn set_two(p: &mut Call, kind: Kind, real: u32, effective: u32) -> Result<u64, Errno> {
    let privileged = p.cred.privileged();
    let [r, e, s] = *ids(p, kind);
    if !privileged
        && ((real != UNCHANGED && real != r && real != e)
            || (effective != UNCHANGED && effective != r && effective != e && effective != s))
    {
        return Err(Errno::Perm);
    }
    let new_real = if real == UNCHANGED { r } else { real };
    let new_effective = if effective == UNCHANGED { e } else { effective };
    let new_saved = if real != UNCHANGED || (effective != UNCHANGED && effective != r) {
        new_effective
    } else {
        s
    };
    *ids(p, kind) = [new_real, new_effective, new_saved];
    Ok(0)
}

/// setreuid(2).
pub fn setreuid(p: &mut Call, real: u32, effective: u32) -> Result<u64, Errno> {
    set_two(p, Kind::User, real, effective)
}

/// setregid(2).
pub fn setregid(p: &mut Call, real: u32, effective: u32) -> Result<u64, Errno> {
    set_two(p, Kind::Group, real, effective)
}

/// setuid/setgid: a privileged caller sets all three ids, another only the
/// effective one, to its real or saved id.
fn set_one(p: &mut Call, kind: Kind, id: u32) -> Result<u64, Errno> {
    if id == UNCHANGED {
        return Err(Errno::Inval);
    }
    let privileged = p.cred.privileged();
    let target = ids(p, kind);
    if privileged {
        *target = [id; 3];
    } else if id == target[0] || id == target[2] {
        target[1] = id;
    } else {
        return Err(Errno::Perm);
    }
    Ok(0)
}

/// setuid(2).
pub fn setuid(p: &mut Call, uid: u32) -> Result<u64, Errno> {
    set_one(p, Kind::User, uid)
}

/// setgid(2).
pub fn setgid(p: &mut Call, gid: u32) -> Result<u64, Errno> {
    set_one(p, Kind::Group, gid)
}

/// setfsuid(2): file-system ids follow the effective ones (kiln checks no
/// permissions); returns the current one.
pub fn setfsuid(p: &mut Call, _uid: u32) -> Result<u64, Errno> {
    Ok(u64::from(p.cred.uids[1]))
}

/// setfsgid(2): as setfsuid.
pub fn setfsgid(p: &mut Call, _gid: u32) -> Result<u64, Errno> {
    Ok(u64::from(p.cred.gids[1]))
}

/// getgroups(2): the supplementary groups (their count when `size` is 0).
pub fn getgroups(p: &mut Call, size: i32, list: UserPtr<u32>) -> Result<u64, Errno> {
    let n = p.cred.groups.len();
    let size = usize::try_from(size).map_err(|_| Errno::Inval)?;
    if size == 0 {
        return Ok(n as u64);
    }
    if size < n {
        return Err(Errno::Inval);
    }
    let groups = p.cred.groups.clone();
    for (i, g) in groups.iter().enumerate() {
        p.mem.write(UserPtr::new(list.addr() + 4 * i as u64), *g)?;
    }
    Ok(n as u64)
}

/// setgroups(2): privileged only; kept sorted, as Linux keeps them.
pub fn setgroups(p: &mut Call, size: u64, list: UserPtr<u32>) -> Result<u64, Errno> {
    if !p.cred.privileged() {
        return Err(Errno::Perm);
    }
    let size = usize::try_from(size).map_err(|_| Errno::Inval)?;
    if size > NGROUPS_MAX {
        return Err(Errno::Inval);
    }
    let mut groups = Vec::with_capacity(size);
    for i in 0..size {
        groups.push(
            p.mem
                .read(UserPtr::<u32>::new(list.addr() + 4 * i as u64))?,
        );
    }
    // Linux keeps them sorted (and getgroups shows them so).
    groups.sort_unstable();
    p.cred.groups = groups;
    Ok(0)
}
