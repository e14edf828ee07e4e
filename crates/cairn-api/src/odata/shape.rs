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

/// The ids of the items that `node`'s expanded fields refer to.
fn expanded_ids(node: &Node, expand: &[String]) -> Vec<NodeId> {
    let mut out = Vec::new();
    for name in expand {
        let field = name.split('/').next().unwrap_or_default();
        if field == "Parent" {
            out.extend(node.parent_id);
        } else if let Some(FieldValue::Reference(ids)) = node.value(field) {
            out.extend(ids);
        }
    }
    out
}

impl<'a> Shaper<'a> {
    /// A shaper for `nodes`; `load` fetches referenced items for `$expand`.
    pub fn new(
        types: &'a ContentTypes,
        opts: &'a Options,
        nodes: &[&Node],
        load: impl FnOnce(&[NodeId]) -> Vec<Node>,
    ) -> Self {
        let ids: Vec<NodeId> = if opts.expand.is_empty() {
            Vec::new()
        } else {
            nodes
                .iter()
                .flat_map(|n| expanded_ids(n, &opts.expand))
                .collect()
        };
        let refs = if ids.is_empty() {
            HashMap::new()
        } else {
            load(&ids).into_iter().map(|n| (n.id, n)).collect()
        };
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
                let v = node.value(def.name).map_or(Value::Null, |v| v.to_json(def));
                Some((n.to_string(), v))
            })
            .collect()
    }

    fn expanded(&self, node: &Node, field: &str) -> Option<Value> {
        let sub: Vec<&str> = self
            .opts
            .select
            .iter()
            .filter_map(|s| s.strip_prefix(field).and_then(|r| r.strip_prefix('/')))
            .collect();
        let one = |id: &NodeId| {
            self.refs.get(id).map(|n| {
                let mut m = self.fields(n, &sub);
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
        let ids = match node.value(field) {
            Some(FieldValue::Reference(ids)) => ids,
            _ => Vec::new(),
        };
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
