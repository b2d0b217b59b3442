//! Multifactor priority (Slurm's priority/multifactor: age, job size, fair-share, partition and QOS
//! factors) and the queue order the pass walks.

use crate::{PendingJob, PriorityWeights};
use beowulf_types::Timestamp;
use std::cmp::Reverse;

/// Fixed-point scale of each factor. A factor in 0.0..=1.0 becomes 0..=FACTOR_SCALE, so two jobs
/// submitted a fraction of a second apart still differ under the default one-week `max_age`
/// (1 ms of age is ~1.65e-3 units with weight 1000), and all arithmetic stays integer, hence
/// identical on every machine. Worst case `2 * u32::MAX * 1e6` fits easily in a `u64`.
pub const FACTOR_SCALE: u64 = 1_000_000;

/// The job's priority at `now`:
/// `age_weight * min(1, age / max_age) + size_weight * min(1, job CPUs / cluster CPUs)`, each factor
/// scaled by [`FACTOR_SCALE`] and rounded down.
///
/// `cluster_cpus` counts the Up and Drain nodes (Down nodes are not part of the cluster's size while
/// they are down). A `max_age` of zero makes every job fully aged; an empty cluster makes the size
/// factor zero for every job.
pub fn priority(
    job: &PendingJob,
    weights: &PriorityWeights,
    cluster_cpus: u64,
    now: Timestamp,
) -> u64 {
    let scale = u128::from(FACTOR_SCALE);
    let age = u128::from(now.since(job.submitted));
    let age_part = if weights.max_age == 0 {
        u128::from(weights.age_weight) * scale
    } else {
        let max_age = u128::from(weights.max_age);
        u128::from(weights.age_weight) * scale * age.min(max_age) / max_age
    };
    let job_cpus = u128::from(job.nodes) * u128::from(job.per_node.cpus);
    let size_part = if cluster_cpus == 0 {
        0
    } else {
        let total = u128::from(cluster_cpus);
        u128::from(weights.size_weight) * scale * job_cpus.min(total) / total
    };
    // Both parts are at most `u32::MAX * FACTOR_SCALE`, so the sum fits a u64.
    (age_part + size_part) as u64
}

/// The factors that come from site policy rather than from the job itself, each in 0.0..=1.0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PolicyFactors {
    /// [`crate::fairshare`]'s factor for the job's user and account.
    pub fairshare: f64,
    /// The partition's `priority_factor` over the largest among partitions.
    pub partition: f64,
    /// The QOS's `priority` over the largest among QOS.
    pub qos: f64,
}

/// The full multifactor priority: [`priority`] plus `fairshare_weight * fairshare + partition_weight
/// * partition + qos_weight * qos`, each factor clamped to 0.0..=1.0, scaled by [`FACTOR_SCALE`] and
/// rounded down. Five parts of at most `u32::MAX * FACTOR_SCALE` each still fit a `u64`.
pub fn multifactor(
    job: &PendingJob,
    weights: &PriorityWeights,
    cluster_cpus: u64,
    now: Timestamp,
    factors: &PolicyFactors,
) -> u64 {
    let part = |weight: u32, factor: f64| -> u64 {
        // Rounded down in fixed point first, so the result does not depend on float rounding of the
        // weight product.
        let scaled = (factor.clamp(0.0, 1.0) * FACTOR_SCALE as f64) as u64;
        u64::from(weight) * scaled
    };
    priority(job, weights, cluster_cpus, now)
        + part(weights.fairshare_weight, factors.fairshare)
        + part(weights.partition_weight, factors.partition)
        + part(weights.qos_weight, factors.qos)
}

