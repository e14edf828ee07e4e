//! The engine against real databases: every change reaches the index, the index survives
//! restores in either order, and random work leaves no difference.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cairn_index::{search, SearchRequest, SortField, StartupAction};
use cairn_store::{DatabaseUrl, NodeDetail, NodeId, NodeRef, Store, StoreError, UpdateMode};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tantivy::query::{Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Term};

fn term(indexer: &cairn_index::Indexer, field: &str, text: &str) -> Box<dyn Query> {
    let (f, _) = indexer.schema().field(field).unwrap();
    Box::new(TermQuery::new(
        Term::from_field_text(f, text),
        IndexRecordOption::Basic,
    ))
}

fn ids(indexer: &cairn_index::Indexer, q: &dyn Query) -> Vec<i64> {
    let r = search(
        &indexer.searcher(),
        indexer.schema(),
        &SearchRequest {
            query: q,
            sort: vec![SortField {
                field: "Path".into(),
                descending: false,
            }],
            top: 1000,
            skip: 0,
            count: true,
            constant_score: false,
        },
    )
    .unwrap();
    r.ids.into_iter().map(|i| i.0).collect()
}

fn changes_show_up(db: Db) {
    let repo = Repo::new(db);
    let store = repo.store();
    let (ix, report) = repo.open(&store);
    assert!(matches!(report.action, StartupAction::Rebuilt(_)));
    let bg = ix.start();
    let admin = store.admin_id();
    // The database keeps a login to one user, case-insensitively, on either engine.
    let ims = NodeRef::from("/Root/IMS");
    let e = store
        .create(
            &ims,
            &content("User", "boss", json!({"LoginName": "ADMIN"})),
            admin,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::LoginTaken(_)), "{e}");
    assert_eq!(store.user_by_login("Admin").unwrap(), Some(admin));
    let docs = create(&store, "/Root", "Folder", "Docs");
    let w = store
        .create(
            &NodeRef::from("/Root/Docs"),
            &content(
                "Article",
                "First",
                json!({"Body":"quick brown fox","Rating":4.5,"Category":"blog"}),
            ),
            admin,
        )
        .unwrap();
    assert!(ix.wait_for(w.activity, Duration::from_secs(5)));
    assert_eq!(ids(&ix, &*term(&ix, "InTree", "/root/docs")).len(), 2);
    // A read of the columns only is the whole item without its typed values.
    let whole = store.nodes_by_ids(&[w.value.id]).unwrap();
    assert_eq!(whole[0].fields.len(), 3, "{whole:?}");
    let mut want = whole[0].clone();
    want.fields.clear();
    assert_eq!(
        store
            .nodes_by_ids_with(&[w.value.id], NodeDetail::Columns)
            .unwrap(),
        vec![want]
    );
    assert_eq!(ids(&ix, &*term(&ix, "Body", "fox")), vec![w.value.id.0]);
    assert_eq!(
        ids(&ix, &*term(&ix, "Category", "blog")),
        vec![w.value.id.0]
    );
    assert_eq!(ids(&ix, &*term(&ix, "TypeIs", "genericcontent")).len(), 5);

    // Update.
    let w = store
        .update(
            &NodeRef::from("/Root/Docs/first"),
            &fields(json!({"Body":"lazy dog"})),
            UpdateMode::Patch,
            admin,
        )
        .unwrap();
    assert!(ix.wait_for(w.activity, Duration::from_secs(5)));
    assert!(ids(&ix, &*term(&ix, "Body", "fox")).is_empty());
    assert_eq!(ids(&ix, &*term(&ix, "Body", "dog")).len(), 1);

    // Move a subtree: the descendants' InTree terms follow.
    let target = create(&store, "/Root", "Folder", "Archive");
    let w = store
        .move_to(&NodeRef::Id(docs.id), &NodeRef::Id(target.id), admin)
        .unwrap();
    assert_eq!(w.value.path, "/Root/Archive/Docs");
    assert!(ix.wait_for(w.activity, Duration::from_secs(5)));
    assert!(ids(&ix, &*term(&ix, "InTree", "/root/docs")).is_empty());
    assert_eq!(
        ids(&ix, &*term(&ix, "InTree", "/root/archive/docs")).len(),
        2
    );
    assert_eq!(
        ids(&ix, &*term(&ix, "InFolder", "/root/archive/docs")).len(),
        1
    );

    // Rename and copy.
    let w = store
        .rename(&NodeRef::from("/Root/Archive"), "Old", admin)
        .unwrap();
    assert!(ix.wait_for(w.activity, Duration::from_secs(5)));
    assert_eq!(ids(&ix, &*term(&ix, "InTree", "/root/old")).len(), 3);
    let w = store
        .copy_to(
            &NodeRef::from("/Root/Old/Docs"),
            &NodeRef::from("/Root"),
            None,
            admin,
        )
        .unwrap();
    assert!(ix.wait_for(w.activity, Duration::from_secs(5)));
    assert_eq!(ids(&ix, &*term(&ix, "Body", "dog")).len(), 2);

    // Delete a subtree.
    let w = store.delete(&NodeRef::from("/Root/Old"), admin).unwrap();
    assert_eq!(w.value, 3);
    assert!(ix.wait_for(w.activity, Duration::from_secs(5)));
    assert!(ids(&ix, &*term(&ix, "InTree", "/root/old")).is_empty());
    assert_eq!(ids(&ix, &*term(&ix, "Body", "dog")).len(), 1);
    assert_clean(&ix);
    ix.shutdown(Some(bg)).unwrap();
}

