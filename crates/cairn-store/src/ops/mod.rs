//! Content operations. Each one commits the content change and exactly one indexing
//! activity in one transaction, and stamps every row it changes with that activity's id.
//! Creates, updates, renames and imports are here; moves, copies and deletes of whole
//! subtrees in [`moves`].

mod files;
mod moves;

pub use files::SaveBinary;

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use crate::activity::ActivityKind;
use crate::activity_log::insert_activity;
use crate::content::{path_key, validate_name, validate_path, Storage};
use crate::db::Conn;
use crate::error::{Result, StoreError};
use crate::ids::{ActivityId, NodeId};
use crate::items::{
    apply_fields, check_references, find, insert_node, must_find, new_node, refuse_system_item,
    save_node, Lock,
};
use crate::node::{NewContent, Node, NodeRef};
use crate::rows::now;
use crate::store::{Store, Written};
use crate::subtree::{lock_subtree, repath_subtree};
use crate::users::{
    check_login, is_user_admin_type, subtree_holds_user_admin, types_of, USER_ADMIN_TYPES,
};

/// How an update treats the fields it is not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Keep them (PATCH).
    Patch,
    /// Reset them to their defaults (PUT).
    Replace,
}

/// One item of a bulk import.
#[derive(Clone, Debug)]
pub struct ImportItem {
    /// Where to create it; its parent must exist or come earlier in the import.
    pub path: String,
    /// The content type.
    pub type_name: String,
    /// Writable fields.
    pub fields: Map<String, Json>,
    /// Binary fields (a file's bytes, already a blob): field name and value.
    pub binaries: Vec<(String, crate::content::BinaryValue)>,
}

/// What a bulk import batch did.
#[derive(Debug)]
pub struct ImportOutcome {
    /// Items created and committed (all of them, or those before `error`).
    pub created: usize,
    /// The last activity id committed, if any.
    pub last_activity: Option<ActivityId>,
    /// The first failing item: its position in the batch and why.
    pub error: Option<(usize, StoreError)>,
}

impl Store {
    /// Runs `f` in a write transaction, then tells the listeners about the activity it wrote.
    fn write<T>(
        &self,
        mut f: impl FnMut(&mut dyn Conn) -> Result<(T, ActivityId)>,
    ) -> Result<Written<T>> {
        let injected = (|| -> Result<()> {
            fail::fail_point!("store::write", |m| Err(StoreError::Io {
                path: self.url().redacted().into(),
                cause: crate::fault::injected("store::write", m),
            }));
            Ok(())
        })();
        injected.map_err(|e| self.named_disk_full(e))?;
        let mut out = None;
        self.backend
            .write(&mut |conn| {
                out = Some(f(conn)?);
                Ok(())
            })
            .map_err(|e| self.named_disk_full(e))?;
        let (value, activity) =
            out.ok_or_else(|| StoreError::Corrupt("write did not run".into()))?;
        self.notify(activity);
        Ok(Written { value, activity })
    }

    /// A full disk, said as such and naming the database whose disk it is; any other
    /// error as it is.
    pub(crate) fn named_disk_full(&self, e: StoreError) -> StoreError {
        if e.is_disk_full() && !matches!(e, StoreError::DiskFull { .. }) {
            StoreError::DiskFull {
                database: self.url().redacted(),
                detail: e.to_string(),
            }
        } else {
            e
        }
    }

    /// Refuses `what` to anyone but the administrator when `types` holds a user or a group.
    /// Called inside the transaction, on the rows the operation itself locked or changed:
    /// a check made before it (in the API, once) let a user delete a folder the moment an
    /// administrator created a user in it.
    fn refuse_user_admin<S: AsRef<str>>(
        &self,
        by: NodeId,
        types: impl IntoIterator<Item = S>,
        what: &str,
    ) -> Result<()> {
        if by != self.admin_id() && types.into_iter().any(|t| is_user_admin_type(t.as_ref())) {
            return Err(StoreError::Forbidden(format!(
                "{what} is for administrators only: it takes users or groups along"
            )));
        }
        Ok(())
    }

    /// [`Store::refuse_user_admin`] for the subtree at `path` as it stands in this
    /// transaction: a refusal before other refusals (a user learns that users are not
    /// theirs before learning that /Root/IMS cannot be deleted anyway). The operation
    /// still checks the rows it changes, which this read cannot stand for alone.
    fn refuse_user_admin_below(
        &self,
        conn: &mut dyn Conn,
        by: NodeId,
        path: &str,
        what: &str,
    ) -> Result<()> {
        if by != self.admin_id() && subtree_holds_user_admin(conn, path)? {
            return self.refuse_user_admin(by, USER_ADMIN_TYPES, what);
        }
        Ok(())
    }

    /// Creates an item under `parent`.
    pub fn create(
        &self,
        parent: &NodeRef,
        content: &NewContent,
        by: NodeId,
    ) -> Result<Written<Node>> {
        self.write(|conn| {
            self.refuse_user_admin(by, [&content.type_name], "creating users and groups")?;
            let parent = must_find(conn, &self.types, parent, Lock::Share)?;
            let mut node = new_node(&self.types, &parent, content, Some(by))?;
            check_login(&node)?;
            check_references(conn, &node, None)?;
            let activity = insert_node(conn, &self.types, &mut node)?;
            Ok((node, activity))
        })
    }

