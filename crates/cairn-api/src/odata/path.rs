//! OData resource paths in sensenet's forms, after `/odata.svc`:
//!
//! | path | resource |
//! |---|---|
//! | `/Root/A('B')`, `/Root/A/('B')` | the item /Root/A/B |
//! | `/content(42)` | the item with id 42 |
//! | `/('Root')` | /Root |
//! | `/Root/A/B` | the children of /Root/A/B |
//! | `/Root/A/B/$count` | their number |
//! | `<item>/Field`, `<item>/Field/$value`, `<item>/Action` | a field, its raw value, an action |

use cairn_store::{NodeId, NodeRef};

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// One item.
    Item(NodeRef),
    /// The children of the item at this path.
    Collection(String),
}

/// A parsed OData path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ODataPath {
    /// The addressed item or collection.
    pub resource: Resource,
    /// A field or action name after an item.
    pub member: Option<String>,
    /// `/$value` after a field.
    pub raw_value: bool,
    /// `/$count` after a collection.
    pub count: bool,
}

/// Why a path could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PathError> {
    Err(PathError(msg.into()))
}

/// Splits an item segment `A('B')` or `('B')` into the container part and the key. The key
/// runs to the segment's final `')`: sensenet's client does not escape quotes in names, so a
/// name like `it's` arrives as `('it's')`; a doubled `''` is read as one quote.
fn item_segment(segment: &str) -> Option<(&str, String)> {
    let inner = segment.strip_suffix("')")?;
    let open = inner.find("('")?;
    Some((&inner[..open], inner[open + 2..].replace("''", "'")))
}

/// Parses what follows an item: nothing, `/Member`, or `/Member/$value`.
fn member(rest: &str) -> Result<(Option<String>, bool), PathError> {
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Ok((None, false));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return err(format!("unexpected {rest:?} after the item"));
    };
    let mut parts = rest.split('/');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() || name.starts_with('$') {
        return err(format!("unexpected {rest:?} after the item"));
    }
    let raw = match parts.next() {
        None => false,
        Some("$value") => true,
        Some(other) => return err(format!("unexpected /{other} after /{name}")),
    };
    if parts.next().is_some() {
        return err("too many segments after the item");
    }
    Ok((Some(name.to_string()), raw))
}

fn check_container(path: &str) -> Result<String, PathError> {
    let path = path.trim_end_matches('/');
    let lower = path.to_ascii_lowercase();
    if lower == "/root" || lower.starts_with("/root/") {
        Ok(path.to_string())
    } else {
        err(format!("{path:?} is not under /Root"))
    }
}

/// Parses a percent-decoded path below `/odata.svc`.
pub fn parse(path: &str) -> Result<ODataPath, PathError> {
    if path.is_empty() || path == "/" {
        return err("the service root has no content; address /Root");
    }
    if let Some(rest) = strip_prefix_ci(path, "/content(") {
        let close = rest
            .find(')')
            .ok_or_else(|| PathError("content( without )".into()))?;
        let id: i64 = rest[..close]
            .trim()
            .parse()
            .map_err(|_| PathError(format!("{:?} is not a content id", &rest[..close])))?;
        let (member, raw_value) = member(&rest[close + 1..])?;
        return Ok(ODataPath {
            resource: Resource::Item(NodeRef::Id(NodeId(id))),
            member,
            raw_value,
            count: false,
        });
    }
    let segments: Vec<&str> = path.split('/').collect();
    if let Some(i) = segments.iter().position(|seg| item_segment(seg).is_some()) {
        let (head, key) = item_segment(segments[i]).unwrap_or_default();
        if key.is_empty() || key.contains('/') {
            return err(format!("{key:?} is not a content name"));
        }
        let mut container = segments[..i].join("/");
        if !head.is_empty() {
            container = format!("{container}/{head}");
        }
        let item = if container.trim_end_matches('/').is_empty() {
            if !key.eq_ignore_ascii_case("Root") {
                return err(format!("{key:?} is not under /Root"));
            }
            "/Root".to_string()
        } else {
            format!("{}/{key}", check_container(&container)?)
        };
        let rest = segments[i + 1..].join("/");
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!("/{rest}")
        };
        let (member, raw_value) = member(&rest)?;
        return Ok(ODataPath {
            resource: Resource::Item(NodeRef::Path(item)),
            member,
            raw_value,
            count: false,
        });
    }
    let (path, count) = match path.trim_end_matches('/').strip_suffix("/$count") {
        Some(p) => (p, true),
        None => (path, false),
    };
    if path.contains('$') || path.contains("('") {
        return err(format!("malformed path {path:?}"));
    }
    Ok(ODataPath {
        resource: Resource::Collection(check_container(path)?),
        member: None,
        raw_value: false,
        count,
    })
}

/// `s` without `prefix`, compared case-insensitively (ASCII).
pub(crate) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: &str) -> Resource {
        Resource::Item(NodeRef::Path(p.into()))
    }

    #[test]
    fn sensenet_forms() {
        assert_eq!(parse("/Root/A('B')").unwrap().resource, item("/Root/A/B"));
        assert_eq!(parse("/Root/A/('B')").unwrap().resource, item("/Root/A/B"));
        assert_eq!(parse("/('Root')").unwrap().resource, item("/Root"));
        assert_eq!(
            parse("/content(42)").unwrap().resource,
            Resource::Item(NodeRef::Id(NodeId(42)))
        );
        assert_eq!(
            parse("/Root/A/B").unwrap().resource,
            Resource::Collection("/Root/A/B".into())
        );
        let c = parse("/Root/A/$count").unwrap();
        assert!(c.count);
        assert_eq!(c.resource, Resource::Collection("/Root/A".into()));
        let f = parse("/Root/A('B')/DisplayName/$value").unwrap();
        assert_eq!(f.member.as_deref(), Some("DisplayName"));
        assert!(f.raw_value);
        let a = parse("/('Root')/DeleteBatch").unwrap();
        assert_eq!(a.member.as_deref(), Some("DeleteBatch"));
        assert_eq!(
            parse("/Root('it''s')").unwrap().resource,
            item("/Root/it's")
        );
        assert_eq!(
            parse("/Root/A/('My Doc é's')").unwrap().resource,
            item("/Root/A/My Doc é's")
        );
        assert_eq!(
            parse("/Root/A/('x')/Name").unwrap().member.as_deref(),
            Some("Name")
        );
        assert_eq!(
            parse("/CONTENT(7)/Name").unwrap().member.as_deref(),
            Some("Name")
        );
    }

    #[test]
    fn bad_paths_are_errors() {
        for bad in [
            "",
            "/",
            "/Other/A",
            "/Root('x",
            "/Root('x'",
            "/content(x)",
            "/content(1",
            "/('Other')",
            "/Root('a')/b/c/d",
            "/Root('a')/$count",
            "/Root/$metadata",
            "/Root('')",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn never_panics_on_soup() {
        let pieces = [
            "/", "Root", "('", "')", "'", "(", ")", "$count", "$value", "content(", "1", "é", "''",
            "x",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(seed % 9) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = parse(&s);
        }
    }
}
