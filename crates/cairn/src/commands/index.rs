//! `cairn index status|check|rebuild|restore`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_index::{judge_divergence, stored_state, IntegrityReport};
use serde_json::{json, Value};

use std::sync::Arc;

use cairn_index::{IndexError, Indexer, IndexerOptions};
use cairn_store::StoreError;

use crate::commands::{open_repository, Remote};
use crate::data::DataDir;
use crate::progress::Progress;

/// `cairn index status`: the completion state against the database's last activity. Reads
/// only, so it works beside a running server.
pub fn status(data: &DataDir, as_json: bool) -> Result<ExitCode> {
    data.require_existing()?;
    let dir = data.index_dir();
    let (state, documents) = match stored_state(&dir).context("open the index")? {
        Some((state, docs)) => (Some(state), Some(docs)),
        None => (None, None),
    };
    let last = state.as_ref().map_or(0, |s| s.last_activity_id.0);
    // Read only: no migration of a database an older server may still be using. The same
    // read gives the fingerprint of the activity the index applied last.
    let applied = state.as_ref().map(|s| s.last_activity_id);
    let (db, found) = cairn_store::peek_database_and_activity(&data.database, applied)
        .with_context(|| format!("read the database {}", data.database.redacted()))?
        .with_context(|| format!("there is no repository in {}", data.database.redacted()))?;
    let db_last = db.last_activity_id;
    // What the next start would repair: an index ahead of the database, or diverged from it.
    let diverged = state
        .as_ref()
        .and_then(|s| judge_divergence(s, found, db_last));
    let v = json!({
        "CompletionState": state.as_ref().map(|s| s.to_string()),
        "LastActivityId": last,
        "Gaps": state.as_ref().map(|s| s.gap_ids()).unwrap_or_default(),
        "DatabaseLastActivityId": db_last.0,
        "Lag": (db_last.0 - last).max(0),
        "Documents": documents,
        "RepositoryId": db.repository_id,
        "Diverged": diverged,
    });
    let other = state
        .as_ref()
        .filter(|s| !s.repository_id.is_empty() && s.repository_id != db.repository_id)
        .map(|s| s.repository_id.clone());
    print_status(&v, as_json, other.as_deref())
}

/// `cairn index status --server URL`: a running server's `GetIndexProperties`, in the
/// shape of the local status.
pub fn status_remote(remote: &Remote, as_json: bool) -> Result<ExitCode> {
    let v = remote.json("GET", "/odata.svc/('Root')/GetIndexProperties", None)?;
    let v = json!({
        "CompletionState": v["CompletionState"],
        "LastActivityId": v["IndexingActivityStatus"]["LastActivityId"],
        "Gaps": v["IndexingActivityStatus"]["Gaps"],
        "DatabaseLastActivityId": v["DatabaseLastActivityId"],
        "Lag": v["Lag"],
        "Documents": v["DocumentCount"],
        "RepositoryId": v["RepositoryId"],
        // A serving index was checked against its database when the server started.
        "Diverged": Value::Null,
    });
    print_status(&v, as_json, None)
}

