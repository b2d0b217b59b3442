//! Advance reservations (Slurm's `scontrol create reservation`): nodes set aside for some users, or
//! for maintenance, during a window of time.

use beowulf_types::{Millis, NodeName, Timestamp};
use std::collections::BTreeSet;

/// Nodes kept for `users` (or for nobody, during maintenance) over `[start, end)`.
///
/// Jobs that do not name the reservation may use its nodes only if they end by `start` or start at
/// `end` or later. Jobs that name it run only on its nodes and only inside the window (they must
/// end by `end`). A maintenance reservation admits nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvanceReservation {
    pub nodes: BTreeSet<NodeName>,
    /// Every node of the cluster (`Nodes=ALL`), whatever `nodes` says.
    pub all_nodes: bool,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Users who may run jobs in it, by name. Empty: anyone who names it.
    pub users: BTreeSet<String>,
    pub maintenance: bool,
}

impl AdvanceReservation {
    pub fn covers(&self, node: &NodeName) -> bool {
        self.all_nodes || self.nodes.contains(node)
    }

    /// Whether the reservation keeps a job that does not run in it off its nodes when the job runs
    /// over `[start, start + time_limit)`.
    pub fn blocks(&self, start: Timestamp, time_limit: Millis) -> bool {
        self.start < start.plus(time_limit) && self.end > start
    }

    /// Whether a job that runs in the reservation may start at `start`.
    pub fn admits(&self, start: Timestamp, time_limit: Millis) -> bool {
        !self.maintenance && start >= self.start && start.plus(time_limit) <= self.end
    }
}

/// Why a job cannot run in the reservation it names, whatever the resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationProblem {
    Unknown,
    Maintenance,
    UserNotAllowed,
    /// The window (what is left of it) is shorter than the job's time limit.
    TooShort,
}

impl std::fmt::Display for ReservationProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReservationProblem::Unknown => "does not exist",
            ReservationProblem::Maintenance => "is for maintenance",
            ReservationProblem::UserNotAllowed => "does not list the job's user",
            ReservationProblem::TooShort => "ends before the job could finish",
        })
    }
}

/// Checks a job against the reservation it names (`None` when it does not exist).
pub(crate) fn check(
    reservation: Option<&AdvanceReservation>,
    user: &str,
    time_limit: Millis,
    now: Timestamp,
) -> Result<(), ReservationProblem> {
    let reservation = reservation.ok_or(ReservationProblem::Unknown)?;
    if reservation.maintenance {
        return Err(ReservationProblem::Maintenance);
    }
    if !reservation.users.is_empty() && !reservation.users.contains(user) {
        return Err(ReservationProblem::UserNotAllowed);
    }
    if reservation.start.max(now).plus(time_limit) > reservation.end {
        return Err(ReservationProblem::TooShort);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_only_overlapping_runs_and_admits_only_inside_the_window() {
        let r = AdvanceReservation {
            start: Timestamp(100),
            end: Timestamp(200),
            ..Default::default()
        };
        assert!(!r.blocks(Timestamp(0), 100), "ends exactly at the start");
        assert!(r.blocks(Timestamp(0), 101));
        assert!(r.blocks(Timestamp(199), 1));
        assert!(!r.blocks(Timestamp(200), 1000), "starts at the end");
        assert!(r.admits(Timestamp(100), 100));
        assert!(!r.admits(Timestamp(99), 10));
        assert!(!r.admits(Timestamp(150), 51));
        assert_eq!(check(Some(&r), "ann", 100, Timestamp(0)), Ok(()));
        assert_eq!(
            check(Some(&r), "ann", 100, Timestamp(101)),
            Err(ReservationProblem::TooShort)
        );
        assert_eq!(
            check(None, "ann", 1, Timestamp(0)),
            Err(ReservationProblem::Unknown)
        );
    }
}
