//! Property tests: no input makes the parsers panic, and what they accept runs.
//!
//! Inputs are random strings and random soups of CQL / `$filter` pieces, deep nesting
//! included. Every outcome must be `Ok` or a `QueryError` whose position lies within the
//! text; every compiled query must run on the index without error; and the syntax tree of
//! any accepted CQL text prints as CQL that parses back to the same tree.

mod common;

use cairn_query::parse::parse;
use cairn_query::{parse_cql, parse_cql_with, parse_filter, parse_orderby, QueryContext};
use common::{count, exercise, schema};
use proptest::prelude::*;

const CQL_PIECES: &[&str] = &[
    "Name:",
    "Index:",
    "Id:",
    "Body:",
    "Description:",
    "DisplayName:",
    "CreationDate:",
    "PublishDate:",
    "Pinned:",
    "Rating:",
    "Size:",
    "Category:",
    "InTree:",
    "InFolder:",
    "Type:",
    "TypeIs:",
    "CreatedBy:",
    "Related:",
    "Nope:",
    "_Text:",
    "_Fingerprint:",
    "'A b':",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "{{",
    "}}",
    " AND ",
    " OR ",
    " NOT ",
    "AND",
    "OR",
    "NOT",
    "&&",
    "||",
    "&",
    "|",
    "+",
    "-",
    "!",
    "*",
    "?",
    "'",
    "\"",
    "\\",
    "~",
    "^",
    ":",
    ",",
    " ",
    " ",
    " ",
    "\n",
    "\t",
    "0.5",
    "2",
    "-3",
    "10",
    "1e9",
    "99999999999999999999",
    "abc",
    "Doc*",
    "a?c",
    "'a b'",
    "\"quick brown\"",
    "'fo*'",
    "\"brown fo*\"",
    "TO",
    " TO ",
    ">",
    ">=",
    "<",
    "<=",
    "<>",
    ".TOP:",
    ".SKIP:",
    ".SORT:",
    ".REVERSESORT:",
    ".COUNTONLY",
    ".AUTOFILTERS:",
    ".LIFESPAN:",
    ".QUICK",
    ".ALLVERSIONS",
    ".SELECT:",
    ".NOPE",
    "ON",
    "OFF",
    "2024-03-05",
    "'2024-03-05T10:20:30'",
    "'2024-03-05 10:20'",
    "@@Today@@",
    "@@CurrentUser@@",
    "@@Nope@@",
    "/Root/A",
    "/Root/",
    "Folder",
    "true",
    "yes",
    "/*",
    "*/",
    "//",
    ".",
    "é",
    "Ö",
    "İ",
    "ß",
    "日本",
    "\u{0}",
    "\u{200b}",
    "😀",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "*a*b*c*d*e*f*g*h*i*j*k*l*m*n*o*p*",
    "????????????????????????????????????????",
];

const FILTER_PIECES: &[&str] = &[
    "Name",
    "Index",
    "Body",
    "Description",
    "DisplayName",
    "CreationDate",
    "Pinned",
    "Rating",
    "Size",
    "Nope",
    "Type",
    " eq ",
    " ne ",
    " gt ",
    " ge ",
    " lt ",
    " le ",
    " and ",
    " or ",
    " not ",
    "not ",
    "(",
    ")",
    ",",
    "'",
    "''",
    "'abc'",
    "'a''b'",
    "'.*'",
    "'(1)'",
    "12",
    "-1",
    "2.5",
    "2.5M",
    "1L",
    "1e5",
    "true",
    "false",
    "null",
    "datetime'2024-01-01T00:00:00'",
    "datetime'nope'",
    "guid'x'",
    "startswith(",
    "endswith(",
    "substringof(",
    "contains(",
    "isof(",
    "tolower(",
    "frob(",
    "'Folder'",
    " ",
    "/",
    "$",
    "_",
    "é",
    "\u{0}",
];