#[test]
fn changes_show_up_sqlite() {
    changes_show_up(Db::Sqlite);
}

#[test]
fn changes_show_up_postgres() {
    changes_show_up(Db::Postgres);
}

/// Random creates, updates, renames, moves, copies and deletes, with catch-ups in between.
fn random_operations(store: &Store, ix: &cairn_index::Indexer, n: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let admin = store.admin_id();
    let mut live: Vec<NodeId> = vec![store.node(&NodeRef::from("/Root")).unwrap().unwrap().id];
    let mut folders: Vec<NodeId> = live.clone();
    let words = ["alpha", "beta", "gamma", "delta", "omega", "kappa"];
    for i in 0..n {
        let pick = |rng: &mut StdRng, v: &Vec<NodeId>| v[rng.random_range(0..v.len())];
        let r: u32 = rng.random_range(0..100);
        let result: Result<(), StoreError> = if r < 45 || live.len() < 20 {
            let parent = pick(&mut rng, &folders);
            let folder = rng.random_bool(0.3);
            let t = if folder { "Folder" } else { "Article" };
            let body = words[rng.random_range(0..words.len())];
            store
                .create(
                    &NodeRef::Id(parent),
                    &content(t, &format!("n{i}"), json!({"Description": body})),
                    admin,
                )
                .map(|w| {
                    live.push(w.value.id);
                    if folder {
                        folders.push(w.value.id);
                    }
                })
        } else if r < 75 {
            let id = pick(&mut rng, &live);
            let body = words[rng.random_range(0..words.len())];
            store
                .update(
                    &NodeRef::Id(id),
                    &fields(json!({"Description": body, "Index": i})),
                    UpdateMode::Patch,
                    admin,
                )
                .map(|_| ())
        } else if r < 82 {
            let id = pick(&mut rng, &live);
            store
                .rename(&NodeRef::Id(id), &format!("r{i}"), admin)
                .map(|_| ())
        } else if r < 90 {
            let id = pick(&mut rng, &live);
            let to = pick(&mut rng, &folders);
            store
                .move_to(&NodeRef::Id(id), &NodeRef::Id(to), admin)
                .map(|_| ())
        } else if r < 93 {
            let id = pick(&mut rng, &live);
            let to = pick(&mut rng, &folders);
            store
                .copy_to(
                    &NodeRef::Id(id),
                    &NodeRef::Id(to),
                    Some(&format!("c{i}")),
                    admin,
                )
                .map(|w| live.push(w.value.id))
        } else {
            let id = pick(&mut rng, &live);
            store.delete(&NodeRef::Id(id), admin).map(|_| ())
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_input_error() => {} // conflicts, moves into itself, deleted ids...
            Err(e) => panic!("operation {i} failed: {e}"),
        }
        if i % 97 == 0 {
            // Forget deleted items now and then, so picks stay useful.
            let existing: HashSet<NodeId> = store
                .nodes_by_ids(&live)
                .unwrap()
                .into_iter()
                .map(|n| n.id)
                .collect();
            live.retain(|i| existing.contains(i));
            folders.retain(|i| existing.contains(i));
            if folders.is_empty() {
                folders.push(store.node(&NodeRef::from("/Root")).unwrap().unwrap().id);
            }
            if live.is_empty() {
                live.push(folders[0]);
            }
        }
        if i % 500 == 0 {
            ix.catch_up().unwrap();
        }
    }
}

