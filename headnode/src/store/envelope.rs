//! Checksummed records: every value of the jobs, nodes, reservations and images tables is sealed
//! with a CRC32 over its table, its key and its JSON, and checked when the store is loaded.
//!
//! ```text
//!   0x00 'B' 'W' 0x01 · crc32(table · 0x00 · key · 0x00 · JSON): u32 LE · JSON
//! ```
//!
//! redb checks nothing of a value it reads back: without this a flipped bit inside a job record
//! changed its owner silently. The key is part of the checksum, so a record read back under
//! another key (a flipped bit in a B-tree key) is caught as well.
//!
//! The first byte tells the two formats apart: a record written before checksums existed is a
//! JSON object, whose first byte is `{`; a sealed one starts with 0x00, which JSON never does (and
//! no single flipped bit turns 0x00 into `{`). Opening a store converts its old records once
//! (`Meta::format`); from then on a record without a checksum is damage too.

/// The first bytes of a sealed record; the last one is the envelope's version.
const MAGIC: [u8; 4] = [0, b'B', b'W', 1];

/// Bytes before the JSON: the magic and the checksum.
const HEADER: usize = MAGIC.len() + 4;

/// A record as stored: its JSON, sealed with the checksum of `table`, `key` and the JSON.
pub(super) fn seal(table: &str, key: &str, json: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(HEADER + json.len());
    sealed.extend(MAGIC);
    sealed.extend(checksum(table, key, json).to_le_bytes());
    sealed.extend(json);
    sealed
}

/// What a stored value holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unsealed<'a> {
    /// The JSON of a sealed record whose checksum matches.
    Sealed(&'a [u8]),
    /// A record written before checksums existed: plain JSON, nothing to check it against.
    Old(&'a [u8]),
}

/// The JSON of the record stored under `table` and `key`, or what is wrong with it.
pub(super) fn unseal<'a>(table: &str, key: &str, bytes: &'a [u8]) -> Result<Unsealed<'a>, String> {
    if bytes.first() == Some(&b'{') {
        return Ok(Unsealed::Old(bytes));
    }
    let Some(json) = bytes.get(HEADER..) else {
        return Err(format!(
            "the record is {} bytes long, too short to be one",
            bytes.len()
        ));
    };
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "the record starts with {:02x?}: neither a checksummed record nor one written before \
             checksums existed",
            &bytes[..MAGIC.len()]
        ));
    }
    let stored = u32::from_le_bytes(bytes[MAGIC.len()..HEADER].try_into().expect("4 bytes"));
    let computed = checksum(table, key, json);
    if stored != computed {
        return Err(format!(
            "the record does not match its checksum (stored {stored:08x}, computed \
             {computed:08x}): it was changed or damaged after headnoded wrote it"
        ));
    }
    Ok(Unsealed::Sealed(json))
}

/// Seals `bytes` when they are a record of the old format (plain JSON); leaves them otherwise.
pub(super) fn seal_if_old(table: &str, key: &str, bytes: &mut Vec<u8>) {
    if bytes.first() == Some(&b'{') {
        *bytes = seal(table, key, bytes);
    }
}

fn checksum(table: &str, key: &str, json: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(table.as_bytes());
    crc.update(&[0]);
    crc.update(key.as_bytes());
    crc.update(&[0]);
    crc.update(json);
    crc.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_only_under_its_table_and_key() {
        let sealed = seal("jobs", "17", br#"{"id":17}"#);
        assert_eq!(
            unseal("jobs", "17", &sealed),
            Ok(Unsealed::Sealed(&br#"{"id":17}"#[..]))
        );
        assert!(unseal("jobs", "71", &sealed).is_err(), "another key");
        assert!(unseal("nodes", "17", &sealed).is_err(), "another table");
    }

    #[test]
    fn every_flipped_bit_is_caught_and_old_records_are_told_apart() {
        let sealed = seal("jobs", "17", br#"{"id":17,"user":{"uid":1000}}"#);
        for at in 0..sealed.len() {
            for bit in 0..8 {
                let mut flipped = sealed.clone();
                flipped[at] ^= 1 << bit;
                assert!(
                    unseal("jobs", "17", &flipped).is_err(),
                    "bit {bit} of byte {at}"
                );
            }
        }
        assert_eq!(
            unseal("jobs", "17", br#"{"id":17}"#),
            Ok(Unsealed::Old(&br#"{"id":17}"#[..]))
        );
        let mut old = br#"{"id":17}"#.to_vec();
        seal_if_old("jobs", "17", &mut old);
        assert_eq!(old, seal("jobs", "17", br#"{"id":17}"#));
        seal_if_old("jobs", "17", &mut old);
        assert_eq!(old, seal("jobs", "17", br#"{"id":17}"#), "sealed once");
    }
}
