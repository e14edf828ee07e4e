//! A small in-RAM index of hand-made items, and helpers to run queries on it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cairn_index::document::{build, WrittenBy};
use cairn_index::search::{search, SearchRequest};
use cairn_index::{IndexSchema, SortField};
use cairn_store::content::parse_date;
use cairn_store::{ContentTypes, FieldValue, Node, NodeId};
use tantivy::collector::Count;
use tantivy::query::Query;
use tantivy::{Index, IndexWriter, Searcher};

pub struct Fixture {
    pub schema: IndexSchema,
    pub searcher: Searcher,
}

#[allow(clippy::too_many_arguments)]
fn node(
    id: i64,
    path: &str,
    type_name: &str,
    display_name: &str,
    description: &str,
    index: i64,
    created: &str,
    fields: Vec<(&str, FieldValue)>,
) -> Node {
    let name = path.rsplit('/').next().unwrap().to_string();
    let parent = if id == 1 { None } else { Some(NodeId(1)) };
    Node {
        id: NodeId(id),
        parent_id: parent,
        name,
        path: path.to_string(),
        type_name: type_name.to_string(),
        display_name: display_name.to_string(),
        description: description.to_string(),
        index,
        creation_date: parse_date(created).unwrap(),
        modification_date: parse_date(created).unwrap(),
        created_by: Some(NodeId(8)),
        modified_by: if id == 3 { Some(NodeId(1)) } else { None },
        timestamp: id * 10,
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.to_string())
}

/// The items, by id:
///
/// | id | path | type | notes |
/// |---|---|---|---|
/// | 1 | /Root | Folder | |
/// | 2 | /Root/A | Folder | DisplayName "Alpha Folder", Index 10 |
/// | 3 | /Root/A/Doc1 | Article | quick brown fox, Pinned, Rating 4.5, News, published 2024-03-05T10:20:30Z |
/// | 4 | /Root/A/Doc2 | Article | slow turtle, not pinned, Rating 2, Blog, published 2024-03-06 |
/// | 5 | /Root/B | SystemFolder | DisplayName "Beta", Index 20 |
/// | 6 | /Root/B/file.txt | File | text/plain, Size 1234 |
/// | 7 | /Root/B/my-file | File | DisplayName "a*b?c (1)", Size 0 |
/// | 8 | /Root/IMS/Admin | User | LoginName Admin, admin@example.com |
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| make_fixture(0))
}

/// The same items and `extra` generated ones (ids from 100), in several segments: enough
/// documents to cross Tantivy's block and fetch boundaries.
pub fn big_fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| make_fixture(3000))
}

fn generated(i: i64) -> Node {
    const WORDS: [&str; 8] = [
        "quick", "brown", "fox", "slow", "turtle", "alpha", "beta", "doc1",
    ];
    let w = |k: i64| WORDS[(k % 8) as usize];
    let (type_name, fields) = match i % 4 {
        0 => (
            "Article",
            vec![
                ("Body", text(&format!("{} {} {}", w(i), w(i / 3), w(i / 7)))),
                ("Rating", FieldValue::Number((i % 50) as f64 / 10.0)),
                ("Pinned", FieldValue::Boolean(i % 3 == 0)),
                (
                    "Category",
                    FieldValue::Choice(vec![["News", "Blog"][(i % 2) as usize].into()]),
                ),
                ("Related", FieldValue::Reference(vec![NodeId(i % 9)])),
            ],
        ),
        1 => (
            "File",
            vec![
                ("Size", FieldValue::Integer(i % 7)),
                ("MimeType", text("text/plain")),
            ],
        ),
        2 => ("Folder", vec![]),
        _ => ("User", vec![("Enabled", FieldValue::Boolean(i % 2 == 0))]),
    };
    let day = 1 + i % 28;
    node(
        100 + i,
        &format!("/Root/Gen/Item{i}"),
        type_name,
        &format!("{} {}", w(i / 2), w(i / 5)),
        &format!("{} {} {}", w(i), w(i + 1), w(i / 11)),
        i % 50,
        &format!("2024-02-{day:02}T{:02}:00:00Z", i % 24),
        fields,
    )
}

