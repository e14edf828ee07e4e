//! Operations on whole subtrees: move, copy, delete. Each locks the subtree (PostgreSQL)
//! before it changes it, checks its tree shape inside the transaction, and decides who may
//! do it on the rows it changes.

use std::collections::HashMap;

use crate::activity::ActivityKind;
use crate::activity_log::insert_activity;
use crate::content::{validate_name, validate_path};
use crate::db::Param;
use crate::error::{Result, StoreError};
use crate::ids::NodeId;
use crate::items::{insert_row, must_find, refuse_system_item, save_node, Lock};
use crate::node::{Node, NodeRef};
use crate::rows::{node_from_row, now, NODE_COLUMNS};
use crate::store::{Store, Written};
use crate::subtree::{is_in_subtree, lock_subtree, repath_subtree, Subtree};
use crate::users::types_of;

impl Store {
    /// Moves an item and its subtree under `target`.
    pub fn move_to(&self, at: &NodeRef, target: &NodeRef, by: NodeId) -> Result<Written<Node>> {
        self.write(|conn| {
            let mut node = must_find(conn, &self.types, at, Lock::Update)?;
            self.refuse_user_admin_below(conn, by, &node.path, "moving users and groups")?;
            refuse_system_item(&node, "moved")?;
            let target = must_find(conn, &self.types, target, Lock::Share)?;
            if is_in_subtree(&target.path, &node.path) {
                return Err(StoreError::NotAllowed(format!(
                    "{} cannot be moved into its own subtree",
                    node.path
                )));
            }
            let old_path = node.path.clone();
            let new_path = format!("{}/{}", target.path, node.name);
            validate_path(&new_path)?;
            lock_subtree(conn, &old_path)?;
            let a = insert_activity(
                conn,
                ActivityKind::Move,
                node.id,
                &new_path,
                Some(&old_path),
            )?;
            let moved = repath_subtree(conn, &old_path, &new_path, a)?;
            self.refuse_user_admin(by, types_of(&moved), "moving users and groups")?;
            node.path = new_path;
            node.parent_id = Some(target.id);
            node.modification_date = now();
            node.modified_by = Some(by);
            node.timestamp = a.0;
            save_node(conn, &self.types, &node)?;
            Ok((node, a))
        })
    }

    /// Copies an item and its subtree under `target`, as `new_name` (default: the same name).
    pub fn copy_to(
        &self,
        at: &NodeRef,
        target: &NodeRef,
        new_name: Option<&str>,
        by: NodeId,
    ) -> Result<Written<Node>> {
        self.write(|conn| {
            let source = must_find(conn, &self.types, at, Lock::Share)?;
            self.refuse_user_admin_below(conn, by, &source.path, "copying users and groups")?;
            let target = must_find(conn, &self.types, target, Lock::Share)?;
            if is_in_subtree(&target.path, &source.path) {
                return Err(StoreError::NotAllowed(format!(
                    "{} cannot be copied into its own subtree",
                    source.path
                )));
            }
            let name = new_name.unwrap_or(&source.name).to_string();
            validate_name(&name)?;
            let new_root = format!("{}/{}", target.path, name);
            validate_path(&new_root)?;
            let b = Subtree::at(&source.path);
            let rows = conn.query(
                &Subtree::sql(&format!(
                    "SELECT {NODE_COLUMNS} FROM nodes WHERE {{subtree}} ORDER BY path_key"
                )),
                &b.params(),
            )?;
            let stamp = now();
            let old_len = source.path.len();
            let mut new_ids: HashMap<NodeId, NodeId> = HashMap::new();
            let mut root_copy = None;
            let mut copies = Vec::with_capacity(rows.len());
            for row in rows {
                let mut n = node_from_row(&self.types, row)?;
                self.refuse_user_admin(by, [&n.type_name], "copying users and groups")?;
                let old_id = n.id;
                if old_id == source.id {
                    n.name = name.clone();
                    n.path = new_root.clone();
                    n.parent_id = Some(target.id);
                } else {
                    n.path = format!("{new_root}{}", &n.path[old_len..]);
                    n.parent_id = n.parent_id.and_then(|p| new_ids.get(&p).copied());
                }
                validate_path(&n.path)?;
                n.creation_date = stamp;
                n.modification_date = stamp;
                n.created_by = Some(by);
                n.modified_by = Some(by);
                insert_row(conn, &self.types, &mut n)?;
                new_ids.insert(old_id, n.id);
                if old_id == source.id {
                    root_copy = Some(n.clone());
                }
                copies.push(n);
            }
            let mut root_copy =
                root_copy.ok_or_else(|| StoreError::NotFound(source.path.clone()))?;
            let a = insert_activity(conn, ActivityKind::AddTree, root_copy.id, &new_root, None)?;
            let nb = Subtree::at(&new_root);
            conn.execute(
                &Subtree::sql("UPDATE nodes SET timestamp = $4 WHERE {subtree}"),
                &nb.params_with(&[Param::I64(a.0)]),
            )?;
            root_copy.timestamp = a.0;
            Ok((root_copy, a))
        })
    }

    /// Deletes an item and its subtree; returns how many items were deleted.
    pub fn delete(&self, at: &NodeRef, by: NodeId) -> Result<Written<u64>> {
        self.write(|conn| {
            let node = must_find(conn, &self.types, at, Lock::Update)?;
            self.refuse_user_admin_below(conn, by, &node.path, "deleting users and groups")?;
            refuse_system_item(&node, "deleted")?;
            lock_subtree(conn, &node.path)?;
            let a = insert_activity(conn, ActivityKind::Remove, node.id, &node.path, None)?;
            let b = Subtree::at(&node.path);
            let deleted = conn.query(
                &Subtree::sql("DELETE FROM nodes WHERE {subtree} RETURNING type"),
                &b.params(),
            )?;
            self.refuse_user_admin(by, types_of(&deleted), "deleting users and groups")?;
            Ok((deleted.len() as u64, a))
        })
    }
}