/// Indices of `jobs` in the order the pass considers them: priority descending, then submitted
/// ascending (older first), then `JobId` ascending, a total order, so ties never depend on input order.
pub fn queue_order(jobs: &[&PendingJob], priorities: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_unstable_by_key(|&i| (Reverse(priorities[i]), jobs[i].submitted, jobs[i].id));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::{JobId, Resources};

    fn job(id: u64, submitted: u64, nodes: u32, cpus: u32) -> PendingJob {
        PendingJob {
            id: JobId(id),
            submitted: Timestamp(submitted),
            nodes,
            per_node: Resources::new(cpus, 0),
            time_limit: 1000,
            ..Default::default()
        }
    }

    const WEIGHTS: PriorityWeights = PriorityWeights {
        age_weight: 1000,
        max_age: 10_000,
        size_weight: 100,
        fairshare_weight: 0,
        partition_weight: 0,
        qos_weight: 0,
    };

    #[test]
    fn policy_factors_add_their_weighted_share() {
        let weights = PriorityWeights {
            fairshare_weight: 10,
            partition_weight: 20,
            qos_weight: 40,
            ..WEIGHTS
        };
        let factors = PolicyFactors {
            fairshare: 0.5,
            partition: 1.0,
            qos: 2.0,
        };
        let base = priority(&job(1, 0, 1, 0), &weights, 0, Timestamp(0));
        assert_eq!(
            multifactor(&job(1, 0, 1, 0), &weights, 0, Timestamp(0), &factors),
            base + (5 + 20 + 40) * FACTOR_SCALE
        );
        let none = PolicyFactors::default();
        assert_eq!(
            multifactor(&job(1, 0, 1, 0), &WEIGHTS, 0, Timestamp(0), &factors),
            multifactor(&job(1, 0, 1, 0), &WEIGHTS, 0, Timestamp(0), &none)
        );
    }

    #[test]
    fn age_factor_grows_linearly_then_caps_at_max_age() {
        let now = Timestamp(20_000);
        let scale = FACTOR_SCALE;
        assert_eq!(priority(&job(1, 20_000, 1, 0), &WEIGHTS, 10, now), 0);
        assert_eq!(
            priority(&job(1, 15_000, 1, 0), &WEIGHTS, 10, now),
            500 * scale
        );
        assert_eq!(
            priority(&job(1, 10_000, 1, 0), &WEIGHTS, 10, now),
            1000 * scale
        );
        assert_eq!(priority(&job(1, 0, 1, 0), &WEIGHTS, 10, now), 1000 * scale);
        // Submitted in the future (clock skew): age zero, not an underflow.
        assert_eq!(priority(&job(1, 30_000, 1, 0), &WEIGHTS, 10, now), 0);
    }

    #[test]
    fn size_factor_is_the_share_of_cluster_cpus_capped_at_one() {
        let now = Timestamp(0);
        assert_eq!(
            priority(&job(1, 0, 2, 2), &WEIGHTS, 16, now),
            25 * FACTOR_SCALE
        );
        assert_eq!(
            priority(&job(1, 0, 4, 8), &WEIGHTS, 16, now),
            100 * FACTOR_SCALE
        );
        assert_eq!(priority(&job(1, 0, 4, 8), &WEIGHTS, 0, now), 0);
    }

    #[test]
    fn zero_max_age_means_fully_aged() {
        let weights = PriorityWeights {
            max_age: 0,
            ..WEIGHTS
        };
        assert_eq!(
            priority(&job(1, 5, 1, 0), &weights, 0, Timestamp(5)),
            1000 * FACTOR_SCALE
        );
    }

    #[test]
    fn queue_order_breaks_ties_by_submission_then_id() {
        let jobs = [
            job(3, 10, 1, 1),
            job(1, 10, 1, 1),
            job(2, 5, 1, 1),
            job(9, 50, 1, 1),
        ];
        let refs: Vec<&PendingJob> = jobs.iter().collect();
        let priorities = [7, 7, 7, 8];
        let order: Vec<u64> = queue_order(&refs, &priorities)
            .into_iter()
            .map(|i| jobs[i].id.0)
            .collect();
        assert_eq!(order, vec![9, 2, 1, 3]);
    }
}
