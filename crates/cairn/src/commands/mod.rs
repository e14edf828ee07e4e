//! The command line's commands.

pub mod backup;
pub mod import;
pub mod index;
pub mod serve;

use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_index::{Indexer, IndexerOptions, OpenReport, StartupAction};
use cairn_store::Store;

use crate::data::DataDir;
use crate::progress::Progress;

/// Opens the database and the index of `data`: migrations, then rebuild, repair or catch-up
/// of the index, with a progress bar while rebuilding.
pub fn open_repository(data: &DataDir) -> Result<(Arc<Store>, Arc<Indexer>, OpenReport)> {
    open_repository_with(data, IndexerOptions::default())
}

/// [`open_repository`] with explicit indexer settings.
pub fn open_repository_with(
    data: &DataDir,
    options: IndexerOptions,
) -> Result<(Arc<Store>, Arc<Indexer>, OpenReport)> {
    let store = Arc::new(
        Store::open(&data.database)
            .with_context(|| format!("open the database {}", data.database.redacted()))?,
    );
    let progress = Progress::new("rebuilding the index", "items");
    let (indexer, report) = Indexer::open(&data.index_dir(), store.clone(), options, &|p| {
        progress.set(p.done, p.total)
    })
    .context("open the index")?;
    progress.finish();
    match &report.action {
        StartupAction::CaughtUp => {}
        StartupAction::Rebuilt(why) => {
            eprintln!("index rebuilt ({why}) in {:.1} s", progress.elapsed())
        }
        StartupAction::Repaired { reason, refreshed } => eprintln!(
            "warning: the index was ahead of or diverged from the database ({reason}); \
             {refreshed} documents were re-derived from the database"
        ),
    }
    Ok((store, indexer, report))
}
