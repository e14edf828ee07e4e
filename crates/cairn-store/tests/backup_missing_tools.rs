//! A missing `pg_dump` / `pg_restore` gives a [`StoreError::Tool`] that says so. The binaries
//! are "removed" with the `CAIRN_PG_DUMP` / `CAIRN_PG_RESTORE` overrides; this file holds
//! one test so that changing the environment cannot disturb other tests.

use std::time::Duration;

use cairn_store::{
    restore_postgres, verify_database_file, CancelToken, DatabaseKind, DatabaseUrl, Store,
    StoreError, PG_DUMP_ENV, PG_RESTORE_ENV,
};
use cairn_testkit::{shared_cluster, unique_name};

fn expect_missing<T: std::fmt::Debug>(result: Result<T, StoreError>, name: &str) {
    match result {
        Err(StoreError::Tool { tool, message }) => {
            assert_eq!(tool, name);
            assert!(message.contains("is not installed"), "{message}");
            assert!(message.contains("/nonexistent"), "{message}");
            assert!(
                message.contains("apt-get install postgresql-client"),
                "{message}"
            );
            eprintln!("{tool}: {message}");
        }
        other => panic!("expected a Tool error for {name}, got {other:?}"),
    }
}

#[test]
fn missing_pg_tools_give_a_tool_error() -> Result<(), Box<dyn std::error::Error>> {
    let url = shared_cluster()?.create_database(&unique_name("pg_no_tools"))?;
    let store = Store::open(&DatabaseUrl::Postgres(url.clone()))?;
    std::env::set_var(PG_DUMP_ENV, "/nonexistent/pg_dump");
    std::env::set_var(PG_RESTORE_ENV, "/nonexistent/pg_restore");

    let dir = tempfile::tempdir()?;
    let result = store.backup_database(dir.path(), &|_, _| {}, &CancelToken::new());
    expect_missing(result, "pg_dump");
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);

    let dump = dir.path().join("cairn.pgdump");
    std::fs::write(&dump, b"PGDMP")?;
    expect_missing(
        verify_database_file(DatabaseKind::Postgres, &dump),
        "pg_restore",
    );
    expect_missing(
        restore_postgres(&dump, &url, Duration::from_secs(1)),
        "pg_restore",
    );
    let e = StoreError::Tool {
        tool: "pg_dump".into(),
        message: String::new(),
    };
    assert!(!e.is_input_error());
    Ok(())
}
