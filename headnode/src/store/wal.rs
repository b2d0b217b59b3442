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
//! All integers little-endian. A record is written with one `write(2)` on a file opened with
//! `O_APPEND`; a crash of headnoded during that write can leave a torn last record, which the length
//! and checksum expose: reading stops there, and that change's caller was never answered.

use super::EncodedChange;
use beowulf_types::Generation;

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

/// What a log holds: its whole records in order, and where the readable part ends (shorter than
/// the file when the last record is torn or a record is corrupt).
#[derive(Debug, Default)]
pub(super) struct Decoded {
    pub records: Vec<(u64, EncodedChange)>,
    pub valid_bytes: usize,
}

/// Reads records from the start of `bytes` until the end or the first torn or corrupt one.
pub(super) fn decode(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    let mut at = 0;
    while let Some((seq, change, used)) = record_at(&bytes[at..]) {
        decoded.records.push((seq, change));
        at += used;
    }
    decoded.valid_bytes = at;
    decoded
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

    #[test]
    fn records_read_back_in_order() {
        let mut log = encode(7, &change(1));
        log.extend(encode(8, &change(2)));
        let decoded = decode(&log);
        assert_eq!(decoded.valid_bytes, log.len());
        let seqs: Vec<u64> = decoded.records.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [7, 8]);
        let (_, second) = &decoded.records[1];
        assert_eq!(second.jobs, change(2).jobs);
        assert_eq!(second.nodes, change(2).nodes);
        assert_eq!(second.next_job_id, 3);
        assert_eq!(second.generation, Generation(20));
    }

    #[test]
    fn a_torn_or_corrupt_record_ends_the_log() {
        let first = encode(1, &change(1));
        let second = encode(2, &change(2));
        for cut in [1, HEADER, second.len() - 1] {
            let mut log = first.clone();
            log.extend(&second[..cut]);
            let decoded = decode(&log);
            assert_eq!(decoded.records.len(), 1, "cut at {cut}");
            assert_eq!(decoded.valid_bytes, first.len(), "cut at {cut}");
        }
        let mut log = first.clone();
        let mut flipped = second.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        log.extend(flipped);
        log.extend(encode(3, &change(3)));
        let decoded = decode(&log);
        assert_eq!(decoded.records.len(), 1, "nothing after a corrupt record");
        assert_eq!(decoded.valid_bytes, first.len());
    }
}
