//! The strings the `@sensenet/query` builder (npm, v2.1.3, `dist/esm/QueryExpression.js`,
//! `QueryOperators.js`, `QuerySegment.js`) emits, written here by hand from its source,
//! one test per builder method. Each must parse; where the fields exist here, the hits are
//! checked too.
//!
//! What the builder does with values: `equals`, `notEquals`, `greaterThan`, `lessThan` put
//! the value in single quotes unless it is a template (`@@...@@`), `between` always quotes
//! both bounds, `inTree`/`inFolder` use double quotes, `type`/`typeIs`/`term`/`sort` insert
//! the text as is. Nothing is escaped.

mod common;

use cairn_query::ast::ControlKind;
use cairn_query::parse::parse;
use cairn_query::{parse_cql, parse_cql_with, QueryContext};
use common::{cql, run, schema};

/// The tree of `q`, as CQL.
fn ast(q: &str) -> String {
    match parse(q) {
        Ok(c) => c.to_string(),
        Err(e) => panic!("{q:?}: {e}"),
    }
}

#[test]
fn term() {
    // q.term('fox')
    assert_eq!(ast("fox"), "_Text:fox");
    assert_eq!(cql("fox"), [3]);
    // q.term('Name:Doc1 OR Name:Doc2')
    assert_eq!(cql("Name:Doc1 OR Name:Doc2"), [3, 4]);
}

#[test]
fn in_tree() {
    // q.inTree('/Root/A')
    assert_eq!(ast("InTree:\"/Root/A\""), "InTree:'/Root/A'");
    assert_eq!(cql("InTree:\"/Root/A\""), [2, 3, 4]);
}

#[test]
fn in_folder() {
    // q.inFolder('/Root/A')
    assert_eq!(cql("InFolder:\"/Root/A\""), [3, 4]);
}

#[test]
fn type_() {
    // q.type('Folder')
    assert_eq!(cql("Type:Folder"), [1, 2]);
}

#[test]
fn type_is() {
    // q.typeIs('Folder')
    assert_eq!(cql("TypeIs:Folder"), [1, 2, 5]);
}

#[test]
fn equals() {
    // q.equals('DisplayName', 'Alpha Folder')
    assert_eq!(cql("DisplayName:'Alpha Folder'"), [2]);
    // q.equals('Index', 10)
    assert_eq!(cql("Index:'10'"), [2]);
    // q.equals('Pinned', true)
    assert_eq!(cql("Pinned:'true'"), [3]);
    // q.equals('Name', 'doc*') (wildcards are documented)
    assert_eq!(cql("Name:'doc*'"), [3, 4]);
    // q.equals('CreatedBy', '@@CurrentUser@@') (templates are not quoted)
    assert_eq!(
        ast("CreatedBy:@@CurrentUser@@"),
        "CreatedBy:@@CurrentUser@@"
    );
    let mut ctx = QueryContext {
        current_user: Some(8),
        ..Default::default()
    };
    let q = parse_cql_with("CreatedBy:@@CurrentUser@@", schema(), &mut ctx).unwrap();
    assert_eq!(run(q.query.as_ref()).len(), 8);
    // q.equals('Author', "O'Brien"): the builder does not escape the quote; the text still
    // parses (as sensenet reads it: Author:'O' OR _Text:Brien').
    assert_eq!(ast("Author:'O'Brien'"), "Author:'O' _Text:Brien\\'");
    assert!(parse_cql("Author:'O'Brien'", schema()).is_ok());
}

#[test]
fn not_equals() {
    // q.notEquals('Name', 'Root')
    assert_eq!(ast("NOT(Name:'Root')"), "-Name:'Root'");
    assert_eq!(cql("NOT(Name:'Root')"), [2, 3, 4, 5, 6, 7, 8]);
    // q.notEquals('CreatedBy', '@@CurrentUser@@')
    assert_eq!(
        ast("NOT(CreatedBy:@@CurrentUser@@)"),
        "-CreatedBy:@@CurrentUser@@"
    );
}

