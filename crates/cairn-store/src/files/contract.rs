//! What every [`BlobStore`] must do, written once as a check that the tests of each store
//! run against a real one: [`FsBlobs`](super::FsBlobs) on a folder and
//! [`PgBlobs`](super::PgBlobs) on a PostgreSQL server here, the S3 store of cairn-backup on
//! an S3 server there.

use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::{hex, BlobStore, StagedFile};

/// Runs the contract on `blobs` (which may hold other blobs; it adds and removes its own,
/// made unique by `seed`). The first broken promise is the error.
pub fn check_contract(blobs: &dyn BlobStore, seed: u64) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: crate::StoreError| format!("{what}: {err}")
    };
    // 9 MiB + 3: more than one row, one ranged read and one upload part of each store.
    let len = (9 << 20) + 3;
    let mut state = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let want = hex(&Sha256::digest(&bytes));

    let put = |data: &[u8]| -> Result<super::BlobId, String> {
        let mut staged = StagedFile::create(blobs).map_err(e("stage"))?;
        for part in data.chunks(1 << 20) {
            staged.write(part).map_err(e("write the staged file"))?;
        }
        let path = staged.path().to_path_buf();
        let id = staged.into_blob(blobs).map_err(e("put"))?;
        if path.exists() {
            return Err(format!("the staged file {} is left", path.display()));
        }
        Ok(id)
    };
    let id = put(&bytes)?;
    if id.hash != want || id.size != len as u64 {
        return Err(format!("put named {id:?}, not {want} of {len} bytes"));
    }

    let (mut r, size) = blobs
        .open(&want)
        .map_err(e("open"))?
        .ok_or("an answered put cannot be opened")?;
    if size != len as u64 {
        return Err(format!("opened with length {size}, not {len}"));
    }
    let mut back = Vec::new();
    r.read_to_end(&mut back).map_err(|x| format!("read: {x}"))?;
    if back != bytes {
        return Err("the bytes read differ from those put".into());
    }
    for at in [0u64, (1 << 20) - 5, (4 << 20) - 2, len as u64 - 7] {
        r.seek(SeekFrom::Start(at))
            .map_err(|x| format!("seek: {x}"))?;
        let mut ten = [0u8; 10];
        let n = r.read(&mut ten).map_err(|x| format!("read at {at}: {x}"))?;
        let at = at as usize;
        if n == 0 || ten[..n] != bytes[at..at + n] {
            return Err(format!("a read at {at} gave other bytes"));
        }
    }
    r.seek(SeekFrom::End(-1))
        .map_err(|x| format!("seek: {x}"))?;
    let mut last = [0u8; 2];
    let n = r.read(&mut last).map_err(|x| format!("read: {x}"))?;
    if n != 1 || last[0] != bytes[len - 1] {
        return Err("a read from the end gave other bytes".into());
    }
    drop(r);

    // The same bytes again: one blob.
    let again = put(&bytes)?;
    let listed = blobs.list().map_err(e("list"))?;
    if again != id || listed.iter().filter(|h| **h == want).count() != 1 {
        return Err("the same bytes put twice are not one listed blob".into());
    }
    // An empty file is a blob too.
    let empty = put(&[])?;
    let (mut r, size) = blobs
        .open(&empty.hash)
        .map_err(e("open"))?
        .ok_or("an empty blob cannot be opened")?;
    let mut none = Vec::new();
    r.read_to_end(&mut none).map_err(|x| format!("read: {x}"))?;
    if size != 0 || !none.is_empty() {
        return Err("an empty blob is not empty".into());
    }
    drop(r);
    // What is not there is `None`, not an error.
    let absent = hex(&Sha256::digest(seed.to_le_bytes()));
    for name in [absent.as_str(), "not-a-hash", "../../etc/passwd"] {
        if blobs.open(name).map_err(e("open"))?.is_some() {
            return Err(format!("{name:?} opened though never put"));
        }
    }

    // A staged file not written to for long is swept, a fresh one is not.
    let dir = blobs.staging_dir().map_err(e("staging folder"))?;
    let old = dir.join(format!("contract-old-{seed}"));
    let fresh = dir.join(format!("contract-fresh-{seed}"));
    let made = (|| -> std::io::Result<()> {
        std::fs::write(&old, b"x")?;
        std::fs::write(&fresh, b"x")?;
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&old)?
            .set_modified(hour_ago)
    })();
    made.map_err(|x| format!("make staged files: {x}"))?;
    blobs
        .sweep_staging(std::time::Duration::from_secs(1800))
        .map_err(e("sweep"))?;
    let swept = !old.exists() && fresh.exists();
    let _ = std::fs::remove_file(&fresh);
    if !swept {
        return Err("sweeping removed other than the old staged file".into());
    }

    // Removed: gone from open and list; removing again frees nothing.
    let freed = blobs.remove(&want).map_err(e("remove"))?;
    if freed != len as u64 {
        return Err(format!("remove freed {freed} bytes, not {len}"));
    }
    if blobs.open(&want).map_err(e("open"))?.is_some()
        || blobs.list().map_err(e("list"))?.contains(&want)
    {
        return Err("a removed blob is still there".into());
    }
    if blobs.remove(&want).map_err(e("remove again"))? != 0 {
        return Err("removing a removed blob freed bytes".into());
    }
    blobs.remove(&empty.hash).map_err(e("remove"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_contract;
    use crate::files::{FsBlobs, PgBlobs};

    #[test]
    fn a_folder_of_blobs_keeps_the_contract() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let blobs = FsBlobs::new(&dir.path().join("blobs"));
        check_contract(&blobs, 1).expect("the contract");
    }

    #[test]
    fn blobs_in_postgresql_keep_the_contract() -> Result<(), Box<dyn std::error::Error>> {
        let cluster = cairn_testkit::shared_cluster()?;
        let url = cluster.create_database(&cairn_testkit::unique_name("blobcontract"))?;
        // The tables are made by the schema's migration.
        drop(crate::Store::open(&crate::DatabaseUrl::parse(&url)?)?);
        check_contract(&PgBlobs::new(&url), 2)?;
        Ok(())
    }
}
