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

/// One factor of a job's priority: its value before weighting and its part of the priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Factor {
    /// The factor in 0.0..=1.0, in millionths ([`FACTOR_SCALE`] is 1.0), rounded down.
    pub normalized: u64,
    /// Its part of the priority: `weight * factor`, scaled by [`FACTOR_SCALE`] and rounded down.
    pub weighted: u64,
}

/// A job's priority factor by factor, as a pass computes it (what Slurm's `sprio` shows): the
/// weighted parts add up to the priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PriorityFactors {
    pub age: Factor,
    pub size: Factor,
    pub fairshare: Factor,
    pub partition: Factor,
    pub qos: Factor,
}

impl PriorityFactors {
    /// The job's priority: the sum of the weighted parts. Five parts of at most
    /// `u32::MAX * FACTOR_SCALE` each fit a `u64`.
    pub fn priority(&self) -> u64 {
        self.age.weighted
            + self.size.weighted
            + self.fairshare.weighted
            + self.partition.weighted
            + self.qos.weighted
    }
}

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
    let f = factors(job, weights, cluster_cpus, now, &PolicyFactors::default());
    f.age.weighted + f.size.weighted
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
/// rounded down. The sum of [`factors`]' parts.
pub fn multifactor(
    job: &PendingJob,
    weights: &PriorityWeights,
    cluster_cpus: u64,
    now: Timestamp,
    policy: &PolicyFactors,
) -> u64 {
    factors(job, weights, cluster_cpus, now, policy).priority()
}

/// The job's priority factor by factor: age and size from the job (as [`priority`] describes),
/// the policy's as given.
pub fn factors(
    job: &PendingJob,
    weights: &PriorityWeights,
    cluster_cpus: u64,
    now: Timestamp,
    policy: &PolicyFactors,
) -> PriorityFactors {
    let scale = u128::from(FACTOR_SCALE);
    // `value / total` of weight `weight`, in fixed point: both results fit a u64, as
    // `value <= total` and the weight is a u32.
    let ratio = |weight: u32, value: u128, total: u128| -> Factor {
        Factor {
            normalized: (scale * value / total) as u64,
            weighted: (u128::from(weight) * scale * value / total) as u64,
        }
    };
    let age = if weights.max_age == 0 {
        ratio(weights.age_weight, 1, 1)
    } else {
        let max_age = u128::from(weights.max_age);
        ratio(
            weights.age_weight,
            u128::from(now.since(job.submitted)).min(max_age),
            max_age,
        )
    };
    let size = if cluster_cpus == 0 {
        Factor::default()
    } else {
        let total = u128::from(cluster_cpus);
        let job_cpus = u128::from(job.nodes) * u128::from(job.per_node.cpus);
        ratio(weights.size_weight, job_cpus.min(total), total)
    };
    let part = |weight: u32, factor: f64| -> Factor {
        // Rounded down in fixed point first, so the result does not depend on float rounding of the
        // weight product.
        let scaled = (factor.clamp(0.0, 1.0) * FACTOR_SCALE as f64) as u64;
        Factor {
            normalized: scaled,
            weighted: u64::from(weight) * scaled,
        }
    };
    PriorityFactors {
        age,
        size,
        fairshare: part(weights.fairshare_weight, policy.fairshare),
        partition: part(weights.partition_weight, policy.partition),
        qos: part(weights.qos_weight, policy.qos),
    }
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
    fn the_factors_add_up_to_the_priority_and_keep_their_unweighted_value() {
        let weights = PriorityWeights {
            fairshare_weight: 10,
            qos_weight: 3,
            ..WEIGHTS
        };
        let policy = PolicyFactors {
            fairshare: 0.25,
            partition: 1.0,
            qos: 1.0 / 3.0,
        };
        let f = factors(
            &job(1, 2_500, 1, 4),
            &weights,
            16,
            Timestamp(5_000),
            &policy,
        );
        assert_eq!(f.age.normalized, FACTOR_SCALE / 4);
        assert_eq!(f.age.weighted, 250 * FACTOR_SCALE);
        assert_eq!(f.size.normalized, FACTOR_SCALE / 4);
        assert_eq!(f.size.weighted, 25 * FACTOR_SCALE);
        assert_eq!(f.fairshare.weighted, 10 * (FACTOR_SCALE / 4));
        // Partition weight 0: the factor is kept, its part is nothing.
        assert_eq!(f.partition.normalized, FACTOR_SCALE);
        assert_eq!(f.partition.weighted, 0);
        assert_eq!(f.qos.normalized, 333_333);
        assert_eq!(f.qos.weighted, 999_999);
        assert_eq!(
            f.priority(),
            multifactor(
                &job(1, 2_500, 1, 4),
                &weights,
                16,
                Timestamp(5_000),
                &policy
            )
        );
        assert_eq!(
            f.priority(),
            f.age.weighted + f.size.weighted + f.fairshare.weighted + f.qos.weighted
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