#[test]
fn equals_nested() {
    // q.equalsNested('CreatedBy', 'Name', 'Admin')
    assert_eq!(ast("CreatedBy:{{Name:Admin}}"), "CreatedBy:{{Name:Admin }}");
    // q.notEqualsNested('Related', 'Name', 'Doc2')
    assert_eq!(ast("NOT(Related:{{Name:Doc2}})"), "-Related:{{Name:Doc2 }}");
    let mut resolve = |q: &dyn tantivy::query::Query| Ok(run(q));
    let mut ctx = QueryContext {
        nested: Some(&mut resolve),
        ..Default::default()
    };
    let q = parse_cql_with(
        "TypeIs:Article AND NOT(Related:{{Name:Doc2}})",
        schema(),
        &mut ctx,
    )
    .unwrap();
    assert_eq!(run(q.query.as_ref()), [4]);
}

#[test]
fn between() {
    // q.between('Index', 10, 19): both ends exclusive by default
    assert_eq!(ast("Index:{'10' TO '19'}"), "Index:{'10' TO '19'}");
    assert_eq!(cql("Index:{'10' TO '19'}"), [3]);
    // q.between('Index', 10, 19, true, true)
    assert_eq!(cql("Index:['10' TO '19']"), [2, 3, 4]);
    // q.between('Index', 10, 19, true, false)
    assert_eq!(cql("Index:['10' TO '19'}"), [2, 3]);
    // q.between('Index', 10, 19, false, true)
    assert_eq!(cql("Index:{'10' TO '19']"), [3, 4]);
    // q.between('CreationDate', '2024-03-01T00:00:00', '2024-03-06T00:00:00')
    assert_eq!(
        cql("CreationDate:{'2024-03-01T00:00:00' TO '2024-03-06T00:00:00'}"),
        [2, 3]
    );
    // The README's form, with escaped colons.
    assert_eq!(
        cql("CreationDate:{'2024-03-01T00\\:00\\:00' TO '2024-03-06T00\\:00\\:00'}"),
        [2, 3]
    );
}

#[test]
fn greater_than() {
    // q.greaterThan('Index', 10)
    assert_eq!(cql("Index:>'10'"), [3, 4, 5]);
    // q.greaterThan('Index', 10, true)
    assert_eq!(cql("Index:>='10'"), [2, 3, 4, 5]);
    // q.greaterThan('CreationDate', '@@Yesterday@@')
    let now = cairn_store::content::parse_date("2024-03-06T12:00:00Z").unwrap();
    let mut ctx = QueryContext {
        now: Some(now),
        ..Default::default()
    };
    let q = parse_cql_with("CreationDate:>@@Yesterday@@", schema(), &mut ctx).unwrap();
    // @@Yesterday@@ is the start of 2024-03-05: item 3, created that morning, is in.
    assert_eq!(run(q.query.as_ref()), [3, 4]);
    // q.greaterThan('CreationDate', new Date(...)): the builder writes the Date's toString().
    assert_eq!(
        cql("CreationDate:>'Tue Mar 05 2024 11:20:30 GMT+0100 (Central European Standard Time)'"),
        [4]
    );
    assert_eq!(
        cql("CreationDate:>'Tue Mar 05 2024 11:20:29 GMT+0100 (Central European Standard Time)'"),
        [3, 4]
    );
    assert_eq!(
        cql("CreationDate:<'Fri Mar 01 2024 08:00:01 GMT+0000 (Coordinated Universal Time)'"),
        [1, 2, 5, 6, 7, 8]
    );
    // Without the zone's label too; a month name that is none is not a date.
    assert_eq!(
        cql("CreationDate:>'Tue Mar 05 2024 11:20:29 GMT+0100'"),
        [3, 4]
    );
    assert!(parse_cql(
        "CreationDate:>'Tue Mrz 05 2024 11:20:30 GMT+0100'",
        schema()
    )
    .is_err());
}