/// Prints a status (`v`, the `--json` shape) as JSON or as text; `other_repository` is the
/// repository an index belongs to when it is not the database's.
fn print_status(v: &Value, as_json: bool, other_repository: Option<&str>) -> Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match v["CompletionState"].as_str() {
        Some(s) => println!("index completion state: {s}"),
        None => println!("index: none or empty (the next start rebuilds it)"),
    }
    let (last, db_last) = (
        v["LastActivityId"].as_i64().unwrap_or(0),
        v["DatabaseLastActivityId"].as_i64().unwrap_or(0),
    );
    println!("database last activity: {db_last}");
    println!("lag: {} activities", (db_last - last).max(0));
    if last > db_last {
        println!(
            "the index is AHEAD of the database by {} activities (a database restored \
             older than its index): the next start repairs it",
            last - db_last
        );
    }
    if let Some(why) = v["Diverged"].as_str().filter(|_| last <= db_last) {
        println!("the index has DIVERGED from the database: {why}: the next start repairs it");
    }
    if let Some(other) = other_repository {
        println!("the index belongs to another repository ({other}): the next start rebuilds it");
    }
    if let Some(d) = v["Documents"].as_u64() {
        println!("documents: {d}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One difference as a line: the same for a local check and a server's.
fn difference_line(kind: &str, id: i64, path: &str, db: Option<i64>, ix: Option<i64>) -> String {
    let ts = |t: Option<i64>| t.map_or_else(|| "-".to_string(), |t| t.to_string());
    format!(
        "{kind} id={id} path={path} db_timestamp={} index_timestamp={}",
        ts(db),
        ts(ix)
    )
}

fn print_report(report: &IntegrityReport) {
    println!(
        "database: {} items, last activity {}; index: {} documents, at {}{}",
        report.database_items,
        report.last_stored_activity,
        report.index_documents,
        report.last_processed_activity,
        if report.gaps.is_empty() {
            String::new()
        } else {
            format!(" (gaps {:?})", report.gaps)
        }
    );
    for d in &report.differences {
        println!(
            "{}",
            difference_line(
                &format!("{:?}", d.kind),
                d.node_id,
                &d.path,
                d.db_timestamp,
                d.ix_timestamp
            )
        );
    }
    if report.is_clean() {
        println!("0 differences");
    } else {
        println!("{} differences", report.differences.len());
    }
}

/// `cairn index check`: catches up, then compares the database and the index. Exits 1 when
/// they differ.
pub fn check(data: &DataDir, as_json: bool) -> Result<ExitCode> {
    let _lock = data.lock_existing("index check")?;
    let (_store, indexer, _) = open_repository(data)?;
    let report = indexer.check_integrity()?;
    indexer.shutdown(None)?;
    report_outcome(&report, as_json)
}

/// `cairn index check --server URL`: a running server's `CheckIndexIntegrity`. Exits 1 when
/// the database and the index differ.
pub fn check_remote(remote: &Remote, as_json: bool) -> Result<ExitCode> {
    let v = remote.json("GET", "/odata.svc/('Root')/CheckIndexIntegrity", None)?;
    let report: IntegrityReport = serde_json::from_value(v).context("read the server's report")?;
    report_outcome(&report, as_json)
}

/// Prints a check's report (as JSON or text); exits 1 when there are differences.
fn report_outcome(report: &IntegrityReport, as_json: bool) -> Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_report(report);
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cairn index rebuild`: drops the index and builds it again from the database.
pub fn rebuild(data: &DataDir) -> Result<ExitCode> {
    let _lock = data.lock_existing("index rebuild")?;
    // Built beside the live index and swapped in by rename once complete (invariant 12):
    // Ctrl-C, a full disk or a kill leave the old index as it was.
    let dir = data.index_dir();
    cairn_index::recover_interrupted_swap(&dir).context("finish an interrupted index swap")?;
    let fresh = cairn_index::beside_dir(&dir);
    let old = cairn_index::replaced_dir(&dir);
    let started = std::time::Instant::now();
    let options_cancel = crate::commands::cancel_on_signal("rebuild");
    let options = IndexerOptions {
        cancel: options_cancel.clone(),
        ..IndexerOptions::default()
    };
    let store = Arc::new(data.open_store()?);
    let progress = Progress::new("rebuilding the index", "items");
    let opened = Indexer::open(&fresh, store, options, &|p| {
        progress.set(p.done, p.total);
        if p.done >= p.total {
            progress.step(Some("committing"));
        }
    });
    progress.finish();
    let (indexer, report) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&fresh);
            if matches!(e, IndexError::Store(StoreError::Cancelled)) {
                anyhow::bail!("canceled: the index is as it was");
            }
            return Err(e).context("rebuild the index");
        }
    };
    let cancel = options_cancel;
    let committed = indexer
        .shutdown(None)
        .map_err(anyhow::Error::from)
        .and_then(|()| cancel.commit().map_err(anyhow::Error::from));
    let docs = indexer.searcher().num_docs();
    drop(indexer);
    if let Err(e) = committed {
        // Before the swap: the live index is untouched.
        let _ = std::fs::remove_dir_all(&fresh);
        if cancel.is_cancelled() {
            anyhow::bail!("canceled: the index is as it was");
        }
        return Err(e.context("commit the rebuilt index"));
    }
    if dir.exists() {
        std::fs::rename(&dir, &old).with_context(|| format!("move {} aside", dir.display()))?;
    }
    std::fs::rename(&fresh, &dir)
        .with_context(|| format!("move the new index to {}", dir.display()))?;
    cairn_store::durable::sync_dir(&data.root)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("remove {}", old.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt: {docs} documents in {secs:.1} s ({:.0} items/s); completion state {}",
        docs as f64 / secs.max(1e-9),
        report.state
    );
    Ok(ExitCode::SUCCESS)
}

/// `cairn index rebuild --server URL` (`RebuildIndex`) and `cairn index restore --server
/// URL --from REPO/NAME` (`RestoreIndex`): the server makes the new index beside its live
/// one and swaps it in while it serves; this follows with a progress bar. Ctrl-C asks the
/// server to cancel (it does until the swap begins).
pub fn replace_remote(remote: &Remote, restore: Option<(&str, Option<&str>)>) -> Result<ExitCode> {
    const QUERY: &str = "/odata.svc/('Root')/QueryIndexRestore";
    let running = remote.json("GET", QUERY, None)?;
    if running["State"] == "Executing" || running["State"] == "CancelRequested" {
        anyhow::bail!(
            "an index {} started at {} is running on the server; try again when it has finished",
            running["Current"]["Kind"]
                .as_str()
                .unwrap_or("replacement")
                .to_lowercase(),
            running["Current"]["StartedAt"].as_str().unwrap_or("?")
        );
    }
    let cancel = crate::commands::cancel_on_signal("index replacement");
    let (action, body, label) = match restore {
        Some((from, identity)) => (
            "RestoreIndex",
            json!({"backup": from, "identity": identity}),
            "restoring the index",
        ),
        None => ("RebuildIndex", json!({}), "rebuilding the index"),
    };
    let started = std::time::Instant::now();
    remote.json(
        "POST",
        &format!("/odata.svc/('Root')/{action}"),
        Some(&body.to_string()),
    )?;
    let progress = Progress::new(label, "");
    let mut asked = false;
    let last = loop {
        if cancel.is_cancelled() && !asked {
            remote.json("POST", "/odata.svc/('Root')/CancelIndexRestore", Some("{}"))?;
            asked = true;
        }
        let q = remote.json("GET", QUERY, None)?;
        let cur = &q["Current"];
        progress.step(cur["Step"].as_str());
        let (done, total) = (
            cur["Done"].as_u64().unwrap_or(0),
            cur["Total"].as_u64().unwrap_or(0),
        );
        progress.set(done, total.max(done));
        match q["State"].as_str() {
            Some("Executing" | "CancelRequested") => {
                std::thread::sleep(std::time::Duration::from_millis(250))
            }
            _ => break q,
        }
    };
    progress.finish();
    let cur = &last["Current"];
    let message = cur["Message"].as_str().unwrap_or_default();
    if last["State"] != "Finished" {
        anyhow::bail!(
            "the index {} ended {}: {message}",
            action.trim_end_matches("Index").to_lowercase(),
            last["State"].as_str().unwrap_or("?")
        );
    }
    println!(
        "index replaced on the server in {:.1} s: {} documents, completion state {} ({message})",
        started.elapsed().as_secs_f64(),
        cur["Documents"],
        cur["CompletionState"].as_str().unwrap_or("?"),
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_is_one_plain_line() {
        assert_eq!(
            difference_line("NotInIndex", 5, "/Root/a", Some(10), None),
            "NotInIndex id=5 path=/Root/a db_timestamp=10 index_timestamp=-"
        );
    }
}
