//! Advance reservations: `cluster reserve` creates, lists and deletes them (root only).

use super::identity::Caller;
use super::{Head, HeadError, now};
use crate::model::ReservationRecord;
use beowulf_types::Timestamp;

impl Head {
    pub fn create_reservation(
        &self,
        caller: &Caller,
        mut record: ReservationRecord,
    ) -> Result<(), HeadError> {
        if !caller.is_root() {
            return Err(HeadError::PermissionDenied(format!(
                "only root may create reservations (you are uid {})",
                caller.uid
            )));
        }
        if record.name.trim().is_empty() {
            return Err(HeadError::Invalid("a reservation needs a name".into()));
        }
        if record.end <= record.start {
            return Err(HeadError::Invalid(format!(
                "reservation {}: it ends before it starts",
                record.name
            )));
        }
        if record.end <= now() {
            return Err(HeadError::Invalid(format!(
                "reservation {}: it would already be over",
                record.name
            )));
        }
        let mut inner = self.lock();
        for node in &record.nodes {
            if !inner.nodes.contains_key(node) {
                return Err(HeadError::NoSuchNode(node.clone()));
            }
        }
        if inner.reservations.contains_key(&record.name) {
            return Err(HeadError::Conflict(format!(
                "reservation {} exists; delete it first (cluster reserve delete {})",
                record.name, record.name
            )));
        }
        record.all_nodes = record.nodes.is_empty();
        self.store.put_reservation(&record.name, Some(&record))?;
        inner.reservations.insert(record.name.clone(), record);
        drop(inner);
        self.wake_scheduler.notify_one();
        Ok(())
    }

    pub fn delete_reservation(&self, caller: &Caller, name: &str) -> Result<(), HeadError> {
        if !caller.is_root() {
            return Err(HeadError::PermissionDenied(format!(
                "only root may delete reservations (you are uid {})",
                caller.uid
            )));
        }
        let mut inner = self.lock();
        if !inner.reservations.contains_key(name) {
            return Err(HeadError::Invalid(format!("no reservation {name}")));
        }
        self.store.put_reservation(name, None)?;
        inner.reservations.remove(name);
        drop(inner);
        self.wake_scheduler.notify_one();
        Ok(())
    }

    /// Reservations that have not ended yet, by name.
    pub fn list_reservations(&self) -> Vec<ReservationRecord> {
        let now: Timestamp = now();
        self.read(|inner| {
            inner
                .reservations
                .values()
                .filter(|r| r.end > now)
                .cloned()
                .collect()
        })
    }
}