/// Mostly well-formed CQL: clauses over real fields, combined with every operator.
fn grammar() -> impl Strategy<Value = String> {
    let field = prop::sample::select(
        &[
            "Name",
            "Index",
            "Id",
            "Body",
            "Description",
            "DisplayName",
            "CreationDate",
            "PublishDate",
            "Pinned",
            "Rating",
            "Size",
            "Category",
            "InTree",
            "InFolder",
            "Type",
            "TypeIs",
            "Related",
            "_Text",
            "Subtitle",
            "Author",
            "MimeType",
        ][..],
    );
    let value = prop::sample::select(
        &[
            "doc1",
            "Doc*",
            "*file*",
            "d?c1",
            "'a b'",
            "\"quick brown\"",
            "\"brown fo*\"",
            "'*'",
            "*",
            "10",
            "-1",
            "4.5",
            "true",
            "no",
            "2024-03-05",
            "'2024-03-05T10:20:30Z'",
            "/Root/A",
            "Folder",
            "fox~",
            "fox~0.8",
            "\"quick fox\"~2",
            "'O\\'Brien'",
            "'x.y+z'",
            "'(1)'",
            "@@Today@@",
        ][..],
    );
    let bound =
        prop::sample::select(&["", "*", "1", "19", "'10'", "2024-03-01", "a", "zz", "true"][..]);
    let open = prop::sample::select(&["[", "{"][..]);
    let close = prop::sample::select(&["]", "}"][..]);
    let cmp = prop::sample::select(&[">", ">=", "<", "<=", "<>"][..]);
    let leaf = prop_oneof![
        (field.clone(), value.clone()).prop_map(|(f, v)| format!("{f}:{v}")),
        (field.clone(), open, bound.clone(), bound, close)
            .prop_map(|(f, o, a, b, c)| format!("{f}:{o}{a} TO {b}{c}")),
        (field.clone(), cmp, value.clone()).prop_map(|(f, c, v)| format!("{f}:{c}{v}")),
        (field.clone(), prop::collection::vec(value.clone(), 1..4))
            .prop_map(|(f, vs)| format!("{f}:({})", vs.join(" "))),
        value.prop_map(str::to_string),
    ];
    let tree = leaf.prop_recursive(5, 40, 4, |inner| {
        let op = prop::sample::select(&[" ", " AND ", " OR ", " && ", " || "][..]);
        let pre = prop::sample::select(&["", "+", "-", "NOT ", "!"][..]);
        prop_oneof![
            (
                prop::collection::vec((pre.clone(), inner.clone()), 1..4),
                op
            )
                .prop_map(|(v, op)| {
                    let parts: Vec<String> =
                        v.into_iter().map(|(p, q)| format!("{p}{q}")).collect();
                    format!("({})", parts.join(op))
                }),
            (pre, inner.clone()).prop_map(|(p, q)| format!("{p}{q}")),
            (inner, 1u8..4).prop_map(|(q, b)| format!("{q}^{b}")),
        ]
    });
    let control = prop::sample::select(
        &[
            "",
            " .TOP:3",
            " .SKIP:1",
            " .SORT:Name",
            " .REVERSESORT:Index",
            " .COUNTONLY",
            " .AUTOFILTERS:OFF",
            " .LIFESPAN:ON",
            " .SORT:Body",
        ][..],
    );
    (tree, control).prop_map(|(t, c)| format!("{t}{c}"))
}

fn soup(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(pieces), 0..max).prop_map(|v| v.concat())
}