fn ten_thousand_random_operations(db: Db) {
    let repo = Repo::new(db);
    let store = repo.store();
    let (ix, _) = repo.open(&store);
    let bg = ix.start();
    random_operations(&store, &ix, 10_000, 42);
    assert_clean(&ix);
    ix.shutdown(Some(bg)).unwrap();
    // The index answers structure queries like the database does.
    let all = ids(&ix, &*term(&ix, "InTree", "/root"));
    assert_eq!(
        all.len().min(1000) as u64,
        store.count_nodes().unwrap().min(1000)
    );
}

#[test]
fn ten_thousand_random_operations_sqlite() {
    ten_thousand_random_operations(Db::Sqlite);
}

#[test]
fn ten_thousand_random_operations_postgres() {
    ten_thousand_random_operations(Db::Postgres);
}

#[test]
fn deleted_index_is_rebuilt() {
    let repo = Repo::new(Db::Sqlite);
    let store = repo.store();
    {
        let (ix, _) = repo.open(&store);
        random_operations(&store, &ix, 300, 7);
        ix.shutdown(None).unwrap();
    }
    std::fs::remove_dir_all(repo.index_dir()).unwrap();
    let store = repo.store();
    let (ix, report) = repo.open(&store);
    assert!(
        matches!(report.action, StartupAction::Rebuilt(_)),
        "{report:?}"
    );
    assert_clean(&ix);
}

/// A write the indexer is not told about (another process's, here another `Store` on the
/// same database) is indexed by the periodic catch-up.
#[test]
fn the_periodic_catch_up_finds_writes_nobody_announced() {
    let repo = Repo::new(Db::Sqlite);
    let store = repo.store();
    let options = cairn_index::IndexerOptions {
        periodic: Duration::from_millis(200),
        ..options()
    };
    let (ix, _) =
        cairn_index::Indexer::open(&repo.index_dir(), store.clone(), options, &|_| {}).unwrap();
    let bg = ix.start();
    let elsewhere = repo.store();
    let n = create(&elsewhere, "/Root", "Folder", "Unannounced");
    cairn_testkit::wait_until("the periodic catch-up", Duration::from_secs(10), || {
        ids(&ix, &*term(&ix, "InFolder", "/root"))
            .contains(&n.id.0)
            .then_some(())
    });
    assert_clean(&ix);
    ix.shutdown(Some(bg)).unwrap();
}

