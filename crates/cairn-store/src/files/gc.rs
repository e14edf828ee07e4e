//! Collecting the blobs no item names any more: an overwritten file's old bytes, the blob
//! of an upload cut short between its blob and its item.
//!
//! What may still need such a blob, and why it is not kept for it:
//! - a retained backup holds its own copy (a backup's `blobs/`, a packed backup's chunks, a
//!   PostgreSQL dump's rows); a restore puts them back;
//! - a continuous archive holds its own copy too (`pitr-blobs/`, or PostgreSQL's WAL), as
//!   soon as it is shipped: a blob the archive has not shipped yet is kept (the caller says
//!   which are shipped);
//! - an upload or a backup in progress: collection runs with nothing else running on the
//!   repository (the data folder's lock; on PostgreSQL, no other Cairn session), so none is.

use std::collections::HashSet;

use crate::error::Result;
use crate::store::Store;

/// What [`collect_unreferenced`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Blobs in the store that the database does not name.
    pub unreferenced: usize,
    /// Of those, the ones removed (or, in a dry run, that would be).
    pub removed: Vec<String>,
    /// Bytes freed (or that would be).
    pub bytes: u64,
    /// Unreferenced blobs kept because the continuous archive has not shipped them yet.
    pub kept_unshipped: usize,
}

/// Removes the blobs of `store` that its database does not name, except those `shipped`
/// (the continuous archive's blobs, when one is configured) lacks. With `dry_run`, only
/// says what it would remove.
pub fn collect_unreferenced(
    store: &Store,
    shipped: Option<&HashSet<String>>,
    dry_run: bool,
) -> Result<Collected> {
    let named = store.referenced_blobs()?;
    let blobs = store.blobs();
    let mut out = Collected::default();
    for hash in blobs.list()? {
        if named.contains_key(&hash) {
            continue;
        }
        out.unreferenced += 1;
        if shipped.is_some_and(|s| !s.contains(&hash)) {
            out.kept_unshipped += 1;
            continue;
        }
        out.bytes += if dry_run {
            blobs.open(&hash)?.map_or(0, |(_, len)| len)
        } else {
            blobs.remove(&hash)?
        };
        out.removed.push(hash);
    }
    Ok(out)
}
