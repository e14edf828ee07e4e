//! Archived changes on disk and in a repository: records appended to a spool file, shipped
//! as one object per closed file. A record is `seq` (u64), `time_ms` (i64), the changeset's
//! length (u32), all little-endian, then the changeset. An object's key names its range:
//! `.archive/changes/FIRST-LAST-TFIRST-TLAST.seg` (sequence numbers zero-padded to 20
//! digits, times in milliseconds since the epoch), so a listing is the timeline.

use cairn_store::archive::ChangeRecord;

/// Where changes are kept in a repository (a hidden prefix: never taken for a backup, and
/// never collected as garbage).
pub const CHANGES_PREFIX: &str = ".archive/changes/";

const HEADER: usize = 8 + 8 + 4;

/// Appends `r` to `out`.
pub fn encode(r: &ChangeRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(&(r.seq as u64).to_le_bytes());
    out.extend_from_slice(&r.time_ms.to_le_bytes());
    out.extend_from_slice(&(r.changeset.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.changeset);
}

/// The whole records of `bytes`, in order, and how many bytes they take (a record cut
/// short, the end of a spool file a kill interrupted, is left out).
pub fn decode(bytes: &[u8]) -> (Vec<ChangeRecord>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let num = |from: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[from..from + 8]);
            b
        };
        let seq = u64::from_le_bytes(num(at)) as i64;
        let time_ms = i64::from_le_bytes(num(at + 8));
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[at + 16..at + 20]);
        let len = u32::from_le_bytes(len) as usize;
        if bytes.len() - at - HEADER < len {
            break;
        }
        out.push(ChangeRecord {
            seq,
            time_ms,
            changeset: bytes[at + HEADER..at + HEADER + len].to_vec(),
        });
        at += HEADER + len;
    }
    (out, at)
}

/// The range an object of changes holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentRange {
    /// Its first change.
    pub first: i64,
    /// Its last change.
    pub last: i64,
    /// When its first change committed (ms since the epoch).
    pub first_ms: i64,
    /// When its last change committed.
    pub last_ms: i64,
}

impl SegmentRange {
    /// The range of `records` (none when empty).
    pub fn of(records: &[ChangeRecord]) -> Option<SegmentRange> {
        let (first, last) = (records.first()?, records.last()?);
        Some(SegmentRange {
            first: first.seq,
            last: last.seq,
            first_ms: first.time_ms,
            last_ms: last.time_ms,
        })
    }

    /// Its object's key.
    pub fn key(&self) -> String {
        format!(
            "{CHANGES_PREFIX}{:020}-{:020}-{}-{}.seg",
            self.first, self.last, self.first_ms, self.last_ms
        )
    }

    /// The range a key names; `None` for any other key.
    pub fn parse(key: &str) -> Option<SegmentRange> {
        let name = key.strip_prefix(CHANGES_PREFIX)?.strip_suffix(".seg")?;
        let mut parts = name.split('-').map(str::parse::<i64>);
        let range = SegmentRange {
            first: parts.next()?.ok()?,
            last: parts.next()?.ok()?,
            first_ms: parts.next()?.ok()?,
            last_ms: parts.next()?.ok()?,
        };
        (parts.next().is_none() && range.first <= range.last).then_some(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_cut_one_is_left_out() {
        let records: Vec<ChangeRecord> = (1..=3)
            .map(|i| ChangeRecord {
                seq: i,
                time_ms: 1_000 + i,
                changeset: vec![i as u8; i as usize * 10],
            })
            .collect();
        let mut bytes = Vec::new();
        for r in &records {
            encode(r, &mut bytes);
        }
        let whole = bytes.len();
        assert_eq!(decode(&bytes), (records.clone(), whole));
        bytes.extend_from_slice(&[7, 0, 0]);
        assert_eq!(decode(&bytes), (records.clone(), whole));
        let cut = &bytes[..whole - 5];
        assert_eq!(decode(cut).0, records[..2].to_vec());
        let range = SegmentRange::of(&records).unwrap();
        assert_eq!(SegmentRange::parse(&range.key()), Some(range));
        for bad in [
            "x",
            ".archive/changes/1-2-3.seg",
            ".archive/changes/5-2-3-4.seg",
        ] {
            assert_eq!(SegmentRange::parse(bad), None, "{bad}");
        }
    }
}