fn make_fixture(extra: i64) -> Fixture {
    {
        let types = ContentTypes::built_in();
        let schema = IndexSchema::new(&types);
        let index = Index::create_in_ram(schema.schema.clone());
        IndexSchema::register_tokenizers(&index);
        let nodes = vec![
            node(
                1,
                "/Root",
                "Folder",
                "Root",
                "",
                0,
                "2020-01-01T00:00:00Z",
                vec![],
            ),
            node(
                2,
                "/Root/A",
                "Folder",
                "Alpha Folder",
                "The first folder",
                10,
                "2024-03-01T08:00:00Z",
                vec![],
            ),
            node(
                3,
                "/Root/A/Doc1",
                "Article",
                "Quick Brown Fox",
                "The quick brown fox jumps over the lazy dog",
                11,
                "2024-03-05T10:20:30Z",
                vec![
                    ("Subtitle", text("Über alles")),
                    (
                        "Body",
                        text("Rust is fast. Tantivy is a search engine library"),
                    ),
                    ("Author", text("O'Brien")),
                    (
                        "PublishDate",
                        FieldValue::DateTime(parse_date("2024-03-05T10:20:30.123456Z").unwrap()),
                    ),
                    ("Rating", FieldValue::Number(4.5)),
                    ("ReadCount", FieldValue::Integer(100)),
                    ("Pinned", FieldValue::Boolean(true)),
                    ("Category", FieldValue::Choice(vec!["News".into()])),
                    ("Related", FieldValue::Reference(vec![NodeId(4), NodeId(6)])),
                ],
            ),
            node(
                4,
                "/Root/A/Doc2",
                "Article",
                "Slow Green Turtle",
                "a slow turtle",
                19,
                "2024-03-06T00:00:00Z",
                vec![
                    ("Body", text("Turtles are slow")),
                    (
                        "PublishDate",
                        FieldValue::DateTime(parse_date("2024-03-06T00:00:00Z").unwrap()),
                    ),
                    ("Rating", FieldValue::Number(2.0)),
                    ("ReadCount", FieldValue::Integer(5)),
                    ("Pinned", FieldValue::Boolean(false)),
                    ("Category", FieldValue::Choice(vec!["Blog".into()])),
                ],
            ),
            node(
                5,
                "/Root/B",
                "SystemFolder",
                "Beta",
                "",
                20,
                "2023-12-31T23:59:59Z",
                vec![],
            ),
            node(
                6,
                "/Root/B/file.txt",
                "File",
                "file.txt",
                "",
                5,
                "2024-02-29T12:00:00Z",
                vec![
                    ("MimeType", text("text/plain")),
                    ("Size", FieldValue::Integer(1234)),
                ],
            ),
            node(
                7,
                "/Root/B/my-file",
                "File",
                "a*b?c (1)",
                "",
                6,
                "2024-02-29T12:00:00Z",
                vec![
                    ("MimeType", text("application/x.y+z")),
                    ("Size", FieldValue::Integer(0)),
                ],
            ),
            node(
                8,
                "/Root/IMS/Admin",
                "User",
                "Administrator",
                "",
                0,
                "2020-01-01T00:00:00Z",
                vec![
                    ("LoginName", text("Admin")),
                    ("Email", text("admin@example.com")),
                    ("Enabled", FieldValue::Boolean(true)),
                ],
            ),
        ];
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for n in nodes.into_iter().chain((0..extra).map(generated)) {
            let by = WrittenBy {
                activity: n.id.0,
                fingerprint: 0,
            };
            writer.add_document(build(&schema, &types, &n, by)).unwrap();
            if n.id.0 % 1000 == 0 {
                writer.commit().unwrap();
            }
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        Fixture { schema, searcher }
    }
}

pub fn schema() -> &'static IndexSchema {
    &fixture().schema
}

/// Ids of the items `query` matches, in id order.
pub fn run(query: &dyn Query) -> Vec<i64> {
    let f = fixture();
    let req = SearchRequest {
        query,
        sort: vec![SortField {
            field: "Id".into(),
            descending: false,
        }],
        top: 100,
        skip: 0,
        count: true,
        constant_score: false,
    };
    let r = search(&f.searcher, &f.schema, &req).unwrap();
    r.ids.into_iter().map(|i| i.0).collect()
}

/// Counts the hits of `query`; an error of Tantivy is returned, a panic is a failure.
pub fn count(query: &dyn Query) -> tantivy::Result<usize> {
    fixture().searcher.search(query, &Count)
}

/// Runs `query` on the big index, counting and collecting the best hits by score.
pub fn exercise(query: &dyn Query) -> tantivy::Result<usize> {
    let searcher = &big_fixture().searcher;
    let (_, n) = searcher.search(
        query,
        &(
            tantivy::collector::TopDocs::with_limit(10).order_by_score(),
            Count,
        ),
    )?;
    Ok(n)
}

/// Ids matched by CQL `q`.
pub fn cql(q: &str) -> Vec<i64> {
    match cairn_query::parse_cql(q, schema()) {
        Ok(c) => run(c.query.as_ref()),
        Err(e) => panic!("{q:?}: {e}"),
    }
}

/// The error of CQL `q`.
pub fn cql_err(q: &str) -> cairn_query::QueryError {
    match cairn_query::parse_cql(q, schema()) {
        Ok(c) => panic!("{q:?} compiled: {:?}", c.query),
        Err(e) => e,
    }
}

/// Ids matched by `$filter` `q`.
pub fn filter(q: &str) -> Vec<i64> {
    match cairn_query::parse_filter(q, schema()) {
        Ok(query) => run(query.as_ref()),
        Err(e) => panic!("{q:?}: {e}"),
    }
}

/// The error of `$filter` `q`.
pub fn filter_err(q: &str) -> cairn_query::QueryError {
    match cairn_query::parse_filter(q, schema()) {
        Ok(query) => panic!("{q:?} compiled: {query:?}"),
        Err(e) => e,
    }
}
