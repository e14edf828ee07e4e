//! The data folder (sensenet's App_Data): where the database, the index and the backups of
//! one repository live, and the lock that keeps two writers out of it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cairn_store::DatabaseUrl;

/// The folders and files of one repository.
#[derive(Clone, Debug)]
pub struct DataDir {
    /// The data folder.
    pub root: PathBuf,
    /// The database (`sqlite://DIR/cairn.db` unless given).
    pub database: DatabaseUrl,
    /// The blob store to choose for a repository without files yet (`--blob-store`,
    /// `s3://BUCKET/PREFIX`); once chosen, the database names it for every command.
    pub blob_store: Option<String>,
}

impl DataDir {
    /// The data folder `root`, with the database at `database` or the embedded default.
    pub fn new(root: &Path, database: Option<&str>) -> Result<Self> {
        let database = match database {
            Some(url) => DatabaseUrl::parse(url)?,
            None => DatabaseUrl::Sqlite(root.join("cairn.db")),
        };
        let database = match database {
            DatabaseUrl::Sqlite(path) => DatabaseUrl::Sqlite(resolve_links(&path)?),
            other => other,
        };
        Ok(DataDir {
            root: root.to_path_buf(),
            database,
            blob_store: None,
        })
    }

    /// Opens the database with the blob store it names (choosing [`DataDir::blob_store`]
    /// first, when given).
    pub fn open_store(&self) -> Result<cairn_store::Store> {
        cairn_backup::open_store(&self.database, self.blob_store.as_deref())
            .with_context(|| format!("open the database {}", self.database.redacted()))
    }

    /// `DIR/index`.
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// `DIR/cairn.lock`.
    fn lock_path(&self) -> PathBuf {
        self.root.join("cairn.lock")
    }

    /// An error unless the repository exists: for commands that inspect or copy one
    /// (`index ...`, `backup create --data`), a mistyped `--data` must not silently make a
    /// new, empty repository to report on. (A PostgreSQL database is not checked here.)
    pub fn require_existing(&self) -> Result<()> {
        if let DatabaseUrl::Sqlite(db) = &self.database {
            if !db.is_file() {
                bail!(
                    "there is no repository at {}: {} does not exist (check --data; \
                     `cairn serve` or `cairn import` creates a repository)",
                    self.root.display(),
                    db.display()
                );
            }
        }
        Ok(())
    }

    /// [`DataDir::lock`] for a repository that must exist ([`DataDir::require_existing`]).
    pub fn lock_existing(&self, what: &str) -> Result<DataLock> {
        self.require_existing()?;
        self.lock(what)
    }

    /// Takes the data folder's lock for `what` (`serve`, `import`, ...), or says who holds it.
    /// A SQLite database kept elsewhere (`--database sqlite://PATH`) is locked too, so that a
    /// second data folder naming the same file (a `restore --database` say) cannot replace it
    /// under a running server.
    pub fn lock(&self, what: &str) -> Result<DataLock> {
        let created = !self.root.exists();
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("create the data folder {}", self.root.display()))?;
        let folder = take_lock(&self.lock_path(), what, "the data folder", &self.root)?;
        let database = match &self.database {
            DatabaseUrl::Sqlite(db) => match database_lock_path(db) {
                Some(path) if !cairn_backup::files::same_path(&path, &self.lock_path()) => {
                    match take_lock(&path, what, "the database", db) {
                        Ok(lock) => Some(lock),
                        Err(e) => {
                            // Refused: a folder made just now for this goes again.
                            drop(folder);
                            if created {
                                let _ = std::fs::remove_dir_all(&self.root);
                            }
                            return Err(e);
                        }
                    }
                }
                _ => None,
            },
            DatabaseUrl::Postgres(_) => None,
        };
        let mut lock = DataLock {
            _folder: folder,
            _database: database,
            file: None,
        };
        if let Err(e) = lock.hold_database_file(self) {
            drop(lock);
            if created {
                let _ = std::fs::remove_dir_all(&self.root);
            }
            return Err(e);
        }
        Ok(lock)
    }
}

