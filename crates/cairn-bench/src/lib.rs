//! Cairn benchmarks as a library: the fixed-seed corpus ([`corpus`]), raw-engine
//! baselines ([`raw_sqlite`], [`raw_tantivy`], [`raw_queries`]), measurement helpers ([`measure`]) and
//! runs of Cairn itself ([`cairn`]). The `cairn-bench` binary (`src/main.rs`) drives
//! them; other benchmarks can reuse the same corpus rows and records.

pub mod cairn;
pub mod corpus;
pub mod measure;
pub mod raw_queries;
pub mod raw_sqlite;
pub mod raw_tantivy;
