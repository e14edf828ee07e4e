//! The backup policies of `DIR/cairn.toml`:
//!
//! ```toml
//! [[backup.policy]]
//! name = "nightly"
//! schedule = "0 2 * * *"          # 5-field cron in UTC, or "every 15m"
//! repository = "s3://bucket/cairn"
//! kind = "repository"             # or "index"
//! keep_last = 7                   # retention: keep_last, keep_within = "30d", min_count = 1
//! encrypt_to = "age1..."          # optional
//!
//! [backup.archive]                  # continuous archiving (SQLite), see crate::archive
//! repository = "s3://bucket/cairn"
//! base_every = "24h"                # a base backup (index and database) this often
//! index_every = "15m"               # an index backup this often
//! spool_limit = "1GiB"               # SQLite: changes kept locally while the repository
//!                                    # does not take them
//! ```
//!
//! The archive's base and index backups are the policies `archive-base` and
//! `archive-index` (kind repository and index, no retention) of that repository.
//!
//! Everything is checked when the file is read (at start): an unknown key, a bad pattern,
//! an unknown repository scheme or a negative count is refused with its line and why.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::schedule::Schedule;
use crate::error::{BackupError, Result};
use crate::manifest::BackupKind;
use crate::repo::crypt::Recipient;
use crate::repo::{RepoUrl, Retention};

/// The name of the settings file in a data folder.
pub const CONFIG_FILE: &str = "cairn.toml";

/// One backup policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Its name (a prefix of the names of the backups it makes).
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// The schedule as written.
    pub schedule_text: String,
    /// Where its backups go.
    pub repository: RepoUrl,
    /// Index alone, or index and database.
    pub kind: BackupKind,
    /// Which of its backups are kept (the others are deleted after each run).
    pub retention: Retention,
    /// Encrypted to this recipient, when given.
    pub encrypt_to: Option<Recipient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    backup: Option<Section>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default)]
    policy: Vec<Spanned<RawPolicy>>,
    #[serde(default)]
    archive: Option<Spanned<RawArchive>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    repository: Spanned<String>,
    #[serde(default)]
    base_every: Option<Spanned<String>>,
    #[serde(default)]
    index_every: Option<Spanned<String>>,
    #[serde(default)]
    spool_limit: Option<Spanned<String>>,
}

/// `[backup.archive]`: where and how often continuous archiving writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// The repository of its base and index backups and of the changes.
    pub repository: RepoUrl,
    /// A base backup (index and database) this often (default 24 h).
    pub base_every: Duration,
    /// An index backup this often (default 15 min).
    pub index_every: Duration,
    /// SQLite: the most bytes of changes the local spool keeps while the repository does
    /// not take them (default 1 GiB).
    pub spool_limit: u64,
}

/// The name of the archive's base backup policy.
pub const ARCHIVE_BASE: &str = "archive-base";
/// The name of the archive's index backup policy.
pub const ARCHIVE_INDEX: &str = "archive-index";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    schedule: Spanned<String>,
    repository: Spanned<String>,
    #[serde(default)]
    kind: Option<Spanned<String>>,
    #[serde(default)]
    keep_last: Option<Spanned<i64>>,
    #[serde(default)]
    keep_within: Option<Spanned<String>>,
    #[serde(default)]
    min_count: Option<Spanned<i64>>,
    #[serde(default)]
    encrypt_to: Option<Spanned<String>>,
}

/// Reads the policies of `dir`'s `cairn.toml`; none when there is no such file.
pub fn read_policies(dir: &Path) -> Result<Vec<Policy>> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::error::io(format!("read {}", path.display()))(e)),
    };
    parse_policies(&text).map_err(|e| match e {
        BackupError::Refused(why) => BackupError::Refused(format!("{}: {why}", path.display())),
        other => other,
    })
}

/// The line (from 1) of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The archive settings of `dir`'s `cairn.toml`; none without a `[backup.archive]`.
pub fn read_archive(dir: &Path) -> Result<Option<ArchiveSettings>> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::error::io(format!("read {}", path.display()))(e)),
    };
    parse_file(&text).map(|(_, a)| a).map_err(|e| match e {
        BackupError::Refused(why) => BackupError::Refused(format!("{}: {why}", path.display())),
        other => other,
    })
}

/// Parses the text of a `cairn.toml` (see the module documentation): its policies, the
/// archive's two among them.
pub fn parse_policies(text: &str) -> Result<Vec<Policy>> {
    parse_file(text).map(|(p, _)| p)
}