/// Parses and compiles CQL `text` and, when it is accepted, runs it.
fn check_cql(text: &str) {
    let len = text.chars().count();
    let mut resolve =
        |q: &dyn tantivy::query::Query| count(q).map(|n| vec![n as i64]).map_err(|e| e.to_string());
    let mut ctx = QueryContext {
        current_user: Some(8),
        nested: Some(&mut resolve),
        ..Default::default()
    };
    for result in [
        parse_cql(text, schema()),
        parse_cql_with(text, schema(), &mut ctx),
    ] {
        match result {
            Ok(q) => {
                if let Err(e) = count(q.query.as_ref()).and_then(|_| exercise(q.query.as_ref())) {
                    panic!("{text:?} compiled to {:?}, which fails: {e}", q.query);
                }
            }
            Err(e) => assert!(e.position <= len, "{text:?}: {e} (length {len})"),
        }
    }
    if let Ok(tree) = parse(text) {
        let shown = tree.to_string();
        match parse(&shown) {
            Ok(again) => assert_eq!(again.to_string(), shown, "{text:?}"),
            Err(e) => panic!("{text:?} shows as {shown:?}, which does not parse: {e}"),
        }
    }
}

fn check_filter(text: &str) {
    let len = text.chars().count();
    match parse_filter(text, schema()) {
        Ok(q) => {
            if let Err(e) = count(q.as_ref()).and_then(|_| exercise(q.as_ref())) {
                panic!("{text:?} compiled to {q:?}, which fails: {e}");
            }
        }
        Err(e) => assert!(e.position <= len, "{text:?}: {e} (length {len})"),
    }
    if let Err(e) = parse_orderby(text, schema()) {
        assert!(e.position <= len, "{text:?}: {e}");
    }
}

/// Cases per property: 2000, or `CAIRN_FUZZ_CASES`.
fn cases() -> u32 {
    std::env::var("CAIRN_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn cql_random_strings(text in any::<String>()) {
        check_cql(&text);
    }

    #[test]
    fn cql_ascii_strings(text in "[ -~]{0,40}") {
        check_cql(&text);
    }

    #[test]
    fn cql_token_soup(text in soup(CQL_PIECES, 30)) {
        check_cql(&text);
    }

    #[test]
    fn cql_grammar(text in grammar()) {
        check_cql(&text);
    }

    #[test]
    fn filter_random_strings(text in any::<String>()) {
        check_filter(&text);
    }

    #[test]
    fn filter_token_soup(text in soup(FILTER_PIECES, 25)) {
        check_filter(&text);
    }

    #[test]
    fn deep_nesting(
        depth in 0usize..400,
        open in prop::sample::select(&["(", "Id:(", "-(", "NOT (", "+(", "CreatedBy:{{", "Name:(a "][..]),
        close in prop::sample::select(&[")", "}}", " )", "", "b)"][..]),
        inner in soup(CQL_PIECES, 4),
    ) {
        let text = format!("{}{}{}", open.repeat(depth), inner, close.repeat(depth));
        check_cql(&text);
        let text = format!("{}Pinned{}", "(not ".repeat(depth), ")".repeat(depth));
        check_filter(&text);
    }
}

#[test]
fn very_deep_inputs_do_not_overflow_the_stack() {
    for n in [65, 1_000, 100_000] {
        for open in ["(", "Id:(", "X:{{", "-(", "NOT("] {
            let text = open.repeat(n);
            assert!(parse_cql(&text, schema()).is_err());
        }
        assert!(parse_filter(&"(".repeat(n), schema()).is_err());
        assert!(parse_filter(&"not ".repeat(n), schema()).is_err());
    }
    let long = "a OR ".repeat(20_000) + "a";
    check_cql(&long);
    let long = "Pinned or ".repeat(20_000) + "Pinned";
    check_filter(&long);
}

#[test]
fn the_grammar_generator_mostly_makes_valid_queries() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = grammar();
    let (mut ok, mut hits) = (0, 0);
    for _ in 0..500 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        if let Ok(q) = parse_cql(&text, schema()) {
            ok += 1;
            hits += usize::from(count(q.query.as_ref()).unwrap() > 0);
        }
    }
    assert!(ok > 150, "only {ok} of 500 generated queries compiled");
    assert!(
        hits > 50,
        "only {hits} of 500 generated queries found anything"
    );
}