#[test]
fn old_index_put_back_catches_up() {
    let repo = Repo::new(Db::Sqlite);
    let store = repo.store();
    let saved = repo.dir.path().join("index-t1");
    {
        let (ix, _) = repo.open(&store);
        random_operations(&store, &ix, 200, 1);
        ix.shutdown(None).unwrap();
    }
    copy_dir(&repo.index_dir(), &saved);
    {
        let (ix, _) = repo.open(&store);
        random_operations(&store, &ix, 300, 2);
        ix.shutdown(None).unwrap();
    }
    std::fs::remove_dir_all(repo.index_dir()).unwrap();
    copy_dir(&saved, &repo.index_dir());
    let store = repo.store();
    let (ix, report) = repo.open(&store);
    assert_eq!(report.action, StartupAction::CaughtUp);
    assert!(report.catch_up.activities > 0);
    assert_clean(&ix);
}

/// The sensenet corruption case: the database copied at T1, the index at T2 > T1, both put
/// back. Without detection the database would reissue activity ids the index counts as done.
fn database_older_than_index(write_before_start: bool) {
    let repo = Repo::new(Db::Sqlite);
    let db_file = repo.dir.path().join("cairn.db");
    let db_t1 = repo.dir.path().join("db-t1");
    let index_t2 = repo.dir.path().join("index-t2");
    {
        let store = repo.store();
        let (ix, _) = repo.open(&store);
        random_operations(&store, &ix, 300, 3);
        ix.shutdown(None).unwrap();
        // A consistent copy of the database at T1: closed, so that its WAL is checkpointed
        // into the file and removed.
        drop(ix);
        drop(store);
        assert!(!repo.dir.path().join("cairn.db-wal").exists());
        std::fs::copy(&db_file, &db_t1).unwrap();
        let store = repo.store();
        let (ix, _) = repo.open(&store);
        random_operations(&store, &ix, 300, 4);
        ix.shutdown(None).unwrap();
        copy_dir(&repo.index_dir(), &index_t2);
    }
    // Put both back: the database from T1, the index from T2.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(repo.dir.path().join(format!("cairn.db{suffix}")));
    }
    std::fs::copy(&db_t1, &db_file).unwrap();
    std::fs::remove_dir_all(repo.index_dir()).unwrap();
    copy_dir(&index_t2, &repo.index_dir());
    let store = repo.store();
    if write_before_start {
        // New writes reissue ids past the index's LastActivityId before the index starts:
        // only the fingerprint tells.
        for i in 0..400 {
            create(&store, "/Root", "Folder", &format!("after-{i}"));
        }
    }
    let (ix, report) = repo.open(&store);
    assert!(
        matches!(report.action, StartupAction::Repaired { .. }),
        "not detected: {report:?}"
    );
    assert_clean(&ix);
    // Writes made afterwards are indexed.
    let bg = ix.start();
    let w = store
        .create(
            &NodeRef::from("/Root"),
            &content("Article", "later", json!({"Body": "zebra"})),
            store.admin_id(),
        )
        .unwrap();
    assert!(ix.wait_for(w.activity, Duration::from_secs(5)));
    assert_eq!(ids(&ix, &*term(&ix, "Body", "zebra")), vec![w.value.id.0]);
    assert_clean(&ix);
    ix.shutdown(Some(bg)).unwrap();
}

#[test]
fn database_older_than_index_is_repaired() {
    database_older_than_index(false);
}

#[test]
fn database_older_than_index_with_new_writes_is_repaired() {
    database_older_than_index(true);
}

#[test]
fn index_of_another_repository_is_rebuilt() {
    let a = Repo::new(Db::Sqlite);
    let b = Repo::new(Db::Sqlite);
    let store_a = a.store();
    let (ix, _) = a.open(&store_a);
    random_operations(&store_a, &ix, 50, 5);
    ix.shutdown(None).unwrap();
    copy_dir(&a.index_dir(), &b.index_dir());
    let store_b = b.store();
    let (ix, report) = b.open(&store_b);
    assert!(
        matches!(&report.action, StartupAction::Rebuilt(why) if why.contains("another repository")),
        "{report:?}"
    );
    assert_clean(&ix);
}

