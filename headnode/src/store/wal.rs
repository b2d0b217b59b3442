//! The store's write-ahead log (`headnoded.wal`): its record format.
//!
//! A record is `len: u32 LE`, `crc32(body): u32 LE`, then `body`:
//!
//! ```text
//!   seq u64 · next_job_id u64 · generation u64
//!   n_jobs u32  · { job id u64 · len u32 · JSON record }*
//!   n_nodes u32 · { name len u32 · name · len u32 · JSON record }*
//! ```
//!
//! All integers little-endian. Job and node records are sealed (`envelope`) as in redb. A batch
//! of records is written with one `write(2)` on a file opened with `O_APPEND`.
//!
//! Reading tells two kinds of bad bytes apart ([`decode`], [`plan`]):
//!
//! - a *torn tail*: after the last whole record, what an interrupted append leaves (a record cut
//!   short, one whose data did not all reach the disk, zeros). That append's caller was never
//!   answered (with `acknowledge = "write"`, a power cut may also take answered ones: the mode's
//!   documented loss). It is ignored.
//! - *damage*: a bad record followed by more data. Reading resumes at the next whole record, so
//!   the records after the damage are known (numbered, with their offsets); whether the damage
//!   hides changes the store lacks follows from the numbers on both sides of it. Opening the
//!   store refuses to start when it does (`Store::open`).

use super::change::EncodedChange;
use beowulf_types::Generation;
use std::ops::Range;

/// Bytes before a record's body: its length and its checksum.
const HEADER: usize = 8;

/// `change`, numbered `seq`, as one log record.
pub(super) fn encode(seq: u64, change: &EncodedChange) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(seq.to_le_bytes());
    body.extend(change.next_job_id.to_le_bytes());
    body.extend(change.generation.0.to_le_bytes());
    body.extend(len32(change.jobs.len()).to_le_bytes());
    for (id, bytes) in &change.jobs {
        body.extend(id.to_le_bytes());
        put_bytes(&mut body, bytes);
    }
    body.extend(len32(change.nodes.len()).to_le_bytes());
    for (name, bytes) in &change.nodes {
        put_bytes(&mut body, name.as_bytes());
        put_bytes(&mut body, bytes);
    }
    let mut record = Vec::with_capacity(HEADER + body.len());
    record.extend(len32(body.len()).to_le_bytes());
    record.extend(crc32fast::hash(&body).to_le_bytes());
    record.extend(body);
    record
}

/// One whole record of a log: its change, its sequence number and where it lies.
#[derive(Debug)]
pub(super) struct Record {
    pub seq: u64,
    pub change: EncodedChange,
    pub bytes: Range<usize>,
}

/// What a log holds: its whole records in order, and the bytes that are none.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    /// Whole records (length and checksum right, numbered above the one before), in order.
    pub records: Vec<Record>,
    /// Bytes that are no whole record and are followed by one: `(bytes, index of that record)`.
    pub gaps: Vec<(Range<usize>, usize)>,
    /// Bytes at the end that are no whole record and are followed by none.
    pub tail: Option<Tail>,
    pub len: usize,
}

/// Bytes at the end of a log after its last whole record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tail {
    pub bytes: Range<usize>,
    /// They look like one interrupted append (see [`looks_torn`]); else they are damage.
    pub torn: bool,
}

/// Reads every whole record of `bytes`; after a bad one, looks for the next whole record (so that
/// damage in the middle is told apart from a torn end).
pub(super) fn decode(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded {
        len: bytes.len(),
        ..Decoded::default()
    };
    let mut at = 0;
    // Whole records are numbered upwards: one numbered at or below the previous is not taken.
    let whole_at = |at: usize, previous: Option<u64>| {
        record_at(&bytes[at..]).filter(|(seq, _, _)| previous.is_none_or(|p| *seq > p))
    };
    while at < bytes.len() {
        let previous = decoded.records.last().map(|r| r.seq);
        if let Some((seq, change, used)) = whole_at(at, previous) {
            decoded.records.push(Record {
                seq,
                change,
                bytes: at..at + used,
            });
            at += used;
            continue;
        }
        match (at + 1..bytes.len()).find(|&next| whole_at(next, previous).is_some()) {
            Some(next) => {
                decoded.gaps.push((at..next, decoded.records.len()));
                at = next;
            }
            None => {
                decoded.tail = Some(Tail {
                    bytes: at..bytes.len(),
                    torn: looks_torn(&bytes[at..]),
                });
                break;
            }
        }
    }
    decoded
}

