//! A search that needs no total and matches everything with the same score stops after
//! the page it returns: it must return exactly what the full ranking returns.

mod common;

use cairn_index::search::{search, SearchRequest};
use cairn_query::parse_cql;
use common::big_fixture;

fn page(text: &str, skip: usize, top: usize, early: bool) -> (Vec<i64>, usize) {
    let f = big_fixture();
    let q = parse_cql(text, &f.schema).unwrap();
    let r = search(
        &f.searcher,
        &f.schema,
        &SearchRequest {
            query: &*q.query,
            sort: Vec::new(),
            top,
            skip,
            count: !early,
            constant_score: early && q.constant_score,
        },
    )
    .unwrap();
    (r.ids.into_iter().map(|i| i.0).collect(), r.total)
}

#[test]
fn constant_score_queries_are_recognised() {
    let s = &big_fixture().schema;
    for q in [
        "CreationDate:['2024-02-03' TO '2024-02-20']",
        "Size:>2",
        "+Size:[1 TO 5] -CreationDate:<'2024-02-10'",
        "Index:[10 TO 20] AND CreationDate:>'2024-02-05'",
        "(Index:[10 TO 20])",
    ] {
        assert!(parse_cql(q, s).unwrap().constant_score, "{q}");
    }
    for q in [
        "fox",
        "Body:fox AND Index:[1 TO 5]",
        "Index:[1 TO 5] OR Index:[3 TO 9]",
        "Index:[1 TO 5]^2",
        "TypeIs:Article",
        "-Index:[1 TO 5]",
    ] {
        assert!(!parse_cql(q, s).unwrap().constant_score, "{q}");
    }
}

#[test]
fn early_stop_returns_the_same_page_as_the_full_ranking() {
    for q in [
        "CreationDate:['2024-02-03' TO '2024-02-20']",
        "Index:>5",
        "+Index:[10 TO 40] -CreationDate:<'2024-02-10'",
    ] {
        let (_, total) = page(q, 0, 10, false);
        assert!(
            total > 1_000,
            "{q}: the page must span segments, {total} hits"
        );
        // Pages at the start, across the first segment boundary, and past the end.
        for (skip, top) in [(0, 20), (7, 13), (990, 30), (total - 5, 20), (total + 3, 5)] {
            let (full, _) = page(q, skip, top, false);
            let (early, shown) = page(q, skip, top, true);
            assert_eq!(early, full, "{q} skip {skip} top {top}");
            assert_eq!(shown, skip + early.len());
        }
    }
}