#[test]
fn a_second_writer_is_refused() {
    let repo = Repo::new(Db::Sqlite);
    let store = repo.store();
    let (_ix, _) = repo.open(&store);
    let err = cairn_index::Indexer::open(&repo.index_dir(), store.clone(), options(), &|_| {})
        .unwrap_err();
    assert!(matches!(err, cairn_index::IndexError::Locked(_)), "{err}");
}

#[test]
fn bad_input_is_refused_and_nothing_is_half_written() {
    let repo = Repo::new(Db::Sqlite);
    let store: Arc<Store> = repo.store();
    let admin = store.admin_id();
    create(&store, "/Root", "Folder", "Docs");
    let before = (
        store.count_nodes().unwrap(),
        store.last_activity_id().unwrap(),
    );
    let root = NodeRef::from("/Root/Docs");
    type Expect = fn(&StoreError) -> bool;
    let cases: Vec<(cairn_store::NewContent, Expect)> = vec![
        (content("Folder", "", json!({})), |e| {
            matches!(e, StoreError::InvalidName { .. })
        }),
        (content("Folder", "a/b", json!({})), |e| {
            matches!(e, StoreError::InvalidName { .. })
        }),
        (content("Folder", "a\u{1}", json!({})), |e| {
            matches!(e, StoreError::InvalidName { .. })
        }),
        (content("Folder", &"x".repeat(101), json!({})), |e| {
            matches!(e, StoreError::InvalidName { .. })
        }),
        (content("Nope", "x", json!({})), |e| {
            matches!(e, StoreError::UnknownType(_))
        }),
        (content("Folder", "x", json!({"Body": "y"})), |e| {
            matches!(e, StoreError::UnknownField { .. })
        }),
        (content("Article", "x", json!({"Rating": "high"})), |e| {
            matches!(e, StoreError::InvalidValue { .. })
        }),
        (content("Article", "x", json!({"Id": 5})), |e| {
            matches!(e, StoreError::ReadOnlyField(_))
        }),
    ];
    for (c, expected) in &cases {
        let e = store.create(&root, c, admin).unwrap_err();
        assert!(expected(&e), "{:?}: unexpected {e}", c.name);
    }
    // A reference names an item that exists.
    let e = store
        .create(
            &root,
            &content(
                "Article",
                "dangling",
                json!({"Related": [admin.0, 999_999]}),
            ),
            admin,
        )
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::InvalidValue { field, reason } if field == "Related" && reason.contains("999999")),
        "{e}"
    );
    // Case-insensitive sibling names.
    create(&store, "/Root/Docs", "Folder", "Same");
    let e = store
        .create(&root, &content("Folder", "SAME", json!({})), admin)
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists(_)), "{e}");
    let e = store
        .create(
            &NodeRef::from("/Root/Missing"),
            &content("Folder", "x", json!({})),
            admin,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    // /Root is protected; nothing moves into its own subtree.
    assert!(matches!(
        store.delete(&NodeRef::from("/Root"), admin).unwrap_err(),
        StoreError::NotAllowed(_)
    ));
    // So are the users' folder and the administrator, which start-up needs.
    for path in ["/Root/IMS", "/root/ims/admin"] {
        let at = NodeRef::from(path);
        let refused = [
            store.delete(&at, admin).map(|_| ()),
            store.rename(&at, "Other", admin).map(|_| ()),
            store
                .move_to(&at, &NodeRef::from("/Root/Docs"), admin)
                .map(|_| ()),
        ];
        for r in refused {
            let e = r.unwrap_err();
            assert!(
                matches!(&e, StoreError::NotAllowed(m) if m.contains("system item")),
                "{path}: {e}"
            );
        }
    }
    assert!(matches!(
        store
            .move_to(&NodeRef::from("/Root"), &NodeRef::from("/Root/Docs"), admin)
            .unwrap_err(),
        StoreError::NotAllowed(_)
    ));
    assert!(matches!(
        store
            .move_to(
                &NodeRef::from("/Root/Docs"),
                &NodeRef::from("/Root/Docs/Same"),
                admin
            )
            .unwrap_err(),
        StoreError::NotAllowed(_)
    ));
    // A failed update leaves the item as it was.
    let e = store
        .update(
            &NodeRef::from("/Root/Docs"),
            &fields(json!({"DisplayName": "ok", "Index": "x"})),
            UpdateMode::Patch,
            admin,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::InvalidValue { .. }));
    assert_ne!(
        store
            .node(&NodeRef::from("/Root/Docs"))
            .unwrap()
            .unwrap()
            .display_name,
        "ok"
    );
    let after = (
        store.count_nodes().unwrap(),
        store.last_activity_id().unwrap(),
    );
    assert_eq!(after.0, before.0 + 1, "only Same was created");
    assert_eq!(
        after.1 .0,
        before.1 .0 + 1,
        "one activity per committed change"
    );
}

