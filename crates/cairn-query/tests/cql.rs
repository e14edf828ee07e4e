//! CQL against a small index: every syntax form, by its hits.

mod common;

use cairn_index::SortField;
use cairn_query::{parse_cql, parse_cql_with, QueryContext};
use common::{cql, cql_err, run, schema};

const ALL: [i64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn all_but(ids: &[i64]) -> Vec<i64> {
    ALL.iter().copied().filter(|i| !ids.contains(i)).collect()
}

#[test]
fn types_and_places() {
    assert_eq!(cql("TypeIs:Folder"), [1, 2, 5]);
    assert_eq!(cql("TypeIs:folder"), [1, 2, 5]);
    assert_eq!(cql("TypeIs:SystemFolder"), [5]);
    assert_eq!(cql("TypeIs:GenericContent"), ALL);
    assert_eq!(cql("Type:Folder"), [1, 2]);
    assert_eq!(cql("Type:'folder'"), [1, 2]);
    assert_eq!(cql("InTree:/Root/A"), [2, 3, 4]);
    assert_eq!(cql("InTree:'/Root/A'"), [2, 3, 4]);
    assert_eq!(cql("InTree:\"/root/a/\""), [2, 3, 4]);
    assert_eq!(cql("InTree:/Root"), ALL);
    assert_eq!(cql("InFolder:/Root/A"), [3, 4]);
    assert_eq!(cql("InFolder:'/Root/'"), [2, 5]);
    assert_eq!(cql("Path:'/Root/B/file.txt'"), [6]);
    assert_eq!(cql("Path:/root/b/*"), [6, 7]);
}

#[test]
fn keyword_values_and_wildcards() {
    assert_eq!(cql("Name:Doc1"), [3]);
    assert_eq!(cql("Name:DOC1"), [3]);
    assert_eq!(cql("Name:'Doc1'"), [3]);
    assert_eq!(cql("Name:Doc*"), [3, 4]);
    assert_eq!(cql("Name:'doc*'"), [3, 4]);
    assert_eq!(cql("Name:do?1"), [3]);
    assert_eq!(cql("Name:*file*"), [6, 7]);
    assert_eq!(cql("Name:*.txt"), [6]);
    assert_eq!(cql("Name:my-file"), [7]);
    assert_eq!(cql("DisplayName:'Alpha Folder'"), [2]);
    assert_eq!(cql("DisplayName:a*"), [2, 7, 8]);
    // Escaped wildcards are literal characters.
    assert_eq!(cql("DisplayName:'a\\*b\\?c (1)'"), [7]);
    assert_eq!(cql("DisplayName:a\\*b*"), [7]);
    assert_eq!(cql("DisplayName:'*(1)'"), [7]);
    assert_eq!(cql("Author:'O\\'Brien'"), [3]);
    assert_eq!(cql("MimeType:application/x.y+z"), [7]);
    assert_eq!(cql("Category:news"), [3]);
    assert_eq!(cql("Category:(News Blog)"), [3, 4]);
    assert_eq!(cql("Name:Doc9"), Vec::<i64>::new());
}

#[test]
fn full_text() {
    assert_eq!(cql("fox"), [3]);
    assert_eq!(cql("FOX"), [3]);
    assert_eq!(cql("turtle"), [4]);
    assert_eq!(cql("über"), [3]);
    assert_eq!(cql("ÜBER"), [3]);
    assert_eq!(cql("Description:quick"), [3]);
    assert_eq!(cql("Description:\"brown fox\""), [3]);
    assert_eq!(cql("Description:'Brown, fox!'"), [3]);
    assert_eq!(cql("Description:\"fox brown\""), Vec::<i64>::new());
    assert_eq!(cql("Description:\"fox brown\"~2"), [3]);
    assert_eq!(cql("Description:\"quick fox\"~1"), [3]);
    assert_eq!(cql("Description:jump*"), [3]);
    assert_eq!(cql("Description:qu?ck"), [3]);
    assert_eq!(cql("Description:'brown fo*'"), [3]);
    assert_eq!(cql("Description:'brown ju*'"), Vec::<i64>::new());
    assert_eq!(cql("Body:tantivy"), [3]);
    assert_eq!(cql("Description:quikc~"), [3]);
    assert_eq!(cql("Name:doc9~0.8"), Vec::<i64>::new());
    assert_eq!(cql("Name:doc9~0.7"), [3, 4]);
    assert_eq!(cql("'!!!'"), Vec::<i64>::new());
    let e = cql_err("Description:'br*wn fox'");
    assert_eq!(e.position, 12);
}

#[test]
fn numbers_booleans_dates() {
    assert_eq!(cql("Index:10"), [2]);
    assert_eq!(cql("Index:'10'"), [2]);
    assert_eq!(cql("Id:(1 2 3)"), [1, 2, 3]);
    assert_eq!(cql("Index:[10 TO 19]"), [2, 3, 4]);
    assert_eq!(cql("Index:{10 TO 19}"), [3]);
    assert_eq!(cql("Index:[10 TO 19}"), [2, 3]);
    assert_eq!(cql("Index:['10' TO '19'}"), [2, 3]);
    assert_eq!(cql("Index:{10 TO 19]"), [3, 4]);
    assert_eq!(cql("Index:[* TO 5]"), [1, 6, 8]);
    assert_eq!(cql("Index:[19 TO ]"), [4, 5]);
    assert_eq!(cql("Index:[19 TO 10]"), Vec::<i64>::new());
    assert_eq!(cql("Index:>10"), [3, 4, 5]);
    assert_eq!(cql("Index:>=10"), [2, 3, 4, 5]);
    assert_eq!(cql("Index:<6"), [1, 6, 8]);
    assert_eq!(cql("Index:<='6'"), [1, 6, 7, 8]);
    assert_eq!(cql("Index:>-1 AND Index:<1"), [1, 8]);
    assert_eq!(cql("Rating:4.5"), [3]);
    assert_eq!(cql("Rating:>3"), [3]);
    assert_eq!(cql("Rating:[1 TO 3]"), [4]);
    assert_eq!(cql("ReadCount:100"), [3]);
    assert_eq!(cql("Related:4"), [3]);
    assert_eq!(cql("CreatedBy:8"), ALL);
    assert_eq!(cql("ModifiedBy:1"), [3]);
    assert_eq!(cql("Pinned:true"), [3]);
    assert_eq!(cql("Pinned:no"), [4]);
    assert_eq!(cql("Pinned:1"), [3]);
    assert_eq!(cql("Enabled:YES"), [8]);
    assert_eq!(cql("PublishDate:2024-03-05"), [3]);
    assert_eq!(cql("PublishDate:'2024-03-05T10:20:30.123456Z'"), [3]);
    assert_eq!(cql("PublishDate:'2024-03-05T10:20:30Z'"), Vec::<i64>::new());
    assert_eq!(cql("PublishDate:'2024-03-05T11:20:30.123456+01:00'"), [3]);
    assert_eq!(cql("CreationDate:'2024-02-29'"), [6, 7]);
    assert_eq!(cql("CreationDate:'2024-02-29 12:00:00'"), [6, 7]);
    assert_eq!(cql("CreationDate:[2024-03-01 TO 2024-03-05]"), [2, 3]);
    assert_eq!(cql("CreationDate:[2024-03-01 TO 2024-03-05}"), [2]);
    assert_eq!(cql("CreationDate:{2024-03-01 TO 2024-03-06]"), [3, 4]);
    assert_eq!(cql("CreationDate:>2024-03-05"), [4]);
    assert_eq!(cql("CreationDate:>=2024-03-05"), [3, 4]);
    assert_eq!(cql("CreationDate:<2024-01-01"), [1, 5, 8]);
    assert_eq!(cql("CreationDate:<='2023-12-31'"), [1, 5, 8]);
    assert_eq!(cql("CreationDate:<'2023-12-31T23:59:59Z'"), [1, 8]);
}

#[test]
fn filter_fields_do_not_sort() {
    // InTree, InFolder and TypeIs only filter: they have no column to sort by.
    for field in ["InTree", "InFolder", "TypeIs"] {
        let e = cql_err(&format!("Name:Doc1 .SORT:{field}"));
        assert!(e.message.contains("only filters"), "{field}: {e}");
    }
    // Their filtering is unchanged.
    assert_eq!(cql("InTree:/Root/A .SORT:Name"), [2, 3, 4]);
}

#[test]
fn value_errors_say_where() {
    let e = cql_err("Index:abc");
    assert_eq!(e.position, 6);
    assert!(e.message.contains("not an integer"), "{e}");
    assert_eq!(e.to_string(), format!("{} at position 6", e.message));
    assert_eq!(cql_err("Rating:x").position, 7);
    assert_eq!(cql_err("Pinned:maybe").position, 7);
    assert_eq!(cql_err("CreationDate:2024-13-01").position, 13);
    assert_eq!(cql_err("Index:[1 TO x]").position, 12);
    assert_eq!(cql_err("Index:1*").position, 6);
    assert_eq!(cql_err("Index:1~").position, 6);
    // A message names one position and reads as a sentence.
    assert_eq!(
        cql_err("Name:(a").to_string(),
        "the '(' at position 5 is not closed: missing ')' at position 7"
    );
    assert!(cql_err("Name:")
        .to_string()
        .starts_with("unexpected end of the query"));
    let e = cql_err("a OR Nope:x");
    assert_eq!(e.position, 5);
    assert!(e.message.contains("'Nope'"), "{e}");
    assert_eq!(cql_err("name:x").position, 0);
    assert_eq!(cql_err("_Fingerprint:1").position, 0);
    assert_eq!(cql_err("Description:[a TO 'b c']").position, 18);
    assert_eq!(cql_err("Name:'a b c'~x").position, 13);
    let long = format!("Name:'{}*'", "a".repeat(200));
    assert_eq!(cql_err(&long).position, 5);
    assert_eq!(cql_err("Index:{{Name:x}}").position, 0);
    assert_eq!(cql_err("CreatedBy:{{Name:x}}").position, 0);
}

#[test]
fn boolean_logic() {
    assert_eq!(cql("TypeIs:Folder AND InTree:/Root/A"), [2]);
    assert_eq!(cql("TypeIs:Folder && InTree:/Root/A"), [2]);
    assert_eq!(cql("+TypeIs:Folder +InTree:/Root/A"), [2]);
    assert_eq!(cql("TypeIs:Article -Pinned:true"), [4]);
    assert_eq!(cql("+TypeIs:Article +Rating:>3"), [3]);
    assert_eq!(cql("TypeIs:Article OR TypeIs:User"), [3, 4, 8]);
    assert_eq!(cql("TypeIs:Article TypeIs:User"), [3, 4, 8]);
    assert_eq!(cql("TypeIs:Article || TypeIs:User"), [3, 4, 8]);
    assert_eq!(cql("TypeIs:Folder NOT Name:Root"), [2, 5]);
    assert_eq!(cql("TypeIs:Folder AND NOT Name:Root"), [2, 5]);
    assert_eq!(cql("NOT TypeIs:Folder"), all_but(&[1, 2, 5]));
    assert_eq!(cql("-TypeIs:Folder"), all_but(&[1, 2, 5]));
    assert_eq!(cql("!TypeIs:Folder"), all_but(&[1, 2, 5]));
    assert_eq!(cql("Name:<>Root"), all_but(&[1]));
    assert_eq!(
        cql("(TypeIs:Article OR TypeIs:File) AND NOT Size:0"),
        [3, 4, 6]
    );
    assert_eq!(cql("TypeIs:Article AND (Pinned:true OR Rating:<3)"), [3, 4]);
    assert_eq!(
        cql("TypeIs:File OR TypeIs:User AND Enabled:true"),
        [6, 7, 8]
    );
    assert_eq!(cql("(TypeIs:File OR TypeIs:User) AND Size:0"), [7]);
    assert_eq!(cql("+TypeIs:Article Pinned:true"), [3, 4]);
    assert_eq!(cql("Name:Doc1^2 OR Name:Doc2"), [3, 4]);
    assert_eq!(cql("Size:*"), [6, 7]);
    assert_eq!(cql("Body:*"), [3, 4]);
    assert_eq!(cql("Subtitle:*"), [3]);
    assert_eq!(cql("NOT Subtitle:*"), all_but(&[3]));
    assert_eq!(cql("Name:(Doc1 OR Doc2) AND Pinned:false"), [4]);
}

#[test]
fn controls() {
    let q = parse_cql(
        "TypeIs:Folder .TOP:5 .SKIP:2 .SORT:DisplayName .REVERSESORT:Index .COUNTONLY \
         .AUTOFILTERS:OFF .LIFESPAN:ON .QUICK .ALLVERSIONS",
        schema(),
    )
    .unwrap();
    assert_eq!(q.top, Some(5));
    assert_eq!(q.skip, Some(2));
    assert!(q.count_only);
    assert_eq!(q.autofilters, Some(false));
    assert_eq!(q.lifespan, Some(true));
    assert_eq!(
        q.sort,
        vec![
            SortField {
                field: "DisplayName".into(),
                descending: false
            },
            SortField {
                field: "Index".into(),
                descending: true
            }
        ]
    );
    assert_eq!(run(q.query.as_ref()), [1, 2, 5]);
    let q = parse_cql("a", schema()).unwrap();
    assert_eq!(
        (q.top, q.skip, q.count_only, q.autofilters, q.lifespan),
        (None, None, false, None, None)
    );
    assert!(q.sort.is_empty());
    assert_eq!(parse_cql("a .TOP:0", schema()).unwrap().top, None);
    let e = cql_err("a .SORT:Description");
    assert_eq!(e.position, 2);
    assert!(e.message.contains("full text"), "{e}");
    assert_eq!(cql_err("a .SORT:Nope").position, 2);
    assert_eq!(
        cql_err("a .SORT:Name .SORT:Index .SORT:Id .SORT:Type").position,
        34
    );
}

#[test]
fn templates() {
    let now = cairn_store::content::parse_date("2024-03-06T12:00:00Z").unwrap();
    let mut ctx = QueryContext {
        current_user: Some(8),
        now: Some(now),
        nested: None,
    };
    let mut ids = |q: &str| {
        run(parse_cql_with(q, schema(), &mut ctx)
            .unwrap()
            .query
            .as_ref())
    };
    assert_eq!(ids("CreatedBy:@@CurrentUser@@"), ALL);
    assert_eq!(ids("ModifiedBy:@@CurrentUser.Id@@"), Vec::<i64>::new());
    assert_eq!(ids("CreationDate:@@Yesterday@@"), [3]);
    assert_eq!(ids("CreationDate:@@Today@@"), [4]);
    assert_eq!(ids("CreationDate:<@@CurrentDate@@"), all_but(&[4]));
    assert_eq!(ids("CreationDate:<@@CurrentTime@@"), ALL);
    assert_eq!(ids("CreationDate:[@@Yesterday@@ TO @@Tomorrow@@]"), [3, 4]);
    // As a bound, a day template is the start of its day (sensenet's definition), so
    // "since yesterday" takes in yesterday; a bare date bound covers its whole day.
    assert_eq!(ids("CreationDate:>@@Yesterday@@"), [3, 4]);
    assert_eq!(ids("CreationDate:>2024-03-05"), [4]);
    assert_eq!(ids("CreationDate:<=@@Yesterday@@"), all_but(&[3, 4]));
    assert_eq!(ids("CreationDate:<=2024-03-05"), all_but(&[4]));
    assert_eq!(ids("CreationDate:>=@@Today@@"), [4]);
    assert_eq!(ids("CreationDate:>@@Today@@"), Vec::<i64>::new());
    assert_eq!(ids("CreationDate:{@@Yesterday@@ TO @@Today@@}"), [3]);
    // Quoted, a template is plain text.
    assert_eq!(cql("_Text:'@@Today@@'"), Vec::<i64>::new());
    assert_eq!(cql_err("CreatedBy:@@CurrentUser@@").position, 10);
    assert_eq!(cql_err("CreationDate:@@NextCentury@@").position, 13);
}

#[test]
fn nested_queries() {
    let mut calls = 0;
    let mut resolve = |q: &dyn tantivy::query::Query| {
        calls += 1;
        Ok(run(q))
    };
    {
        let mut ctx = QueryContext {
            nested: Some(&mut resolve),
            ..Default::default()
        };
        let mut ids = |q: &str| {
            run(parse_cql_with(q, schema(), &mut ctx)
                .unwrap()
                .query
                .as_ref())
        };
        assert_eq!(ids("CreatedBy:{{Name:Admin}}"), ALL);
        assert_eq!(ids("Related:{{Name:Doc2}}"), [3]);
        assert_eq!(ids("Related:{{Name:Nope}}"), Vec::<i64>::new());
        assert_eq!(ids("TypeIs:Article AND NOT Related:{{TypeIs:File}}"), [4]);
    }
    assert_eq!(calls, 4);
    let mut failing = |_: &dyn tantivy::query::Query| Err("no searcher".to_string());
    let mut ctx = QueryContext {
        nested: Some(&mut failing),
        ..Default::default()
    };
    let e = parse_cql_with("a OR CreatedBy:{{Name:Admin}}", schema(), &mut ctx).unwrap_err();
    assert_eq!((e.position, e.message.as_str()), (5, "no searcher"));
}