    /// Changes the given fields of an item (`Patch`), or all of its writable fields
    /// (`Replace`). A new `Name` renames it, and its subtree moves with it.
    pub fn update(
        &self,
        at: &NodeRef,
        fields: &Map<String, Json>,
        mode: UpdateMode,
        by: NodeId,
    ) -> Result<Written<Node>> {
        self.write(|conn| {
            let old = must_find(conn, &self.types, at, Lock::Update)?;
            self.refuse_user_admin(by, [&old.type_name], "changing users and groups")?;
            let t = self.types.get(&old.type_name)?;
            let mut node = old.clone();
            if mode == UpdateMode::Replace {
                node.display_name.clear();
                node.description.clear();
                node.index = 0;
                // A replace resets what a client can see and did not send; a hidden field
                // (a password hash) is kept unless given, and a binary (only an upload
                // writes it). Decided here, on the locked row:
                // a copy taken before the transaction would undo a concurrent change.
                node.fields.retain(|k, _| {
                    t.field(k)
                        .is_some_and(|f| matches!(f.storage, Storage::Hidden | Storage::Binary))
                });
            }
            apply_fields(t, &mut node, Some(&old), fields)?;
            // A login is checked when it is written: one from an older version stays usable.
            if fields.contains_key("LoginName") {
                check_login(&node)?;
            }
            check_references(conn, &node, Some(&old))?;
            if node.display_name.is_empty() && mode == UpdateMode::Replace {
                node.display_name = node.name.clone();
            }
            node.modification_date = now();
            node.modified_by = Some(by);
            let renamed = node.name != old.name;
            let activity = if renamed {
                self.refuse_user_admin_below(conn, by, &old.path, "renaming users and groups")?;
                refuse_system_item(&old, "renamed")?;
                validate_name(&node.name)?;
                let parent = crate::content::parent_path(&old.path).unwrap_or("/Root");
                node.path = format!("{parent}/{}", node.name);
                validate_path(&node.path)?;
                lock_subtree(conn, &old.path)?;
                let a = insert_activity(
                    conn,
                    ActivityKind::Move,
                    node.id,
                    &node.path,
                    Some(&old.path),
                )?;
                let moved = repath_subtree(conn, &old.path, &node.path, a)?;
                self.refuse_user_admin(by, types_of(&moved), "renaming users and groups")?;
                a
            } else {
                insert_activity(conn, ActivityKind::Update, node.id, &node.path, None)?
            };
            node.timestamp = activity.0;
            save_node(conn, &self.types, &node)?;
            Ok((node, activity))
        })
    }

    /// Renames an item; its subtree follows.
    pub fn rename(&self, at: &NodeRef, new_name: &str, by: NodeId) -> Result<Written<Node>> {
        let mut fields = Map::new();
        fields.insert("Name".into(), Json::String(new_name.to_string()));
        self.update(at, &fields, UpdateMode::Patch, by)
    }

    /// Creates `items` in one transaction, in order. On the first bad item, the items before
    /// it are committed and the rest is not; the outcome names the bad item.
    pub fn import(&self, items: &[ImportItem], by: NodeId) -> Result<ImportOutcome> {
        let mut failed: Option<(usize, StoreError)> = None;
        let mut upto = items.len();
        loop {
            let mut last = None;
            let attempt = self.backend.write(&mut |conn| {
                last = None;
                let mut parents: HashMap<String, Node> = HashMap::new();
                for (i, item) in items[..upto].iter().enumerate() {
                    let created = (|| {
                        validate_path(&item.path)?;
                        let (parent_path, name) = match item.path.rfind('/') {
                            Some(cut) if cut > 0 => (&item.path[..cut], &item.path[cut + 1..]),
                            _ => return Err(StoreError::NotAllowed("/Root exists already".into())),
                        };
                        let key = path_key(parent_path);
                        if !parents.contains_key(&key) {
                            let p =
                                find(conn, &self.types, &NodeRef::from(parent_path), Lock::Share)?
                                    .ok_or_else(|| StoreError::NotFound(parent_path.to_string()))?;
                            parents.insert(key.clone(), p);
                        }
                        let parent = &parents[&key];
                        let content = NewContent {
                            type_name: item.type_name.clone(),
                            name: name.to_string(),
                            fields: item.fields.clone(),
                        };
                        let mut node = new_node(&self.types, parent, &content, Some(by))?;
                        if !item.binaries.is_empty() {
                            let t = self.types.get(&node.type_name)?;
                            for (field, value) in &item.binaries {
                                files::set_binary_field(t, &mut node, field, value)?;
                            }
                        }
                        check_login(&node)?;
                        check_references(conn, &node, None)?;
                        let a = insert_node(conn, &self.types, &mut node)?;
                        Ok((node, a))
                    })();
                    match created {
                        Ok((node, a)) => {
                            last = Some(a);
                            if parents.len() > 4096 {
                                parents.clear();
                            }
                            parents.insert(path_key(&node.path), node);
                        }
                        Err(e) if e.is_input_error() => {
                            // Stop here; the caller commits what came before.
                            failed = Some((i, e));
                            return Err(StoreError::NotAllowed("rolled back".into()));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            });
            match attempt {
                Ok(()) => {
                    if let Some(a) = last {
                        self.notify(a);
                    }
                    return Ok(ImportOutcome {
                        created: upto,
                        last_activity: last,
                        error: failed,
                    });
                }
                Err(e) => match &failed {
                    _ if e.is_disk_full() => return Err(self.named_disk_full(e)),
                    // Redo the good prefix alone: a failed statement may have aborted the
                    // transaction (PostgreSQL), so it cannot simply be committed.
                    Some((i, _)) if *i < upto => upto = *i,
                    _ => return Err(e),
                },
            }
        }
    }
}