/// Start-up finds the administrator by its path, else by its login. A repository whose
/// administrator was renamed away (older versions allowed it) used to refuse to open; it now
/// finds it by its login, and one that lost it altogether gets a new one.
#[test]
fn a_repository_without_its_administrator_opens_and_gets_one_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cairn.db");
    let url = DatabaseUrl::Sqlite(db.clone());
    let first = Store::open(&url).unwrap().admin_id();
    let sql = |statement: &str| {
        let c = rusqlite::Connection::open(&db).unwrap();
        assert_eq!(c.execute(statement, []).unwrap(), 1, "{statement}");
    };
    sql(
        "UPDATE nodes SET name = 'Old', path = '/Root/IMS/Old', path_key = '/root/ims/old' \
         WHERE path_key = '/root/ims/admin'",
    );
    let store = Store::open(&url).unwrap();
    assert_eq!(store.admin_id(), first, "found by its login");
    assert!(store
        .node(&NodeRef::from("/Root/IMS/Admin"))
        .unwrap()
        .is_none());
    drop(store);
    sql("DELETE FROM nodes WHERE path_key = '/root/ims/old'");
    let store = Store::open(&url).unwrap();
    let admin = store
        .node(&NodeRef::from("/Root/IMS/Admin"))
        .unwrap()
        .unwrap();
    assert_eq!(store.admin_id(), admin.id);
    assert_ne!(admin.id, first);
    assert_eq!(store.user_by_login("admin").unwrap(), Some(admin.id));
}

/// A reference to an item deleted later stays, and does not stop the item's other changes;
/// a new id in it must name an existing item.
#[test]
fn a_reference_to_a_deleted_item_does_not_block_other_changes() {
    let repo = Repo::new(Db::Sqlite);
    let store = repo.store();
    let admin = store.admin_id();
    let target = create(&store, "/Root", "Article", "target");
    let source = store
        .create(
            &NodeRef::from("/Root"),
            &content("Article", "source", json!({"Related": [target.id.0]})),
            admin,
        )
        .unwrap()
        .value;
    store.delete(&NodeRef::Id(target.id), admin).unwrap();
    let patch = |f: serde_json::Value| {
        store.update(
            &NodeRef::Id(source.id),
            &fields(f),
            UpdateMode::Patch,
            admin,
        )
    };
    patch(json!({"Description": "still editable"})).unwrap();
    store
        .rename(&NodeRef::Id(source.id), "renamed", admin)
        .unwrap();
    // The old id may stay beside a new, existing one; a new unknown id is refused.
    patch(json!({"Related": [target.id.0, admin.0]})).unwrap();
    let e = patch(json!({"Related": [target.id.0, 999_999]})).unwrap_err();
    assert!(matches!(e, StoreError::InvalidValue { .. }), "{e}");
}

