//! Mapping between rows of `nodes` / `indexing_activities` and their Rust forms.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use time::OffsetDateTime;

use crate::activity::{Activity, ActivityKind};
use crate::content::{ContentTypes, FieldValue};
use crate::db::Row;
use crate::error::{Result, StoreError};
use crate::ids::{ActivityId, NodeId};
use crate::node::Node;

/// The columns of `nodes` in the order [`node_from_row`] reads them, the last one (the
/// typed field values) given.
macro_rules! node_columns {
    ($fields:literal) => {
        concat!(
            "id, parent_id, name, path, type, display_name, description, ",
            "idx, creation_date, modification_date, created_by, modified_by, timestamp, ",
            $fields
        )
    };
}

/// The columns of `nodes` in the order [`node_from_row`] reads them.
pub(crate) const NODE_COLUMNS: &str = node_columns!("fields");

/// [`NODE_COLUMNS`] with an empty object in place of the typed field values: for reads
/// that show only column fields ([`NodeDetail::Columns`](crate::NodeDetail)).
pub(crate) const NODE_COLUMNS_WITHOUT_FIELDS: &str = node_columns!("'{}'");

/// The columns of `indexing_activities` in the order [`activity_from_row`] reads them.
pub(crate) const ACTIVITY_COLUMNS: &str =
    "id, activity_type, node_id, path, old_path, creation_date, fingerprint";

/// Microseconds since the Unix epoch: how dates are stored.
pub(crate) fn to_micros(d: OffsetDateTime) -> i64 {
    (d.unix_timestamp_nanos() / 1_000) as i64
}

/// The inverse of [`to_micros`].
pub(crate) fn from_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Now, truncated to what the database stores.
pub(crate) fn now() -> OffsetDateTime {
    from_micros(to_micros(OffsetDateTime::now_utc()))
}

/// The node in `row` (read with [`NODE_COLUMNS`]); its strings are moved, not copied.
pub(crate) fn node_from_row(types: &ContentTypes, mut row: Row) -> Result<Node> {
    let type_name = row.take_text(4)?;
    let raw = row.take_text(13)?;
    let mut fields = BTreeMap::new();
    if raw != "{}" {
        let json: Map<String, Json> = serde_json::from_str(&raw)
            .map_err(|e| StoreError::Corrupt(format!("fields of node {:?}: {e}", row.0[0])))?;
        if let Ok(t) = types.get(&type_name) {
            for (k, v) in &json {
                if let Some(def) = t.field(k) {
                    if let Ok(Some(value)) = FieldValue::from_json(def, v) {
                        fields.insert(def.name.to_string(), value);
                    }
                }
            }
        }
    }
    Ok(Node {
        id: NodeId(row.i64(0)?),
        parent_id: row.opt_i64(1)?.map(NodeId),
        name: row.take_text(2)?,
        path: row.take_text(3)?,
        type_name,
        display_name: row.take_text(5)?,
        description: row.take_text(6)?,
        index: row.i64(7)?,
        creation_date: from_micros(row.i64(8)?),
        modification_date: from_micros(row.i64(9)?),
        created_by: row.opt_i64(10)?.map(NodeId),
        modified_by: row.opt_i64(11)?.map(NodeId),
        timestamp: row.i64(12)?,
        fields,
    })
}

/// The JSON stored in `nodes.fields`.
pub(crate) fn fields_json(
    types: &ContentTypes,
    type_name: &str,
    fields: &BTreeMap<String, FieldValue>,
) -> Result<String> {
    let t = types.get(type_name)?;
    let mut out = Map::new();
    for (k, v) in fields {
        if let Some(def) = t.field(k) {
            out.insert(k.clone(), v.to_json(def));
        }
    }
    serde_json::to_string(&out).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn activity_from_row(row: &Row) -> Result<Activity> {
    let kind_name = row.text(1)?;
    let kind = ActivityKind::parse(&kind_name)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown activity type {kind_name:?}")))?;
    Ok(Activity {
        id: ActivityId(row.i64(0)?),
        kind,
        node_id: NodeId(row.i64(2)?),
        path: row.text(3)?,
        old_path: row.opt_text(4)?,
        creation_date: from_micros(row.i64(5)?),
        fingerprint: row.i64(6)?,
    })
}
