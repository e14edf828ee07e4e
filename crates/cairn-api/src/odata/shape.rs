//! sensenet's JSON for items: the selected fields (at least Id, Path, Name, Type), expanded
//! references as nested items, `__metadata` unless `metadata=no`.

use std::collections::HashMap;

use cairn_store::{content::parent_path, ContentTypes, FieldKind, FieldValue, Node, NodeId};
use serde_json::{json, Map, Value};

use super::options::{Metadata, Options};

/// Fields every item carries whatever `$select` says.
const ALWAYS: [&str; 4] = ["Id", "Path", "Name", "Type"];

/// The OData URL of the item at `path`: `/odata.svc/Root/A('B')`, `/odata.svc/('Root')`.
pub fn item_url(path: &str) -> String {
    let url = match parent_path(path) {
        Some(parent) => format!(
            "/odata.svc{parent}('{}')",
            path[parent.len() + 1..].replace('\'', "''")
        ),
        None => format!("/odata.svc/('{}')", path.trim_start_matches('/')),
    };
    percent_encoding::utf8_percent_encode(&url, URL_UNSAFE).to_string()
}

/// What a name may hold that would end or change a URL's path: escaped in item URLs.
const URL_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Shapes items for one request.
pub struct Shaper<'a> {
    types: &'a ContentTypes,
    opts: &'a Options,
    refs: HashMap<NodeId, Node>,
}

/// How deep `$expand` follows references (`A/B/C` is 3).
const MAX_EXPAND_DEPTH: usize = 3;

/// The ids `node`'s reference field `field` (or `Parent`) holds.
fn field_ids(node: &Node, field: &str) -> Vec<NodeId> {
    if field == "Parent" {
        node.parent_id.into_iter().collect()
    } else if let Some(FieldValue::Reference(ids)) = node.value(field) {
        ids
    } else {
        Vec::new()
    }
}

impl<'a> Shaper<'a> {
    /// A shaper for `nodes`; `load` fetches referenced items for `$expand`, once per level
    /// of the expanded paths (`$expand=Related/CreatedBy` loads the related items, then
    /// their creators).
    pub fn new(
        types: &'a ContentTypes,
        opts: &'a Options,
        nodes: &[&Node],
        mut load: impl FnMut(&[NodeId]) -> Vec<Node>,
    ) -> Self {
        let paths: Vec<Vec<&str>> = opts
            .expand
            .iter()
            .map(|e| e.split('/').take(MAX_EXPAND_DEPTH).collect())
            .collect();
        let depth = paths.iter().map(Vec::len).max().unwrap_or(0);
        let mut refs: HashMap<NodeId, Node> = HashMap::new();
        for d in 0..depth {
            let mut ids = Vec::new();
            for path in paths.iter().filter(|p| p.len() > d) {
                // The items this path reaches at depth `d`.
                let mut at: Vec<&Node> = nodes.to_vec();
                for field in &path[..d] {
                    at = at
                        .iter()
                        .flat_map(|n| field_ids(n, field))
                        .filter_map(|id| refs.get(&id))
                        .collect();
                }
                ids.extend(at.iter().flat_map(|n| field_ids(n, path[d])));
            }
            ids.sort_unstable();
            ids.dedup();
            ids.retain(|id| !refs.contains_key(id));
            if !ids.is_empty() {
                refs.extend(load(&ids).into_iter().map(|n| (n.id, n)));
            }
        }
        Shaper { types, opts, refs }
    }

    fn metadata(&self, node: &Node) -> Option<Value> {
        let base = json!({"uri": item_url(&node.path), "type": node.type_name});
        match self.opts.metadata {
            Metadata::No => None,
            Metadata::Minimal => Some(base),
            Metadata::Full => {
                let mut m = base;
                if let Ok(t) = self.types.get(&node.type_name) {
                    m["lineage"] = json!(t.lineage);
                }
                Some(m)
            }
        }
    }

    fn fields(&self, node: &Node, select: &[&str]) -> Map<String, Value> {
        if select.is_empty() || select.contains(&"*") {
            return node.to_json(self.types);
        }
        let names = ALWAYS.iter().chain(select.iter());
        let Ok(t) = self.types.get(&node.type_name) else {
            let all = node.to_json(self.types);
            return names
                .filter_map(|n| Some((n.to_string(), all.get(*n)?.clone())))
                .collect();
        };
        // What `to_json` gives for these names, without building the rest (a body).
        names
            .filter_map(|n| {
                let def = t.field(n).filter(|d| !d.is_hidden())?;
                Some((n.to_string(), node.field_json(def)))
            })
            .collect()
    }

    /// The JSON of `node`'s field at the end of the expanded path `path` (`Related`, or
    /// `Related/CreatedBy` inside a related item), with the `$select`ed fields under that
    /// path and the expansions that go deeper.
    fn expanded(&self, node: &Node, path: &str) -> Option<Value> {
        let field = path.rsplit('/').next().unwrap_or(path);
        let below = format!("{path}/");
        let sub: Vec<&str> = self
            .opts
            .select
            .iter()
            .filter_map(|s| s.strip_prefix(&below))
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .collect();
        let deeper: Vec<String> = self
            .opts
            .expand
            .iter()
            .filter_map(|e| e.strip_prefix(&below))
            .filter_map(|rest| rest.split('/').next())
            .map(|next| format!("{below}{next}"))
            .filter(|p| p.split('/').count() <= MAX_EXPAND_DEPTH)
            .collect();
        let one = |id: &NodeId| {
            self.refs.get(id).map(|n| {
                let mut m = self.fields(n, &sub);
                for p in &deeper {
                    if let Some(v) = self.expanded(n, p) {
                        let name = p.rsplit('/').next().unwrap_or(p);
                        m.insert(name.to_string(), v);
                    }
                }
                if let Some(meta) = self.metadata(n) {
                    m.insert("__metadata".into(), meta);
                }
                Value::Object(m)
            })
        };
        if field == "Parent" {
            return Some(node.parent_id.as_ref().and_then(one).unwrap_or(Value::Null));
        }
        let t = self.types.get(&node.type_name).ok()?;
        let def = t.field(field).filter(|d| d.kind == FieldKind::Reference)?;
        let ids = field_ids(node, field);
        Some(if def.multiple {
            Value::Array(ids.iter().filter_map(one).collect())
        } else {
            ids.first().and_then(one).unwrap_or(Value::Null)
        })
    }

    /// The JSON of one item.
    pub fn item(&self, node: &Node) -> Value {
        let top: Vec<&str> = self
            .opts
            .select
            .iter()
            .map(|s| s.split('/').next().unwrap_or_default())
            .collect();
        let mut m = self.fields(node, &top);
        for field in &self.opts.expand {
            let field = field.split('/').next().unwrap_or_default();
            if let Some(v) = self.expanded(node, field) {
                m.insert(field.to_string(), v);
            }
        }
        if let Some(meta) = self.metadata(node) {
            m.insert("__metadata".into(), meta);
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_urls() {
        assert_eq!(item_url("/Root"), "/odata.svc/('Root')");
        assert_eq!(item_url("/Root/A/it's"), "/odata.svc/Root/A('it''s')");
        assert_eq!(
            item_url("/Root/a b/50% #1?"),
            "/odata.svc/Root/a%20b('50%25%20%231%3F')"
        );
        assert_eq!(item_url("/Root/Ünï"), "/odata.svc/Root('%C3%9Cn%C3%AF')");
    }
}
