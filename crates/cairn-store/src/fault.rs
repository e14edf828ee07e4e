//! Faults Cairn must survive: what an injected failure looks like, and how a full disk is
//! recognised wherever it surfaces.
//!
//! Failure points are the `fail` crate's `fail_point!`s, named `component::step`
//! (`indexer::commit`, `store::write`, `backup::manifest`, ...). They are compiled in only
//! when the `fail/failpoints` feature is on, which the workspace enables for tests alone:
//! in a release build every one of them is nothing. A point configured with
//! `return(MESSAGE)` fails its step with [`injected`]`(MESSAGE)`.

use std::io;

/// The I/O error a failure point injects: "no space left on device" (the fault the points
/// stand for most often) unless the point's configuration gives a message of its own, in
/// which case it is an error of kind `Other` with that message.
pub fn injected(point: &str, message: Option<String>) -> io::Error {
    match message.as_deref() {
        None | Some("") | Some("enospc") => io::Error::from(io::ErrorKind::StorageFull),
        Some(m) => io::Error::other(format!("{m} (injected at {point})")),
    }
}

/// True when `e` says that the disk (or the file system's quota) is full: ENOSPC and
/// EDQUOT, however they were wrapped.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disks_are_recognised() {
        assert!(is_disk_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_disk_full(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(is_disk_full(&injected("x", None)));
        assert!(!is_disk_full(&injected("x", Some("boom".into()))));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(libc::EIO)));
    }
}