/// Whether bytes after the last whole record are what an interrupted append leaves: a record
/// shorter than its length says (or than a header), one whole-length record whose checksum fails
/// and nothing after it (its data did not all reach the disk before a power cut), or only zeros
/// (the file's new length reached the disk, its data did not). Anything else (a bad record
/// followed by more data) is damage.
fn looks_torn(tail: &[u8]) -> bool {
    let declared_end = tail
        .get(..4)
        .map(|len| HEADER as u64 + u64::from(u32::from_le_bytes(len.try_into().expect("4 bytes"))));
    match declared_end {
        None => true,
        Some(end) if end >= tail.len() as u64 => true,
        Some(_) => tail.iter().all(|b| *b == 0),
    }
}

/// What opening the store does with a log, given the last sequence number the store already
/// holds (`stored`).
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Indices (into [`Decoded::records`]) of the records to move into the store, in order.
    pub apply: Vec<usize>,
    /// Bad bytes between whole records that hid no change the store lacks: the records on both
    /// sides are numbered consecutively, or what could be between them is already in the store.
    pub harmless: Vec<Range<usize>>,
    /// Set when the log is damaged: changes the store lacks could not be read.
    pub loss: Option<Loss>,
}

/// Where a log lost changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Loss {
    /// The bad bytes.
    pub bytes: Range<usize>,
    /// The number of the last whole record before them, if any.
    pub before: Option<u64>,
    /// The number of the first whole record after them (none: damage up to the end).
    pub after: Option<u64>,
    /// Index of the first whole record after them: it and every later one are not replayed.
    pub first_skipped: usize,
}

/// Decides what to replay: every whole record numbered above `stored`, up to the first bad bytes
/// that may hide a change the store lacks. A torn tail is no loss (see [`looks_torn`]).
pub(super) fn plan(decoded: &Decoded, stored: u64) -> Plan {
    let mut plan = Plan::default();
    let newer = |range: Range<usize>| {
        range
            .filter(|&i| decoded.records[i].seq > stored)
            .collect::<Vec<_>>()
    };
    for (bytes, next) in &decoded.gaps {
        let before = next.checked_sub(1).map(|i| decoded.records[i].seq);
        let after = decoded.records[*next].seq;
        // The changes the gap may hold are numbered between `before` and `after`.
        if after > before.unwrap_or(0).max(stored) + 1 {
            plan.apply = newer(0..*next);
            plan.loss = Some(Loss {
                bytes: bytes.clone(),
                before,
                after: Some(after),
                first_skipped: *next,
            });
            return plan;
        }
        plan.harmless.push(bytes.clone());
    }
    plan.apply = newer(0..decoded.records.len());
    if let Some(tail) = decoded.tail.as_ref().filter(|t| !t.torn) {
        plan.loss = Some(Loss {
            bytes: tail.bytes.clone(),
            before: decoded.records.last().map(|r| r.seq),
            after: None,
            first_skipped: decoded.records.len(),
        });
    }
    plan
}

/// The record at the start of `bytes`, with its size, if it is whole and its checksum matches.
fn record_at(bytes: &[u8]) -> Option<(u64, EncodedChange, usize)> {
    let mut header = Reader(bytes.get(..HEADER)?);
    let len = usize::try_from(header.u32()?).ok()?;
    let crc = header.u32()?;
    let body = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut r = Reader(body);
    let seq = r.u64()?;
    let mut change = EncodedChange {
        next_job_id: r.u64()?,
        generation: Generation(r.u64()?),
        ..EncodedChange::default()
    };
    for _ in 0..r.u32()? {
        let id = r.u64()?;
        change.jobs.push((id, r.bytes()?.to_vec()));
    }
    for _ in 0..r.u32()? {
        let name = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        change.nodes.push((name, r.bytes()?.to_vec()));
    }
    r.0.is_empty().then_some((seq, change, HEADER + len))
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("a store record is under 4 GiB")
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(len32(bytes.len()).to_le_bytes());
    out.extend(bytes);
}

