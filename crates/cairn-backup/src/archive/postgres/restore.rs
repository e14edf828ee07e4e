//! Restoring a PostgreSQL archive to a time: a new cluster recovered by PostgreSQL, and the
//! newest index backup not ahead of it.

use std::path::Path;

use cairn_store::pg_physical;
use cairn_store::CancelToken;

use super::reach::{base_reader, fetch_wal, reaches};
use super::{PgBaseInfo, Reach};
use crate::archive::pick::{newer_index, readable_manifests, RestoreAt};
use crate::clock::format_ms;
use crate::error::{io, BackupError, Result};
use crate::repo::Repository;

/// What a restore of PostgreSQL to a time did.
#[derive(Clone, Debug)]
pub struct PgRestored {
    /// The time restored to (RFC 3339).
    pub at: String,
    /// The base put back.
    pub base: String,
    /// Bytes of WAL fetched for the recovery.
    pub wal_bytes: u64,
    /// The timeline the restored cluster goes on with.
    pub timeline: u32,
    /// The time was after the last commit the archive holds: all of its WAL was replayed.
    pub replayed_all: bool,
    /// The database's last activity after the recovery.
    pub last_activity_id: i64,
    /// The index put back (`None`: none was not ahead of the database; the next start
    /// rebuilds it).
    pub index_from: Option<String>,
}

