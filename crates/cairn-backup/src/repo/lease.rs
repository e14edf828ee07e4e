//! The writer's lease of a repository: one backup, delete or prune writes into a repository
//! at a time, so that a prune never removes a pack a backup running beside it is about to
//! reference, and two backups never race for one name.
//!
//! The lease is the object `.lease`, created with a conditional write (S3's
//! `If-None-Match: *`, a hard link in a folder): of two writers exactly one gets it, and
//! the other is refused with a message naming the holder. The holder refreshes its
//! heartbeat every 20 s; a lease whose heartbeat is older than [`STALE`] (a holder killed
//! with SIGKILL on another machine) is taken over, and so at once is one whose holder was
//! a process of this machine that is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::objects::Objects;
use crate::error::{BackupError, Result};

/// The lease's key.
pub const LEASE_KEY: &str = ".lease";
/// A lease not refreshed for this long belongs to a writer that is gone.
pub const STALE: Duration = Duration::from_secs(120);
/// How often the holder refreshes it.
const HEARTBEAT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct LeaseBody {
    /// What holds it (`backup b1`, `prune`).
    what: String,
    host: String,
    pid: u32,
    /// A random token: whose lease it is.
    token: String,
    /// Where `pid` means something: this boot of this machine's process namespace.
    #[serde(default)]
    machine: String,
    /// Seconds since 1970 when it was taken, and when last refreshed.
    since: u64,
    heartbeat: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this machine".into())
}

/// This boot of this machine, and this process namespace: where a pid names a process.
/// (A hostname alone is not enough: containers share names, and a pid means something only
/// in its own namespace.)
fn machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        return String::new();
    }
    format!("{}/{}/{ns}", host(), boot.trim())
}

/// Whether the holder `c` is a process of this machine that has ended (a kill -9): then
/// its lease need not wait to go stale.
fn holder_is_gone(c: &LeaseBody) -> bool {
    if c.machine.is_empty() || c.machine != machine() || c.pid == std::process::id() {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(c.pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// A held lease; released when dropped.
pub struct Lease {
    objects: Arc<dyn Objects>,
    body: LeaseBody,
    stop: Arc<AtomicBool>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Takes the lease of `objects` for `what`, or says who holds it.
    pub fn take(objects: Arc<dyn Objects>, what: &str) -> Result<Lease> {
        let token = cairn_store::Uuid::new_v4().simple().to_string();
        let body = LeaseBody {
            what: what.to_string(),
            host: host(),
            pid: std::process::id(),
            token,
            machine: machine(),
            since: now_secs(),
            heartbeat: now_secs(),
        };
        let text = serde_json::to_vec(&body).map_err(|e| BackupError::Invalid(e.to_string()))?;
        for attempt in 0..2 {
            if objects.put_new(LEASE_KEY, &text)? {
                return Ok(Self::held(objects, body));
            }
            let current: Option<LeaseBody> = match objects.get(LEASE_KEY) {
                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                Err(BackupError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            match current {
                Some(c)
                    if now_secs().saturating_sub(c.heartbeat) < STALE.as_secs()
                        && !holder_is_gone(&c) =>
                {
                    return Err(BackupError::Refused(format!(
                        "the repository {} is in use by {} (pid {} on {}, for {} s); try again \
                         when it has finished",
                        objects.location(),
                        c.what,
                        c.pid,
                        c.host,
                        now_secs().saturating_sub(c.since)
                    )));
                }
                // Stale (its holder is gone), unreadable, or just released: take it over.
                stale => {
                    if attempt == 0 {
                        if let Some(c) = stale {
                            tracing::warn!(
                                "taking over the lease of {} left by {} (pid {} on {}), not \
                                 refreshed for {} s",
                                objects.location(),
                                c.what,
                                c.pid,
                                c.host,
                                now_secs().saturating_sub(c.heartbeat)
                            );
                        }
                        objects.delete(LEASE_KEY)?;
                    }
                }
            }
        }
        Err(BackupError::Refused(format!(
            "the repository {} is in use by another writer; try again",
            objects.location()
        )))
    }

    fn held(objects: Arc<dyn Objects>, body: LeaseBody) -> Lease {
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (objects, stop, mut body) = (objects.clone(), stop.clone(), body.clone());
            std::thread::Builder::new()
                .name("cairn-lease".into())
                .spawn(move || {
                    let mut waited = Duration::ZERO;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        waited += Duration::from_millis(200);
                        if waited < HEARTBEAT {
                            continue;
                        }
                        waited = Duration::ZERO;
                        // Refresh only a lease that is still ours.
                        let ours = objects
                            .get(LEASE_KEY)
                            .ok()
                            .and_then(|b| serde_json::from_slice::<LeaseBody>(&b).ok())
                            .is_some_and(|c| c.token == body.token);
                        if !ours {
                            tracing::warn!("the lease of {} was taken over", objects.location());
                            return;
                        }
                        body.heartbeat = now_secs();
                        if let Ok(text) = serde_json::to_vec(&body) {
                            if let Err(e) = objects.put(LEASE_KEY, &text) {
                                tracing::warn!("cannot refresh the lease: {e}");
                            }
                        }
                    }
                })
                .ok()
        };
        Lease {
            objects,
            body,
            stop,
            heartbeat,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let ours = self
            .objects
            .get(LEASE_KEY)
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseBody>(&b).ok())
            .is_some_and(|c| c.token == self.body.token);
        if ours {
            if let Err(e) = self.objects.delete(LEASE_KEY) {
                tracing::warn!(
                    "cannot release the lease of {}: {e}",
                    self.objects.location()
                );
            }
        }
    }
}