/// Reads little-endian fields off the front of a slice; `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(job: u64) -> EncodedChange {
        EncodedChange {
            jobs: vec![(job, format!("{{\"id\":{job}}}").into_bytes())],
            nodes: vec![("node1".into(), b"{\"name\":\"node1\"}".to_vec())],
            next_job_id: job + 1,
            generation: Generation(job * 10),
        }
    }

    fn log(seqs: impl IntoIterator<Item = u64>) -> (Vec<u8>, Vec<Range<usize>>) {
        let (mut log, mut ranges) = (Vec::new(), Vec::new());
        for seq in seqs {
            let record = encode(seq, &change(seq));
            ranges.push(log.len()..log.len() + record.len());
            log.extend(record);
        }
        (log, ranges)
    }

    fn seqs(decoded: &Decoded) -> Vec<u64> {
        decoded.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn records_read_back_in_order() {
        let (log, ranges) = log([7, 8]);
        let decoded = decode(&log);
        assert_eq!(seqs(&decoded), [7, 8]);
        assert_eq!(decoded.records[1].bytes, ranges[1]);
        assert!(decoded.gaps.is_empty() && decoded.tail.is_none());
        let second = &decoded.records[1].change;
        assert_eq!(second.jobs, change(8).jobs);
        assert_eq!(second.nodes, change(8).nodes);
        assert_eq!(second.next_job_id, 9);
        assert_eq!(second.generation, Generation(80));
        let planned = plan(&decoded, 7);
        assert_eq!(planned.apply, [1], "only what the store lacks");
        assert_eq!(planned.loss, None);
    }

    #[test]
    fn an_interrupted_last_append_is_a_torn_tail() {
        let (whole, ranges) = log([1, 2]);
        let second = ranges[1].clone();
        let mut cases: Vec<(&str, Vec<u8>)> = [1, HEADER, second.len() - 1]
            .into_iter()
            .map(|cut| ("cut short", whole[..second.start + cut].to_vec()))
            .collect();
        let mut flipped = whole.clone();
        flipped[second.end - 1] ^= 1;
        cases.push(("whole length, bad checksum", flipped));
        let mut zeros = whole.clone();
        zeros[second.clone()].fill(0);
        cases.push(("zeros", zeros));
        for (case, bytes) in cases {
            let decoded = decode(&bytes);
            assert_eq!(seqs(&decoded), [1], "{case}");
            assert_eq!(
                decoded.tail,
                Some(Tail {
                    bytes: second.start..bytes.len(),
                    torn: true
                }),
                "{case}"
            );
            let planned = plan(&decoded, 0);
            assert_eq!((planned.apply, planned.loss), (vec![0], None), "{case}");
        }
    }

    #[test]
    fn a_bad_record_followed_by_whole_ones_is_damage() {
        let (mut bytes, ranges) = log([1, 2, 3, 4]);
        bytes[ranges[1].start + HEADER + 3] ^= 0x10;
        let decoded = decode(&bytes);
        assert_eq!(
            seqs(&decoded),
            [1, 3, 4],
            "reading resumes after the damage"
        );
        assert_eq!(decoded.gaps, [(ranges[1].clone(), 1)]);
        let planned = plan(&decoded, 0);
        assert_eq!(planned.apply, [0], "nothing after the damage is replayed");
        assert_eq!(
            planned.loss,
            Some(Loss {
                bytes: ranges[1].clone(),
                before: Some(1),
                after: Some(3),
                first_skipped: 1,
            })
        );
        // A flipped length that points past the end is still found to be followed by records.
        let (mut bytes, ranges) = log([1, 2, 3]);
        bytes[ranges[1].start + 3] ^= 0x40;
        let decoded = decode(&bytes);
        assert_eq!(seqs(&decoded), [1, 3]);
        assert!(plan_loses(&decoded, 0));
        // Damage the store already holds behind it loses nothing.
        let (mut bytes, ranges) = log([1, 2, 3, 4]);
        bytes[ranges[1].start + HEADER] ^= 1;
        let planned = plan(&decode(&bytes), 2);
        assert_eq!(
            (planned.apply, planned.loss),
            (vec![1, 2], None),
            "records 3 and 4"
        );
        assert_eq!(planned.harmless, [ranges[1].clone()]);
        // Nor do bad bytes between consecutive records (an append cut short that stayed).
        let (mut bytes, ranges) = log([1, 2]);
        bytes.splice(ranges[1].start..ranges[1].start, [7u8; 30]);
        let decoded = decode(&bytes);
        assert_eq!(seqs(&decoded), [1, 2]);
        assert!(!plan_loses(&decoded, 0));
    }

    #[test]
    fn a_bad_record_followed_by_more_data_at_the_end_is_damage() {
        let (mut bytes, ranges) = log([1, 2]);
        bytes[ranges[1].start + HEADER] ^= 1;
        bytes.extend([1, 2, 3]);
        let decoded = decode(&bytes);
        assert_eq!(
            decoded.tail,
            Some(Tail {
                bytes: ranges[1].start..bytes.len(),
                torn: false
            })
        );
        let planned = plan(&decoded, 0);
        assert_eq!(planned.apply, [0]);
        assert_eq!(
            planned.loss.map(|l| (l.before, l.after)),
            Some((Some(1), None))
        );
    }

    fn plan_loses(decoded: &Decoded, stored: u64) -> bool {
        plan(decoded, stored).loss.is_some()
    }
}
