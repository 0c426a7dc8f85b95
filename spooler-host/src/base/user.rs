//! Who this process runs as: the owner of the sockets and files it makes, and the user
//! whose provider libraries it trusts.

/// The effective user id.
#[cfg(unix)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
