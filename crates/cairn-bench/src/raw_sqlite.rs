//! Raw SQLite baseline: the fastest straightforward way to store the corpus rows
//! in SQLite, for comparison with Cairn's own store.
//!
//! Settings: WAL journal, `synchronous=NORMAL`, one prepared `INSERT` reused for
//! every row, one transaction per `batch_rows` rows (default 10,000), and a final
//! `wal_checkpoint(TRUNCATE)` so that the reported size is the database file alone.
//! The table has the columns a content store needs (see [`SCHEMA`]), including the
//! `path` UNIQUE index and a `parent_path` index for listing children.
//!
//! [`insert_fts5`] does the same plus a contentless FTS5 table over
//! `display_name`, `description` and `body` (rowid = item id), which query
//! benchmarks can compare against the Tantivy index.
//!
//! Timings cover opening the database, creating the schema, all inserts, commits,
//! the checkpoint and closing — not producing the [`Row`]s (they are already typed,
//! with `fields_json` serialised).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{params, Connection};

use crate::corpus::Row;
use crate::measure::{Stats, Timer};

/// Rows per transaction unless told otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 10_000;

/// The items table: comparable to what a content store keeps per item.
pub const SCHEMA: &str = "
CREATE TABLE items (
    id           INTEGER PRIMARY KEY,
    parent_path  TEXT,
    name         TEXT NOT NULL,
    path         TEXT NOT NULL UNIQUE,
    type         TEXT NOT NULL,
    display_name TEXT,
    description  TEXT,
    fields       TEXT NOT NULL,      -- JSON object of the remaining properties
    publish_date INTEGER,            -- Unix seconds
    created_at   INTEGER NOT NULL,   -- Unix seconds
    modified_at  INTEGER NOT NULL    -- Unix seconds
);
CREATE INDEX items_parent_path ON items(parent_path);
";

/// Contentless FTS5 table used by [`insert_fts5`]; rowid = `items.id`.
pub const FTS5_SCHEMA: &str = "
CREATE VIRTUAL TABLE items_fts USING fts5(
    display_name, description, body,
    content = '', contentless_delete = 1
);
";

const INSERT_ITEM: &str = "INSERT INTO items (id, parent_path, name, path, type, display_name,
    description, fields, publish_date, created_at, modified_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)";

const INSERT_FTS: &str =
    "INSERT INTO items_fts (rowid, display_name, description, body) VALUES (?1, ?2, ?3, ?4)";

/// Opens (creating if needed) a database with the benchmark's pragmas.
pub fn open(db_path: &Path) -> anyhow::Result<Connection> {
    let conn =
        Connection::open(db_path).with_context(|| format!("opening {}", db_path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Inserts `rows` into a fresh `items` table at `db_path` (the file must not
/// exist yet) in transactions of `batch_rows` rows.
pub fn insert_all(rows: &[Row], db_path: &Path, batch_rows: usize) -> anyhow::Result<Stats> {
    run(rows, db_path, batch_rows, false)
}

/// Like [`insert_all`], and also indexes the text columns in the FTS5 table
/// `items_fts` within the same transactions.
pub fn insert_fts5(rows: &[Row], db_path: &Path, batch_rows: usize) -> anyhow::Result<Stats> {
    run(rows, db_path, batch_rows, true)
}

fn run(rows: &[Row], db_path: &Path, batch_rows: usize, fts: bool) -> anyhow::Result<Stats> {
    anyhow::ensure!(
        !db_path.exists(),
        "{} already exists; the baseline needs a fresh database",
        db_path.display()
    );
    let batch_rows = batch_rows.max(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);

    let timer = Timer::start();
    let mut conn = open(db_path)?;
    conn.execute_batch(SCHEMA)?;
    if fts {
        conn.execute_batch(FTS5_SCHEMA)?;
    }
    for chunk in rows.chunks(batch_rows) {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT_ITEM)?;
            for r in chunk {
                insert.execute(params![
                    r.id,
                    r.parent_path,
                    r.name,
                    r.path,
                    r.type_name,
                    r.display_name,
                    r.description,
                    r.fields_json,
                    r.publish_date,
                    now,
                ])?;
            }
            if fts {
                let mut insert = tx.prepare_cached(INSERT_FTS)?;
                for r in chunk {
                    insert.execute(params![r.id, r.display_name, r.description, r.body])?;
                }
            }
        }
        tx.commit()?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close().map_err(|(_, e)| e)?;
    let seconds = timer.secs();

    Ok(Stats {
        items: rows.len() as u64,
        seconds,
        bytes: db_files(db_path).iter().map(|p| file_len(p)).sum(),
    })
}

/// The database file and its `-wal` / `-shm` companions.
pub fn db_files(db_path: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut s = db_path.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        })
        .collect()
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cairn-bench-sqlite-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn rows(n: usize) -> Vec<Row> {
        corpus::items(n, 11)
            .enumerate()
            .map(|(i, it)| Row::from_item(i as i64 + 1, &it))
            .collect()
    }

    #[test]
    fn inserts_everything() {
        let dir = temp_dir("plain");
        let rows = rows(2500);
        let db = dir.join("items.db");
        let stats = insert_all(&rows, &db, 1000).unwrap();
        assert_eq!(stats.items, 2500);
        assert!(stats.bytes > 0);
        let conn = Connection::open(&db).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2500);
        let children: i64 = conn
            .query_row(
                "SELECT count(*) FROM items WHERE parent_path = ?1",
                [corpus::ROOT_PATH],
                |r| r.get(0),
            )
            .unwrap();
        assert!(children >= 10);
        assert!(insert_all(&rows, &db, 1000).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fts5_matches() {
        let dir = temp_dir("fts");
        let rows = rows(1000);
        let db = dir.join("items.db");
        insert_fts5(&rows, &db, 300).unwrap();
        let conn = Connection::open(&db).unwrap();
        let common: i64 = conn
            .query_row(
                "SELECT count(*) FROM items_fts WHERE items_fts MATCH ?1",
                [corpus::word(0)],
                |r| r.get(0),
            )
            .unwrap();
        let articles = rows.iter().filter(|r| r.type_name == "Article").count() as i64;
        assert!(common >= articles * 9 / 10, "{common} of {articles}");
        let joined: i64 = conn
            .query_row(
                "SELECT count(*) FROM items JOIN items_fts ON items.id = items_fts.rowid
                 WHERE items_fts MATCH ?1",
                [corpus::word(0)],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(joined, common);
        fs::remove_dir_all(&dir).unwrap();
    }
}
