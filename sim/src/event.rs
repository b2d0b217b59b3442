//! Events on the virtual clock and the queue that orders them deterministically.
//!
//! Order: time, then kind (job ends, node changes, submits, the periodic tick), then the sequence
//! number given at insertion, so equal events are popped in the order they were scheduled.

use beowulf_types::{JobId, NodeName, RunKey, Timestamp};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// What an admin (or a failure) does to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// The node dies: its running jobs are requeued or end as NODE_FAIL; nothing starts there.
    Down,
    /// The node is (back) up and accepts jobs.
    Up,
    /// Running jobs finish; nothing new starts there.
    Drain,
}

/// A node event of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    pub at: Timestamp,
    pub node: NodeName,
    pub change: NodeChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A run of a job reaches its end; the run number tells a stale end (of a run killed by a
    /// node failure) from the current one.
    End(RunKey),
    Node {
        node: NodeName,
        change: NodeChange,
    },
    Submit(JobId),
    /// A periodic scheduling pass, when the simulation has a pass interval.
    Tick,
}

impl Event {
    fn rank(&self) -> u8 {
        match self {
            Event::End(_) => 0,
            Event::Node { .. } => 1,
            Event::Submit(_) => 2,
            Event::Tick => 3,
        }
    }
}

#[derive(Debug)]
struct Scheduled {
    at: Timestamp,
    rank: u8,
    seq: u64,
    event: Event,
}

impl Scheduled {
    fn key(&self) -> (Timestamp, u8, u64) {
        (self.at, self.rank, self.seq)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// A min-queue of events.
#[derive(Debug, Default)]
pub struct EventQueue {
    heap: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
}

impl EventQueue {
    pub fn push(&mut self, at: Timestamp, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Scheduled {
            at,
            rank: event.rank(),
            seq,
            event,
        }));
    }

    /// Time of the next event.
    pub fn next_time(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse(next)| next.at)
    }

    /// The next event if it happens at `at`.
    pub fn pop_at(&mut self, at: Timestamp) -> Option<Event> {
        if self.next_time() != Some(at) {
            return None;
        }
        self.heap.pop().map(|Reverse(next)| next.event)
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_kind_then_insertion() {
        let mut queue = EventQueue::default();
        queue.push(Timestamp(5), Event::Submit(JobId(1)));
        queue.push(Timestamp(5), Event::Tick);
        queue.push(Timestamp(5), Event::Submit(JobId(2)));
        queue.push(
            Timestamp(5),
            Event::End(RunKey {
                job: JobId(9),
                run: 1,
            }),
        );
        queue.push(Timestamp(3), Event::Submit(JobId(3)));
        assert_eq!(queue.next_time(), Some(Timestamp(3)));
        assert_eq!(queue.pop_at(Timestamp(5)), None);
        assert_eq!(queue.pop_at(Timestamp(3)), Some(Event::Submit(JobId(3))));
        let at_five: Vec<Event> = std::iter::from_fn(|| queue.pop_at(Timestamp(5))).collect();
        assert_eq!(
            at_five,
            vec![
                Event::End(RunKey {
                    job: JobId(9),
                    run: 1
                }),
                Event::Submit(JobId(1)),
                Event::Submit(JobId(2)),
                Event::Tick,
            ]
        );
        assert!(queue.is_empty());
    }
}