/// Restores the PostgreSQL archive of `repo` to `at`: a new cluster in `pg_data` (absent or
/// empty), recovered by PostgreSQL to the time, and into `target`'s data folder the newest
/// index backup of the archive that is not ahead of the recovered database. `target`'s
/// database URL names the database in the cluster (its host and port are those the cluster
/// will be served on; the recovery runs on a port of its own). The cluster is left stopped.
pub fn restore_at_postgres(
    repo: &Repository,
    at: RestoreAt,
    target: &crate::restore::RestoreTarget,
    pg_data: &Path,
    identities: Option<&crate::repo::crypt::Identities>,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<PgRestored> {
    let cairn_store::DatabaseUrl::Postgres(url) = &target.database else {
        return Err(BackupError::Refused(
            "a PostgreSQL archive restores into a PostgreSQL database: give --database \
             postgres://..."
                .into(),
        ));
    };
    let (manifests, _) = readable_manifests(repo, identities)?;
    // Every base whose WAL reaches its own end: (base, its reach, when it finished).
    let restorable: Vec<(PgBaseInfo, Reach, i64)> = reaches(repo)?
        .into_iter()
        .filter_map(|r| {
            let finished = crate::clock::parse_ms(&r.base.finished_at)?;
            let reach = r.reach.filter(|x| x.at_ms >= finished)?;
            Some((r.base, reach, finished))
        })
        .collect();
    let window = || {
        if restorable.is_empty() {
            return "it has no PostgreSQL base backup whose WAL reaches its end".to_string();
        }
        restorable
            .iter()
            .map(|(b, r, _)| {
                format!(
                    "{} .. {} (from {})",
                    b.finished_at,
                    format_ms(r.at_ms),
                    b.name
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ((base, reach, _), target_time) = match at {
        RestoreAt::Latest => {
            let chosen = restorable
                .iter()
                .max_by_key(|(_, r, finished)| (r.at_ms, *finished))
                .ok_or_else(|| {
                    BackupError::NotFound(format!(
                        "{} has no PostgreSQL base backup to restore from",
                        repo.url().display()
                    ))
                })?;
            (chosen, None)
        }
        RestoreAt::Time(t) => {
            let chosen = restorable
                .iter()
                .filter(|(_, r, finished)| *finished <= t && t <= r.at_ms)
                .max_by_key(|(_, _, finished)| *finished)
                .ok_or_else(|| {
                    BackupError::Refused(format!(
                        "{} is outside the restorable window of {}: {}; nothing was changed",
                        format_ms(t),
                        repo.url().display(),
                        window()
                    ))
                })?;
            (chosen, Some(t))
        }
    };
    // PostgreSQL runs in the folder: a relative path would name another place for it.
    let pg_data = &std::path::absolute(pg_data)
        .map_err(io(format!("the absolute path of {}", pg_data.display())))?;
    // Before anything is written: PostgreSQL will run as the folder's owner.
    let user = pg_physical::server_user(pg_data)?;
    cancel.check()?;
    progress(0, base.bytes);
    pg_physical::extract_base(&mut base_reader(repo, base), pg_data, user)?;
    progress(base.bytes, base.bytes);
    cancel.check()?;
    let wal_dir = pg_data.join("cairn-restore-wal");
    let wal_bytes = fetch_wal(repo, base, reach, &wal_dir)?;
    // The server's `cp` reads them as its own user.
    if let Some((uid, gid)) = user {
        let entries =
            std::fs::read_dir(&wal_dir).map_err(io(format!("read {}", wal_dir.display())))?;
        for p in std::iter::once(wal_dir.clone()).chain(entries.flatten().map(|e| e.path())) {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                .map_err(io(format!("chown {}", p.display())))?;
        }
    }
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(io("find a free port for the recovery"))?
        .port();
    // PostgreSQL's own form (it refuses RFC 3339's `T` and `Z` in this setting), at the end
    // of the millisecond: the archive's times are milliseconds, and a transaction committed
    // at 10:15:03.250400 is one "at 10:15:03.250" (as SQLite's changes, kept by the
    // millisecond, are). The window's end, so given, then replays all of the WAL.
    let target_text = target_time.map(|t| {
        crate::clock::format_end_of_ms(t)
            .replacen('T', " ", 1)
            .replace('Z', "+00")
    });
    let recovered = pg_physical::recover(
        pg_data,
        &wal_dir,
        target_text.as_deref(),
        base.timeline,
        url,
        port,
        cancel,
    )?;
    // All of the WAL replayed: it must have reached as far as the archive does, or some of
    // it was unreadable (PostgreSQL takes a WAL it cannot read for its end).
    if recovered.replayed_all {
        // (An insert position read at a page's start is past that page's header, up to 40
        // bytes beyond the end of the record before it.)
        if let Some(end) = recovered.end_lsn.filter(|&e| e + 40 < reach.lsn) {
            return Err(BackupError::Invalid(format!(
                "the recovery ended at {} short of the archived WAL's {}: a segment was \
                 missing or unreadable (see {}); nothing is usable in {}",
                pg_physical::format_lsn(end),
                pg_physical::format_lsn(reach.lsn),
                pg_data.join("cairn-restore.log").display(),
                pg_data.display()
            )));
        }
    }
    let during = crate::restore::RestoreTarget {
        data_dir: target.data_dir.clone(),
        database: cairn_store::DatabaseUrl::Postgres(recovered.url.clone()),
    };
    let facts = cairn_store::peek_database(&during.database)?.ok_or_else(|| {
        BackupError::Invalid(format!(
            "the recovered cluster has no Cairn database at {}",
            cairn_store::DatabaseUrl::Postgres(url.clone()).redacted()
        ))
    })?;
    if facts.repository_id != base.repository_id {
        return Err(BackupError::Invalid(format!(
            "the recovered database holds repository {}, its base says {}",
            facts.repository_id, base.repository_id
        )));
    }
    // The index: the newest index backup not ahead of the database; else none (rebuilt).
    let upto = target_time.unwrap_or(i64::MAX);
    let index_from = newer_index(
        repo,
        &manifests,
        identities,
        i64::MIN,
        upto,
        &during,
        progress,
        cancel,
    );
    if index_from.is_none() {
        let index = target.data_dir.join(crate::manifest::INDEX_DIR);
        if index.exists() {
            std::fs::remove_dir_all(&index).map_err(io(format!("remove {}", index.display())))?;
        }
    }
    let (timeline, replayed_all) = (recovered.timeline, recovered.replayed_all);
    recovered.finish()?;
    std::fs::remove_dir_all(&wal_dir).map_err(io(format!("remove {}", wal_dir.display())))?;
    Ok(PgRestored {
        at: format_ms(target_time.unwrap_or(reach.at_ms)),
        base: base.name.clone(),
        wal_bytes,
        timeline,
        replayed_all: replayed_all && target_time.is_some(),
        last_activity_id: facts.last_activity_id.0,
        index_from,
    })
}