fn parse_file(text: &str) -> Result<(Vec<Policy>, Option<ArchiveSettings>)> {
    let refused =
        |at: usize, why: String| BackupError::Refused(format!("line {}: {why}", line_of(text, at)));
    let file: File = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start).unwrap_or(0);
        refused(at, e.message().trim().to_string())
    })?;
    let mut out: Vec<Policy> = Vec::new();
    let (raw_policies, raw_archive) = file
        .backup
        .map(|b| (b.policy, b.archive))
        .unwrap_or_default();
    for raw in raw_policies {
        let raw = raw.into_inner();
        let name = raw.name.get_ref().trim().to_string();
        let bad = |s: &Spanned<String>| s.span().start;
        if name.is_empty()
            || name.len() > 60
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(refused(
                bad(&raw.name),
                format!("policy name {name:?}: use 1 to 60 letters, digits, '-' or '_'"),
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(refused(
                bad(&raw.name),
                format!("a second policy named {name:?}"),
            ));
        }
        let schedule = Schedule::parse(raw.schedule.get_ref()).map_err(|why| {
            refused(
                bad(&raw.schedule),
                format!("schedule {:?}: {why}", raw.schedule.get_ref()),
            )
        })?;
        let repository = RepoUrl::parse(raw.repository.get_ref().trim()).map_err(|e| {
            refused(
                bad(&raw.repository),
                format!("repository: {}", plain_reason(e)),
            )
        })?;
        let kind = match raw
            .kind
            .as_ref()
            .map(|k| (k.get_ref().trim().to_ascii_lowercase(), k.span().start))
        {
            None => BackupKind::Repository,
            Some((k, _)) if k == "repository" => BackupKind::Repository,
            Some((k, _)) if k == "index" => BackupKind::Index,
            Some((k, at)) => {
                return Err(refused(
                    at,
                    format!("kind {k:?}: \"repository\" or \"index\""),
                ))
            }
        };
        let count = |v: &Option<Spanned<i64>>, key: &str| -> Result<Option<usize>> {
            match v {
                None => Ok(None),
                Some(n) if *n.get_ref() < 1 => Err(refused(
                    n.span().start,
                    format!("{key} = {}: at least 1", n.get_ref()),
                )),
                Some(n) => Ok(Some(*n.get_ref() as usize)),
            }
        };
        let keep_within = match &raw.keep_within {
            None => None,
            Some(w) => Some(parse_age(w.get_ref()).map_err(|why| refused(w.span().start, why))?),
        };
        let retention = Retention {
            keep_last: count(&raw.keep_last, "keep_last")?,
            keep_within,
            min_count: count(&raw.min_count, "min_count")?,
        };
        let encrypt_to = match &raw.encrypt_to {
            None => None,
            Some(r) => Some(Recipient::parse(r.get_ref().trim()).map_err(|e| {
                refused(r.span().start, format!("encrypt_to: {}", plain_reason(e)))
            })?),
        };
        out.push(Policy {
            name,
            schedule,
            schedule_text: raw.schedule.get_ref().trim().to_string(),
            repository,
            kind,
            retention,
            encrypt_to,
        });
    }
    let archive = match raw_archive {
        None => None,
        Some(raw) => {
            let at = raw.span().start;
            let raw = raw.into_inner();
            let repository = RepoUrl::parse(raw.repository.get_ref().trim()).map_err(|e| {
                refused(
                    raw.repository.span().start,
                    format!("archive repository: {}", plain_reason(e)),
                )
            })?;
            let every = |v: &Option<Spanned<String>>, default: Duration| match v {
                None => Ok(default),
                Some(v) => parse_age(v.get_ref()).map_err(|why| refused(v.span().start, why)),
            };
            let settings = ArchiveSettings {
                repository,
                base_every: every(&raw.base_every, Duration::from_secs(24 * 3600))?,
                index_every: every(&raw.index_every, Duration::from_secs(15 * 60))?,
                spool_limit: match &raw.spool_limit {
                    None => crate::archive::shipper::SPOOL_LIMIT,
                    Some(v) => parse_size(v.get_ref())
                        .map_err(|why| refused(v.span().start, format!("spool_limit: {why}")))?,
                },
            };
            for (name, kind, period) in [
                (ARCHIVE_BASE, BackupKind::Repository, settings.base_every),
                (ARCHIVE_INDEX, BackupKind::Index, settings.index_every),
            ] {
                if out.iter().any(|p| p.name == name) {
                    return Err(refused(
                        at,
                        format!("the policy name {name:?} is the archive's own"),
                    ));
                }
                let text = format!("every {}", humantime::format_duration(period));
                out.push(Policy {
                    name: name.to_string(),
                    schedule: Schedule::parse(&text).map_err(|why| refused(at, why))?,
                    schedule_text: text,
                    repository: settings.repository.clone(),
                    kind,
                    retention: Retention::default(),
                    encrypt_to: None,
                });
            }
            Some(settings)
        }
    };
    Ok((out, archive))
}

