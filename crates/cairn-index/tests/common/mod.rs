//! Shared set-up of the engine tests: a real SQLite file or a real PostgreSQL database,
//! a real index folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_index::{Indexer, IndexerOptions, OpenReport};
use cairn_store::{DatabaseUrl, NewContent, NodeRef, Store};
use serde_json::{json, Map, Value};

/// Which database a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A repository in a temp folder: its database URL and index folder.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub url: DatabaseUrl,
}

impl Repo {
    pub fn new(db: Db) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let url = match db {
            Db::Sqlite => DatabaseUrl::Sqlite(dir.path().join("cairn.db")),
            Db::Postgres => {
                let cluster = cairn_testkit::shared_cluster().expect("start PostgreSQL");
                let name = cairn_testkit::unique_name("cairn");
                DatabaseUrl::Postgres(cluster.create_database(&name).expect("create database"))
            }
        };
        Repo { dir, url }
    }

    pub fn index_dir(&self) -> PathBuf {
        self.dir.path().join("index")
    }

    pub fn store(&self) -> Arc<Store> {
        Arc::new(Store::open(&self.url).unwrap())
    }

    pub fn open(&self, store: &Arc<Store>) -> (Arc<Indexer>, OpenReport) {
        open_index(&self.index_dir(), store)
    }
}

pub fn options() -> IndexerOptions {
    IndexerOptions {
        writer_memory: 50 << 20,
        writer_threads: 1,
        ..IndexerOptions::default()
    }
}

pub fn open_index(dir: &Path, store: &Arc<Store>) -> (Arc<Indexer>, OpenReport) {
    Indexer::open(dir, store.clone(), options(), &|_| {}).unwrap()
}

pub fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub fn content(type_name: &str, name: &str, f: Value) -> NewContent {
    NewContent {
        type_name: type_name.into(),
        name: name.into(),
        fields: fields(f),
    }
}

pub fn create(store: &Store, parent: &str, type_name: &str, name: &str) -> cairn_store::Node {
    store
        .create(
            &NodeRef::from(parent),
            &content(type_name, name, json!({})),
            store.admin_id(),
        )
        .unwrap()
        .value
}

/// Asserts that the integrity check finds no difference.
pub fn assert_clean(indexer: &Indexer) {
    let report = indexer.check_integrity().unwrap();
    assert!(
        report.is_clean(),
        "differences: {:#?}",
        &report.differences[..report.differences.len().min(20)]
    );
    assert_eq!(report.database_items, report.index_documents);
}

/// Copies a folder (files only, one level deep: an index folder).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
