//! One atomic change of the store, encoded by the caller: the sealed records to write and the
//! counters after it. The write-ahead log frames it; the database applies it.

use super::envelope;
use super::{JOBS, NODES};
use crate::model::{JobRecord, NodeRecord};
use beowulf_types::Generation;
use redb::TableHandle;

/// One atomic change, encoded: the records to write (sealed, `envelope.rs`) and the counters after
/// it.
#[derive(Debug, Default, Clone)]
pub struct EncodedChange {
    pub(super) jobs: Vec<(u64, Vec<u8>)>,
    pub(super) nodes: Vec<(String, Vec<u8>)>,
    pub(super) next_job_id: u64,
    pub(super) generation: Generation,
}

impl EncodedChange {
    pub fn new<'a>(
        jobs: impl IntoIterator<Item = &'a JobRecord>,
        nodes: impl IntoIterator<Item = &'a NodeRecord>,
        next_job_id: u64,
        generation: Generation,
    ) -> EncodedChange {
        EncodedChange {
            jobs: jobs
                .into_iter()
                .map(|j| {
                    let json = serde_json::to_vec(j).expect("job records serialize");
                    let sealed = envelope::seal(JOBS.name(), &j.id.0.to_string(), &json);
                    (j.id.0, sealed)
                })
                .collect(),
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let json = serde_json::to_vec(n).expect("node records serialize");
                    let name = n.name.as_str().to_string();
                    let sealed = envelope::seal(NODES.name(), &name, &json);
                    (name, sealed)
                })
                .collect(),
            next_job_id,
            generation,
        }
    }

    /// Seals the records of a log written before checksums existed (its own checksum held).
    pub(super) fn seal_old_records(&mut self) {
        for (id, bytes) in &mut self.jobs {
            envelope::seal_if_old(JOBS.name(), &id.to_string(), bytes);
        }
        for (name, bytes) in &mut self.nodes {
            envelope::seal_if_old(NODES.name(), name, bytes);
        }
    }
}