/// A retention age (`30d`, `12h`); at least a second.
pub fn parse_age(text: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 7d or 12h ({e})"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?}: at least 1s"));
    }
    Ok(d)
}

/// A refusal's own words.
fn plain_reason(e: BackupError) -> String {
    match e {
        BackupError::Refused(why) => why,
        other => other.to_string(),
    }
}

/// A size: bytes, or a number with `KiB`, `MiB` or `GiB` (`64KiB`, `1 GiB`). Written here:
/// three units do not need a crate.
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: give bytes, or a number of KiB, MiB or GiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: give bytes, or a number of KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(factor)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{text:?}: more than 0 and less than 16 EiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[backup.policy]]
name = "nightly"
schedule = "0 2 * * *"
repository = "s3://bucket/cairn"
kind = "repository"
keep_last = 7
keep_within = "30d"
min_count = 1

[[backup.policy]]
name = "often"
schedule = "every 15m"
repository = "/srv/backups"
kind = "index"
"#;

    #[test]
    fn a_good_file_gives_its_policies() {
        let p = parse_policies(GOOD).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "nightly");
        assert_eq!(p[0].retention.keep_last, Some(7));
        assert_eq!(
            p[0].retention.keep_within,
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(p[0].retention.min_count, Some(1));
        assert_eq!(p[1].kind, BackupKind::Index);
        assert!(matches!(p[1].schedule, Schedule::Every(d) if d == Duration::from_secs(900)));
        assert!(parse_policies("").unwrap().is_empty());
    }

    #[test]
    fn the_archive_is_two_policies_of_its_repository() {
        let text = "[backup.archive]\nrepository = \"s3://b/arch\"\nindex_every = \"5m\"\n";
        let (p, a) = parse_file(text).unwrap();
        let a = a.unwrap();
        assert_eq!(a.base_every, Duration::from_secs(24 * 3600));
        assert_eq!(a.index_every, Duration::from_secs(300));
        assert_eq!(a.spool_limit, crate::archive::shipper::SPOOL_LIMIT);
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size(" 2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert!(parse_size("lots").is_err());
        let names: Vec<_> = p.iter().map(|p| (p.name.as_str(), p.kind)).collect();
        assert_eq!(
            names,
            [
                (ARCHIVE_BASE, BackupKind::Repository),
                (ARCHIVE_INDEX, BackupKind::Index)
            ]
        );
        assert!(matches!(p[1].schedule, Schedule::Every(d) if d == Duration::from_secs(300)));
        assert!(p.iter().all(|p| p.retention.is_empty()));
        for (bad, says) in [
            (text.replace("s3://b/arch", "ftp://x"), "archive repository"),
            (text.replace("\"5m\"", "\"soon\""), "duration"),
            (format!("{text}repo = 1\n"), "repo"),
            (
                format!(
                    "[[backup.policy]]\nname = \"archive-base\"\nschedule = \"every 1h\"\n\
                     repository = \"/x\"\n{text}"
                ),
                "the archive's own",
            ),
        ] {
            let e = parse_policies(&bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_files_name_the_line_and_the_reason() {
        let cases = [
            (
                GOOD.replace("0 2 * * *", "0 25 * * *"),
                "line 4",
                "schedule",
            ),
            (
                GOOD.replace("keep_last = 7", "keep_lst = 7"),
                "line 7",
                "keep_lst",
            ),
            (
                GOOD.replace("s3://bucket/cairn", "ftp://x/y"),
                "line 5",
                "repository",
            ),
            (
                GOOD.replace("keep_last = 7", "keep_last = -1"),
                "line 7",
                "at least 1",
            ),
            (
                GOOD.replace("min_count = 1", "min_count = 0"),
                "line 9",
                "at least 1",
            ),
            (GOOD.replace("\"30d\"", "\"soon\""), "line 8", "duration"),
            (
                GOOD.replace("kind = \"index\"", "kind = \"files\""),
                "line 15",
                "kind",
            ),
            (
                GOOD.replace("\"often\"", "\"nightly\""),
                "line 12",
                "second policy",
            ),
            (
                GOOD.replace("\"often\"", "\"a/b\""),
                "line 12",
                "policy name",
            ),
            (
                GOOD.replace("s3://bucket/cairn", "s3://"),
                "line 5",
                "bucket",
            ),
            ("[backup\nx = 1".to_string(), "line 1", ""),
            (
                "[[backup.policy]]\nname = \"x\"\n".to_string(),
                "line",
                "schedule",
            ),
            ("[other]\n".to_string(), "line 1", "other"),
        ];
        for (text, line, why) in cases {
            let e = parse_policies(&text).unwrap_err().to_string();
            assert!(e.contains(line) && e.contains(why), "{e}\n--\n{text}");
        }
    }
}
