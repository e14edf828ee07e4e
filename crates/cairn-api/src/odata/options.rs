//! OData query options (`$select`, `$expand`, `$top`, `$skip`, `$orderby`, `$inlinecount`,
//! `$filter`, `metadata`, `query`, ...), parsed from the raw query string.

use cairn_store::{NodeDetail, COLUMN_FIELDS};

use crate::error::ApiError;

/// How much metadata items carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Metadata {
    /// None.
    No,
    /// `__metadata` with uri and type.
    #[default]
    Minimal,
    /// The same, plus the type's lineage.
    Full,
}

/// The query options of one request.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `$select`: field names (`CreatedBy/Name` selects in an expanded field).
    pub select: Vec<String>,
    /// `$expand`: reference fields to expand.
    pub expand: Vec<String>,
    /// `$top`.
    pub top: Option<usize>,
    /// `$skip`.
    pub skip: Option<usize>,
    /// `$orderby` text.
    pub orderby: Option<String>,
    /// `$inlinecount=allpages`.
    pub inline_count: bool,
    /// `$filter` text.
    pub filter: Option<String>,
    /// `metadata`.
    pub metadata: Metadata,
    /// `query`: a content query.
    pub query: Option<String>,
    /// `enableautofilters`.
    pub autofilters: Option<bool>,
    /// Any other parameter (function arguments), in order.
    pub other: Vec<(String, String)>,
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
pub fn decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

fn number(name: &str, v: &str) -> Result<usize, ApiError> {
    cairn_query::parse::parse_count(v).ok_or_else(|| {
        ApiError::bad_request(format!("{name} must be a non-negative integer, not {v:?}"))
    })
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl Options {
    /// How much of each item the answer shows: only the column fields when every
    /// `$select`ed and `$expand`ed name is one (or `Parent`), else the whole item.
    pub fn node_detail(&self) -> NodeDetail {
        let mut names = (self.select.iter().chain(&self.expand))
            .map(|s| s.split('/').next().unwrap_or_default());
        if !self.select.is_empty() && names.all(|n| n == "Parent" || COLUMN_FIELDS.contains(&n)) {
            NodeDetail::Columns
        } else {
            NodeDetail::Whole
        }
    }

    /// Parses a raw query string; `max_query` bounds the length of `query` and `$filter`.
    pub fn parse(raw: Option<&str>, max_query: usize) -> Result<Options, ApiError> {
        let mut o = Options::default();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k), decode(v));
            match k.as_str() {
                "$select" => o.select.extend(list(&v)),
                "$expand" => o.expand.extend(list(&v)),
                "$top" => o.top = Some(number("$top", &v)?),
                "$skip" => o.skip = Some(number("$skip", &v)?),
                "$orderby" => o.orderby = Some(v),
                "$inlinecount" => o.inline_count = v.eq_ignore_ascii_case("allpages"),
                "$filter" | "query" => {
                    if v.len() > max_query {
                        return Err(ApiError::bad_query(format!(
                            "{k} is longer than {max_query} bytes"
                        )));
                    }
                    if k == "query" {
                        o.query = Some(v);
                    } else {
                        o.filter = Some(v);
                    }
                }
                "metadata" => {
                    o.metadata = match v.to_ascii_lowercase().as_str() {
                        "no" => Metadata::No,
                        "full" => Metadata::Full,
                        _ => Metadata::Minimal,
                    }
                }
                "enableautofilters" => o.autofilters = boolean(&v),
                "$format" | "enablelifespanfilter" | "version" | "scenario" => {}
                _ => o.other.push((k, v)),
            }
        }
        Ok(o)
    }

    /// A function argument by name (case-insensitive).
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.other
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_column_fields_load_only_columns() {
        let detail = |q: &str| Options::parse(Some(q), 1000).unwrap().node_detail();
        assert_eq!(detail("$select=Id,Name"), NodeDetail::Columns);
        assert_eq!(
            detail("$select=Parent/Name,CreatedBy/Name&$expand=Parent,CreatedBy"),
            NodeDetail::Columns
        );
        assert_eq!(detail(""), NodeDetail::Whole);
        assert_eq!(detail("$select=*"), NodeDetail::Whole);
        assert_eq!(detail("$select=Id,Body"), NodeDetail::Whole);
        assert_eq!(detail("$select=Id&$expand=Manager"), NodeDetail::Whole);
        assert_eq!(detail("$expand=CreatedBy"), NodeDetail::Whole);
    }

    #[test]
    fn parses_sensenet_client_options() {
        let o = Options::parse(
            Some("$select=Id,DisplayName,Icon&$top=10000&$skip=5&$orderby=Name%20desc&$inlinecount=allpages&metadata=no&query=TypeIs%3AFolder+AND+Name%3Aa*&recurse=true"),
            1000,
        )
        .unwrap();
        assert_eq!(o.select, vec!["Id", "DisplayName", "Icon"]);
        assert_eq!((o.top, o.skip), (Some(10000), Some(5)));
        assert_eq!(o.orderby.as_deref(), Some("Name desc"));
        assert!(o.inline_count);
        assert_eq!(o.metadata, Metadata::No);
        assert_eq!(o.query.as_deref(), Some("TypeIs:Folder AND Name:a*"));
        assert_eq!(o.arg("Recurse"), Some("true"));
        assert!(Options::parse(Some("$top=-1"), 10).is_err());
        assert!(Options::parse(Some("query=xxxxxxxxxxx"), 10).is_err());
        assert!(Options::parse(Some("%ZZ=%&&=&$top"), 10).is_err());
        assert!(Options::parse(Some("%ZZ=%&&=&"), 10).is_ok());
    }
}
