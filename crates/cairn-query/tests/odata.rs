//! OData `$filter` and `$orderby` against a small index.

mod common;

use cairn_index::SortField;
use cairn_query::parse_orderby;
use common::{filter, filter_err, schema};

const ALL: [i64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn all_but(ids: &[i64]) -> Vec<i64> {
    ALL.iter().copied().filter(|i| !ids.contains(i)).collect()
}

#[test]
fn comparisons() {
    assert_eq!(filter("Name eq 'Doc1'"), [3]);
    assert_eq!(filter("Name eq 'doc1'"), [3]);
    assert_eq!(filter("'Doc1' eq Name"), [3]);
    assert_eq!(filter("Name ne 'Doc1'"), all_but(&[3]));
    assert_eq!(filter("Index gt 10"), [3, 4, 5]);
    assert_eq!(filter("Index ge 10"), [2, 3, 4, 5]);
    assert_eq!(filter("Index lt 6"), [1, 6, 8]);
    assert_eq!(filter("Index le 6"), [1, 6, 7, 8]);
    assert_eq!(filter("10 lt Index"), [3, 4, 5]);
    assert_eq!(filter("Index eq -1"), Vec::<i64>::new());
    assert_eq!(filter("Index gt -1 and Index lt 1"), [1, 8]);
    assert_eq!(filter("Rating eq 4.5"), [3]);
    assert_eq!(filter("Rating gt 2.5M"), [3]);
    assert_eq!(filter("Size eq 1234L"), [6]);
    assert_eq!(filter("Pinned eq true"), [3]);
    assert_eq!(filter("Pinned eq false"), [4]);
    assert_eq!(filter("Pinned"), [3]);
    assert_eq!(filter("not Pinned"), all_but(&[3]));
    assert_eq!(filter("Author eq 'O''Brien'"), [3]);
    assert_eq!(filter("Description eq 'brown fox'"), [3]);
    assert_eq!(filter("DisplayName eq 'a*b?c (1)'"), [7]);
    assert_eq!(filter("Type eq 'Folder'"), [1, 2]);
    assert_eq!(filter("Category eq 'Blog'"), [4]);
}

#[test]
fn dates() {
    assert_eq!(
        filter("CreationDate gt datetime'2024-03-01T00:00:00'"),
        [2, 3, 4]
    );
    assert_eq!(filter("CreationDate lt datetime'2024-01-01'"), [1, 5, 8]);
    assert_eq!(filter("PublishDate eq datetime'2024-03-06T00:00:00'"), [4]);
    assert_eq!(
        filter("PublishDate eq datetimeoffset'2024-03-06T01:00:00+01:00'"),
        [4]
    );
    assert_eq!(filter("CreationDate ge '2024-03-05'"), [3, 4]);
}

#[test]
fn null() {
    assert_eq!(filter("Subtitle eq null"), all_but(&[3]));
    assert_eq!(filter("Subtitle ne null"), [3]);
    assert_eq!(filter("Body eq null"), all_but(&[3, 4]));
    assert_eq!(filter("Size ne null"), [6, 7]);
    assert_eq!(filter("null ne Size"), [6, 7]);
}

#[test]
fn functions() {
    assert_eq!(filter("startswith(Name,'Doc')"), [3, 4]);
    assert_eq!(filter("startswith(Name, 'doc') eq true"), [3, 4]);
    assert_eq!(filter("startswith(Name,'Doc') eq false"), all_but(&[3, 4]));
    assert_eq!(filter("not startswith(Name,'Doc')"), all_but(&[3, 4]));
    assert_eq!(filter("endswith(Name,'.txt')"), [6]);
    assert_eq!(filter("substringof('file',Name)"), [6, 7]);
    assert_eq!(filter("contains(Name,'file')"), [6, 7]);
    // Regular-expression characters in the text stay literal.
    assert_eq!(filter("substringof('.',Name)"), [6]);
    assert_eq!(filter("endswith(MimeType,'x.y+z')"), [7]);
    assert_eq!(filter("substringof('(1)',DisplayName)"), [7]);
    assert_eq!(filter("startswith(DisplayName,'a*')"), [7]);
    assert_eq!(filter("startswith(Name,'')"), ALL);
    // On full text the functions apply to words.
    assert_eq!(filter("startswith(Description,'qui')"), [3]);
    assert_eq!(filter("substringof('row',Description)"), [3]);
    assert_eq!(filter("isof('Folder')"), [1, 2, 5]);
    assert_eq!(filter("isof('SystemFolder')"), [5]);
    assert_eq!(filter("tolower(Name) eq 'doc1'"), [3]);
}

#[test]
fn logic_and_precedence() {
    assert_eq!(
        filter("(Index gt 10 and Index lt 20) or Name eq 'A'"),
        [2, 3, 4]
    );
    assert_eq!(filter("not (Index gt 10)"), [1, 2, 6, 7, 8]);
    assert_eq!(filter("not(Index gt 10)"), [1, 2, 6, 7, 8]);
    // and binds tighter than or.
    assert_eq!(filter("Name eq 'A' or Name eq 'B' and Index eq 10"), [2]);
    assert_eq!(filter("Name eq 'A' OR Name eq 'B'"), [2, 5]);
    assert_eq!(
        filter("isof('Article') and (Pinned or Rating lt 3)"),
        [3, 4]
    );
    assert_eq!(filter("isof('Article') and not Pinned"), [4]);
    assert_eq!(filter("not not Pinned"), [3]);
}

#[test]
fn errors_say_where() {
    assert_eq!(filter_err("").position, 0);
    assert_eq!(filter_err("Name eq").position, 7);
    assert_eq!(filter_err("Name eq 'x").position, 8);
    let e = filter_err("Nope eq 1");
    assert_eq!(e.position, 0);
    assert!(e.message.contains("'Nope'"), "{e}");
    assert_eq!(filter_err("Index eq 'abc'").position, 9);
    assert_eq!(filter_err("Name foo 'x'").position, 5);
    assert_eq!(filter_err("startswith(Name)").position, 15);
    assert_eq!(filter_err("Index gt null").position, 9);
    assert_eq!(filter_err("frob(Name)").position, 0);
    assert_eq!(filter_err("Name/Sub eq 1").position, 4);
    assert_eq!(filter_err("Index eq 1 and").position, 14);
    assert_eq!(filter_err("Index eq 1 Name").position, 11);
    assert_eq!(filter_err("(Index eq 1").position, 11);
    assert_eq!(filter_err("Name eq Index").position, 5);
    assert_eq!(filter_err("'a' eq 'b'").position, 4);
    assert_eq!(filter_err("5").position, 0);
    assert_eq!(filter_err("Index eq 1 # 2").position, 11);
    assert_eq!(filter_err("isof(Name, 'Folder')").position, 5);
    let deep = format!("{}Pinned{}", "(".repeat(100), ")".repeat(100));
    assert_eq!(filter_err(&deep).position, 64);
    let nots = format!("{}Pinned", "not ".repeat(1000));
    assert_eq!(filter_err(&nots).position, 4 * 64);
    let ok = format!("{}Pinned{}", "(".repeat(64), ")".repeat(64));
    assert_eq!(filter(&ok), [3]);
}

#[test]
fn orderby() {
    let s = |field: &str, descending| SortField {
        field: field.into(),
        descending,
    };
    assert_eq!(
        parse_orderby("DisplayName desc, Index", schema()).unwrap(),
        vec![s("DisplayName", true), s("Index", false)]
    );
    assert_eq!(
        parse_orderby(" Name  ASC ,CreationDate DESC ", schema()).unwrap(),
        vec![s("Name", false), s("CreationDate", true)]
    );
    assert_eq!(parse_orderby("", schema()).unwrap(), vec![]);
    assert_eq!(parse_orderby("  ", schema()).unwrap(), vec![]);
    let e = parse_orderby("Name, Description", schema()).unwrap_err();
    assert_eq!(e.position, 6);
    assert!(e.message.contains("full text"), "{e}");
    assert_eq!(parse_orderby("Nope", schema()).unwrap_err().position, 0);
    assert_eq!(parse_orderby("Name up", schema()).unwrap_err().position, 5);
    assert_eq!(parse_orderby("Name,", schema()).unwrap_err().position, 5);
    assert_eq!(
        parse_orderby("Name desc x", schema()).unwrap_err().position,
        10
    );
    assert_eq!(
        parse_orderby("Name, Index, Id, Type", schema())
            .unwrap_err()
            .position,
        17
    );
}

#[test]
fn filter_trees() {
    let ast = |q: &str| cairn_query::odata::parse_filter(q).unwrap().to_string();
    assert_eq!(ast("Name eq 'a b'"), "Name:'a b'");
    assert_eq!(ast("Name ne 'x'"), "(-Name:'x')");
    assert_eq!(ast("Index gt 5"), "Index:{'5' TO *}");
    assert_eq!(ast("5 ge Index"), "Index:{* TO '5']");
    assert_eq!(ast("Name eq null"), "(-Name:*)");
    assert_eq!(ast("Name ne null"), "Name:*");
    assert_eq!(ast("startswith(Name,'a*')"), "Name:'a\\**'");
    assert_eq!(ast("endswith(Name,'x')"), "Name:'*x'");
    assert_eq!(ast("substringof('x',Name)"), "Name:'*x*'");
    assert_eq!(ast("isof('Folder')"), "TypeIs:'Folder'");
    assert_eq!(ast("Pinned"), "Pinned:'true'");
    assert_eq!(
        ast("a eq 1 or b eq 2 and not c eq 3"),
        "(a:'1' (+b:'2' +(-c:'3')))"
    );
    assert_eq!(
        ast("CreationDate lt datetime'2024-01-01T00:00:00'"),
        "CreationDate:{* TO '2024-01-01T00:00:00'}"
    );
}