/// Schema version 2 keeps logins unique in the database. A version-1 database whose users
/// share a login (possible then) opens: the oldest user keeps it, and the login finds it.
fn a_version_1_database_with_shared_logins_migrates(db: Db) {
    let repo = Repo::new(db);
    let store = repo.store();
    let admin = store.admin_id();
    let user = |name: &str| {
        content(
            "User",
            name,
            json!({"LoginName": format!("login-of-{name}")}),
        )
    };
    let first = store
        .create(&NodeRef::from("/Root/IMS"), &user("a"), admin)
        .unwrap()
        .value;
    let second = store
        .create(&NodeRef::from("/Root/IMS"), &user("b"), admin)
        .unwrap()
        .value;
    let e = store
        .update(
            &NodeRef::Id(second.id),
            &fields(json!({"LoginName": "LOGIN-OF-A"})),
            UpdateMode::Patch,
            admin,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::LoginTaken(_)), "{e}");
    drop(store);
    // Back to version 1: no login column, and both users with one login.
    let (a, b) = (first.id.0, second.id.0);
    let downgrade = "DROP INDEX nodes_login;
         ALTER TABLE nodes DROP COLUMN login_key;
         UPDATE meta SET value = '1' WHERE key = 'schema_version';";
    match &repo.url {
        DatabaseUrl::Sqlite(path) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(&format!(
                "{downgrade} UPDATE nodes SET fields = json_set(fields, '$.LoginName', 'Shared') \
                 WHERE id IN ({a}, {b});"
            ))
            .unwrap(),
        DatabaseUrl::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
            .unwrap()
            .batch_execute(&format!(
                "{downgrade} UPDATE nodes SET fields = \
                 jsonb_set(fields::jsonb, '{{LoginName}}', '\"Shared\"')::text \
                 WHERE id IN ({a}, {b});"
            ))
            .unwrap(),
    }
    let store = repo.store();
    assert_eq!(store.user_by_login("shared").unwrap(), Some(first.id));
    assert_eq!(store.user_by_login("admin").unwrap(), Some(admin));
    assert_eq!(store.user_by_login("nobody").unwrap(), None);
    // The younger user lost the login (cleared, so that it stays editable).
    let lost = store.node(&NodeRef::Id(second.id)).unwrap().unwrap();
    assert!(!lost.fields.contains_key("LoginName"), "{:?}", lost.fields);
    store
        .update(
            &NodeRef::Id(second.id),
            &fields(json!({"Description": "still editable"})),
            UpdateMode::Patch,
            admin,
        )
        .unwrap();
    // Case is folded beyond ASCII.
    store
        .create(
            &NodeRef::from("/Root/IMS"),
            &content("User", "e1", json!({"LoginName": "Émile"})),
            admin,
        )
        .unwrap();
    let e = store
        .create(
            &NodeRef::from("/Root/IMS"),
            &content("User", "e2", json!({"LoginName": "émile"})),
            admin,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::LoginTaken(_)), "{e}");
    assert!(store.user_by_login("ÉMILE").unwrap().is_some());
    let e = store
        .create(
            &NodeRef::from("/Root/IMS"),
            &content("User", "c", json!({"LoginName": "SHARED"})),
            admin,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::LoginTaken(_)), "{e}");
}

#[test]
fn a_version_1_database_with_shared_logins_migrates_sqlite() {
    a_version_1_database_with_shared_logins_migrates(Db::Sqlite);
}

#[test]
fn a_version_1_database_with_shared_logins_migrates_postgres() {
    a_version_1_database_with_shared_logins_migrates(Db::Postgres);
}

/// A PostgreSQL error names what the server said, not only "db error".
#[test]
fn a_missing_postgres_database_is_named() {
    let cluster = cairn_testkit::shared_cluster().expect("start PostgreSQL");
    let url = cluster.database_url("no_such_database_here");
    let Err(e) = Store::open(&DatabaseUrl::parse(&url).unwrap()) else {
        panic!("opened a database that does not exist");
    };
    let text = e.to_string();
    assert!(
        text.contains("no_such_database_here") && text.contains("does not exist"),
        "{text}"
    );
}
