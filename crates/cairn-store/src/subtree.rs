//! A subtree in SQL: an item and everything below it, selected by `path_key` ranges that
//! the unique index on `path_key` serves; locking it, and rewriting its paths.

use crate::content::{path_key, MAX_PATH_CHARS};
use crate::db::{Conn, Dialect, Param};
use crate::error::{Result, StoreError};
use crate::ids::ActivityId;

/// The rows of the subtree at a path (the item and everything below it), for SQL:
/// [`Subtree::clause`]`(n)` selects them with [`Subtree::params`] at `$n`, `$n+1`, `$n+2`
/// (the path key, key + "/", key + "0": "0" is the character after "/").
pub(crate) struct Subtree {
    bounds: [String; 3],
}

impl Subtree {
    /// The subtree at `path`.
    pub(crate) fn at(path: &str) -> Subtree {
        let key = path_key(path);
        Subtree {
            bounds: [key.clone(), format!("{key}/"), format!("{key}0")],
        }
    }

    /// The `WHERE` clause selecting the subtree whose parameters are at `$n..=$n+2`.
    pub(crate) fn clause(n: usize) -> String {
        format!(
            "(path_key = ${n} OR (path_key >= ${} AND path_key < ${}))",
            n + 1,
            n + 2
        )
    }

    /// `template` with `{subtree}` replaced by [`Subtree::clause`]`(1)`: the subtree's
    /// parameters are `$1..=$3`, any others `$4` on ([`Subtree::params_with`]).
    pub(crate) fn sql(template: &str) -> String {
        template.replace("{subtree}", &Self::clause(1))
    }

    /// The clause's three parameters.
    pub(crate) fn params(&self) -> [Param<'_>; 3] {
        [
            self.bounds[0].as_str().into(),
            self.bounds[1].as_str().into(),
            self.bounds[2].as_str().into(),
        ]
    }

    /// The clause's three parameters, then `more` (at `$4`, ...).
    pub(crate) fn params_with<'a>(&'a self, more: &[Param<'a>]) -> Vec<Param<'a>> {
        let mut all = self.params().to_vec();
        all.extend_from_slice(more);
        all
    }
}

pub(crate) fn is_in_subtree(path: &str, root: &str) -> bool {
    let (p, r) = (path_key(path), path_key(root));
    p == r || p.starts_with(&format!("{r}/"))
}

/// Locks every row of a subtree (PostgreSQL), so that a concurrent create below it waits.
pub(crate) fn lock_subtree(conn: &mut dyn Conn, path: &str) -> Result<()> {
    if conn.dialect() == Dialect::Postgres {
        let b = Subtree::at(path);
        conn.query(
            &Subtree::sql("SELECT id FROM nodes WHERE {subtree} FOR UPDATE"),
            &b.params(),
        )?;
    }
    Ok(())
}

/// Rewrites the paths of the subtree at `old` to start with `new`, stamping each row.
/// Returns the type of every row it rewrote (what [`Store::refuse_user_admin`] checks: the
/// rows the statement changed, not a read made before it).
pub(crate) fn repath_subtree(
    conn: &mut dyn Conn,
    old: &str,
    new: &str,
    stamp: ActivityId,
) -> Result<Vec<crate::db::Row>> {
    let longest = {
        let b = Subtree::at(old);
        conn.query_i64(
            &Subtree::sql("SELECT COALESCE(MAX(LENGTH(path)), 0) FROM nodes WHERE {subtree}"),
            &b.params(),
        )?
    };
    let (old_len, new_len) = (old.chars().count() as i64, new.chars().count() as i64);
    if longest - old_len + new_len > MAX_PATH_CHARS as i64 {
        return Err(StoreError::InvalidPath {
            path: new.to_string(),
            reason: "a path in the subtree would be longer than 450 characters",
        });
    }
    let (old_key, new_key) = (path_key(old), path_key(new));
    let b = Subtree::at(old);
    conn.query(
        &Subtree::sql("UPDATE nodes SET path = $4 || SUBSTR(path, $5), path_key = $6 || SUBSTR(path_key, $7), \
             timestamp = $8 WHERE {subtree} RETURNING type"),
        &b.params_with(&[
            Param::Text(new),
            Param::I64(old_len + 1),
            Param::Text(&new_key),
            Param::I64(old_key.chars().count() as i64 + 1),
            Param::I64(stamp.0),
        ]),
    )
    .map_err(|e| e.existing_at(new))
}