/// The file a SQLite database path names, links resolved (the path itself while neither it
/// nor its folder exists yet). Everything keyed on a database's path (its lock, the checks
/// that a backup or an index does not overlap it, what a restore replaces) must see the
/// file, not a name for it: locked beside a link, a served database was restored over (the
/// link replaced, the live file untouched) and imported into from a second process. A
/// restore through a link therefore restores the file the link names, and keeps the link.
fn resolve_links(db: &Path) -> Result<PathBuf> {
    if let Ok(real) = std::fs::canonicalize(db) {
        return Ok(real);
    }
    if std::fs::symlink_metadata(db).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "the database {} is a link to nothing ({}): give the database's own path",
            db.display(),
            std::fs::read_link(db)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        );
    }
    // A database yet to be made: its folder's links still count.
    Ok(match (db.parent(), db.file_name()) {
        (Some(parent), Some(name)) => match std::fs::canonicalize(parent) {
            Ok(parent) => parent.join(name),
            Err(_) => db.to_path_buf(),
        },
        _ => db.to_path_buf(),
    })
}

/// The lock file of a SQLite database at `db`: a data folder's own `cairn.db` is locked by
/// that folder's `cairn.lock` (what every command of that folder takes); another file
/// `PATH` by `PATH.cairn-lock`. `None` when the database's folder does not exist yet: then
/// nothing can be using it.
fn database_lock_path(db: &Path) -> Option<PathBuf> {
    let parent = match db.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return None,
    };
    if !parent.is_dir() {
        return None;
    }
    Some(if db.file_name() == Some("cairn.db".as_ref()) {
        parent.join("cairn.lock")
    } else {
        let mut name = db.as_os_str().to_owned();
        name.push(".cairn-lock");
        PathBuf::from(name)
    })
}

/// Locks the file `path` for `what`, or says who holds it; `label` and `shown` name what it
/// guards in that message ("the data folder DIR").
fn take_lock(path: &Path, what: &str, label: &str, shown: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another cairn process"
            } else {
                holder
            };
            // Only some commands can ask a running server instead, and only a server
            // can be asked.
            let server = holder.contains("serve") || holder.contains("search-service");
            let instead = match what {
                _ if !server => "",
                "index check" => " (or ask the running server: cairn index check --server URL)",
                "backup create" => {
                    " (or let the running server take it online: cairn backup create --server URL)"
                }
                _ => "",
            };
            bail!(
                "{label} {} is in use by {holder}; stop it first{instead}",
                shown.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("lock {}", path.display()))
        }
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    write!(file, "`cairn {what}` (pid {})", std::process::id())?;
    file.flush()?;
    Ok(file)
}

/// Holds the data folder's lock, and its database's, until dropped (or the process ends,
/// even by SIGKILL).
#[derive(Debug)]
pub struct DataLock {
    _folder: File,
    _database: Option<File>,
    /// The SQLite file itself, locked (`flock`, which SQLite's own `fcntl` locks do not
    /// touch): the lock files are keyed on a path, and a hard link is another path to the
    /// same file. Two processes writing one file through two names keep two WALs and
    /// corrupt it; this lock is keyed on the file. Dropped last (after the store closes).
    file: Option<File>,
}

impl DataLock {
    /// Locks the SQLite file of `data` itself, once it exists: [`DataDir::lock`] takes it
    /// for a database that is there; a command that creates the database (`serve`,
    /// `import`) calls this again once it has opened it.
    pub fn hold_database_file(&mut self, data: &DataDir) -> Result<()> {
        let DatabaseUrl::Sqlite(db) = &data.database else {
            return Ok(());
        };
        if self.file.is_some() || !db.is_file() {
            return Ok(());
        }
        // Read-only: nothing is ever written through this handle.
        let file = File::open(db).with_context(|| format!("open {}", db.display()))?;
        match file.try_lock() {
            Ok(()) => {
                self.file = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "the database {} is in use by another cairn process under another name for \
                 the same file (a hard link to it); stop that process first",
                db.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("lock {}", db.display()))
            }
        }
    }
}
