//! Continuous archiving of SQLite: every write transaction recorded as a changeset, applied
//! onto a base copy, gives the database as it was after any of them; a gap or a change
//! applied onto the wrong position is refused.

use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_store::archive::{apply_changes, archive_seq_of, ChangeRecord};
use cairn_store::{CancelToken, DatabaseUrl, NewContent, NodeRef, Store, UpdateMode};
use rusqlite::Connection;
use serde_json::{json, Map};

fn rows(path: &Path) -> Vec<(i64, String, String, String)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, path, display_name, fields FROM nodes ORDER BY id")
        .unwrap();
    let r = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    r
}

fn folder(store: &Store, parent: &str, name: &str) {
    store
        .create(
            &NodeRef::from(parent),
            &NewContent {
                type_name: "Folder".into(),
                name: name.into(),
                fields: Map::new(),
            },
            store.admin_id(),
        )
        .unwrap();
}

#[test]
fn changes_applied_onto_a_base_give_the_database_at_each_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = Store::open(&DatabaseUrl::Sqlite(live.clone())).unwrap();
    folder(&store, "/Root", "A");
    // The base: a copy taken online, which says which changes it holds.
    let base = store
        .backup_database(&dir.path().join("base"), &|_, _| {}, &CancelToken::new())
        .unwrap();
    assert!(base.archive_seq > 0, "{base:?}");
    let base_file = dir.path().join("base").join(&base.file_name);
    assert_eq!(archive_seq_of(&base_file).unwrap(), base.archive_seq);

    let records: Arc<Mutex<Vec<ChangeRecord>>> = Arc::default();
    let sink = records.clone();
    store
        .capture_changes(Some(Arc::new(move |r: &ChangeRecord| {
            sink.lock().unwrap().push(r.clone())
        })))
        .unwrap();
    // Creates, a change, a rename, a move, deletes: after each, the live database's rows.
    let mut states = Vec::new();
    let admin = store.admin_id();
    folder(&store, "/Root", "B");
    states.push(rows(&live));
    folder(&store, "/Root/A", "a1");
    folder(&store, "/Root/A", "a2");
    states.push(rows(&live));
    store
        .update(
            &NodeRef::from("/Root/A/a1"),
            &json!({"DisplayName": "first"}).as_object().unwrap().clone(),
            UpdateMode::Patch,
            admin,
        )
        .unwrap();
    states.push(rows(&live));
    store
        .move_to(&NodeRef::from("/Root/A"), &NodeRef::from("/Root/B"), admin)
        .unwrap();
    states.push(rows(&live));
    store.delete(&NodeRef::from("/Root/B/A/a2"), admin).unwrap();
    states.push(rows(&live));
    store.capture_changes(None).unwrap();
    folder(&store, "/Root", "not-archived");
    let records = records.lock().unwrap().clone();
    assert_eq!(records.len(), 6, "one record per write transaction");
    for w in records.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert!(w[1].time_ms >= w[0].time_ms);
    }
    assert_eq!(records[0].seq, base.archive_seq + 1);

    // Each prefix of the changes gives the state after its last write.
    let upto = [1usize, 3, 4, 5, 6];
    for (state, &n) in states.iter().zip(&upto) {
        let copy = dir.path().join(format!("copy-{n}.db"));
        std::fs::copy(&base_file, &copy).unwrap();
        let last = records[n - 1].seq;
        let (applied, at) = apply_changes(&copy, &mut records.iter().cloned().map(Ok), &|r| {
            r.seq <= last
        })
        .unwrap();
        assert_eq!((applied, at), (n as u64, last));
        assert_eq!(&rows(&copy), state, "after {n} changes");
        // Applying again changes nothing: what the copy holds is skipped.
        let (again, _) = apply_changes(&copy, &mut records.iter().cloned().map(Ok), &|r| {
            r.seq <= last
        })
        .unwrap();
        assert_eq!(again, 0);
    }

    // A gap is refused, and so is a change onto a copy that is not at its position.
    let copy = dir.path().join("gap.db");
    std::fs::copy(&base_file, &copy).unwrap();
    let gapped: Vec<ChangeRecord> = records.iter().skip(1).cloned().collect();
    let e = apply_changes(&copy, &mut gapped.into_iter().map(Ok), &|_| true).unwrap_err();
    assert!(e.to_string().contains("has no change"), "{e}");
    let moved = dir.path().join("moved.db");
    std::fs::copy(&base_file, &moved).unwrap();
    let wrong = ChangeRecord {
        seq: base.archive_seq + 1,
        ..records[3].clone()
    };
    let e = apply_changes(&moved, &mut std::iter::once(Ok(wrong)), &|_| true).unwrap_err();
    assert!(e.to_string().contains("does not apply"), "{e}");
    assert_eq!(
        rows(&moved),
        rows(&base_file),
        "a refused change left nothing"
    );
}