#[test]
fn less_than() {
    // q.lessThan('Index', 6)
    assert_eq!(cql("Index:<'6'"), [1, 6, 8]);
    // q.lessThan('Index', 6, true)
    assert_eq!(cql("Index:<='6'"), [1, 6, 7, 8]);
}

#[test]
fn and_or() {
    // q.typeIs('Article').and.equals('Pinned', true)
    assert_eq!(cql("TypeIs:Article AND Pinned:'true'"), [3]);
    // q.typeIs('Article').or.typeIs('User')
    assert_eq!(cql("TypeIs:Article OR TypeIs:User"), [3, 4, 8]);
}

#[test]
fn query() {
    // q.typeIs('File').and.query(s => s.equals('Size', 0).or.equals('Name', 'file.txt'))
    assert_eq!(cql("TypeIs:File AND (Size:'0' OR Name:'file.txt')"), [6, 7]);
}

#[test]
fn not() {
    // q.typeIs('Folder').and.not(s => s.equals('Name', 'Root'))
    assert_eq!(cql("TypeIs:Folder AND NOT(Name:'Root')"), [2, 5]);
    // q.not(s => s.typeIs('Folder'))
    assert_eq!(cql("NOT(TypeIs:Folder)"), [3, 4, 6, 7, 8]);
}

#[test]
fn sort_top_skip_autofilters() {
    // q.typeIs('Folder').sort('DisplayName').sort('Index', true).top(5).skip(10).autofilters('OFF')
    let text =
        "TypeIs:Folder .SORT:DisplayName .REVERSESORT:Index .TOP:5 .SKIP:10 .AUTOFILTERS:OFF";
    let c = parse(text).unwrap();
    assert_eq!(
        c.controls
            .iter()
            .map(|c| c.kind.clone())
            .collect::<Vec<_>>(),
        vec![
            ControlKind::Sort {
                field: "DisplayName".into(),
                descending: false
            },
            ControlKind::Sort {
                field: "Index".into(),
                descending: true
            },
            ControlKind::Top(5),
            ControlKind::Skip(10),
            ControlKind::Autofilters(false),
        ]
    );
    let q = parse_cql(text, schema()).unwrap();
    assert_eq!(
        (q.top, q.skip, q.autofilters),
        (Some(5), Some(10), Some(false))
    );
    assert_eq!(q.sort.len(), 2);
    // .autofilters('ON')
    assert_eq!(
        parse_cql("a .AUTOFILTERS:ON", schema())
            .unwrap()
            .autofilters,
        Some(true)
    );
}

#[test]
fn readme_example() {
    // The README's example output (its field names do not exist here: parse only).
    let text = "TypeIs:Task AND DisplayName:'Unicorn' AND ModificationDate:{'2017-01-01T00\\:00\\:00' \
                TO '2017-02-01T00\\:00\\:00'} OR (NOT(Approvable:'true') AND NOT(Description:'*alma*')) \
                .SORT:DisplayName .TOP:5 .SKIP:10";
    assert_eq!(
        ast(text),
        "(+TypeIs:Task +DisplayName:'Unicorn' +ModificationDate:{'2017-01-01T00:00:00' TO \
         '2017-02-01T00:00:00'}) (-Approvable:'true' -Description:'*alma*') .SORT:DisplayName \
         .TOP:5 .SKIP:10"
    );
    // The same shape over fields that exist.
    let text = "TypeIs:Article AND DisplayName:'Quick Brown Fox' AND CreationDate:{'2024-03-01T00\\:00\\:00' \
                TO '2024-03-06T00\\:00\\:00'} OR (NOT(Pinned:'true') AND NOT(Description:'*turtle*')) \
                .SORT:DisplayName .TOP:5 .SKIP:0";
    let q = parse_cql(text, schema()).unwrap();
    assert_eq!(run(q.query.as_ref()), [1, 2, 3, 5, 6, 7, 8]);
}
