//! A seeded synthetic workload, produced as an SWF trace so it can be written out and replayed.
//!
//! - sizes from a mix: 50% one node (1..=C processors), 30% 2..=N/16 whole nodes, 15% N/16..=N/4
//!   whole nodes, 5% wide, N/4..=N/2 whole nodes (each range clamped to 1..=N);
//! - runtimes log-uniform between `min_run_s` and `max_run_s`;
//! - requested time = runtime × an overestimate factor, log-uniform in 1..=`max_overestimate`, rounded
//!   up to whole minutes; a share `timeout_share` of jobs underestimate (factor 0.5..0.95) and end
//!   as TIMEOUT;
//! - Poisson arrivals, at the rate that makes the offered load (CPU·time asked for / cluster CPU·time
//!   over the arrival span) equal `load`.

use crate::swf::{SwfJob, Trace};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthConfig {
    pub jobs: usize,
    pub nodes: u32,
    pub cpus: u32,
    pub seed: u64,
    /// Offered load; above 1 the queue grows without bound.
    pub load: f64,
    pub min_run_s: f64,
    pub max_run_s: f64,
    pub max_overestimate: f64,
    pub timeout_share: f64,
}

impl SynthConfig {
    pub fn new(jobs: usize, nodes: u32, cpus: u32, seed: u64) -> Self {
        SynthConfig {
            jobs,
            nodes,
            cpus,
            seed,
            load: 0.9,
            min_run_s: 60.0,
            max_run_s: 8.0 * 3600.0,
            max_overestimate: 8.0,
            timeout_share: 0.02,
        }
    }
}

/// The trace for `config`; the same config always gives the same trace.
pub fn generate(config: &SynthConfig) -> Trace {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let nodes = config.nodes.max(1);
    let cpus = config.cpus.max(1);
    let mut jobs: Vec<SwfJob> = (1..=config.jobs as u64)
        .map(|number| {
            let procs = size(&mut rng, nodes, cpus);
            let run = log_uniform(&mut rng, config.min_run_s, config.max_run_s).round();
            let factor = if rng.random_bool(config.timeout_share.clamp(0.0, 1.0)) {
                rng.random_range(0.5..0.95)
            } else {
                log_uniform(&mut rng, 1.0, config.max_overestimate.max(1.0))
            };
            let requested = ((run * factor / 60.0).ceil() * 60.0).max(60.0);
            SwfJob {
                number,
                submit: 0,
                wait: -1,
                run: run as i64,
                allocated_procs: i64::from(procs),
                requested_procs: i64::from(procs),
                requested_time: requested as i64,
                status: 1,
                user: rng.random_range(1..=20),
            }
        })
        .collect();

    let work: f64 = jobs
        .iter()
        .map(|job| job.requested_procs as f64 * job.run as f64)
        .sum();
    let capacity = f64::from(nodes) * f64::from(cpus);
    let span = work / (config.load.max(1e-6) * capacity);
    let rate = jobs.len() as f64 / span.max(1.0);
    let mut clock = 0.0;
    for job in &mut jobs {
        job.submit = clock as i64;
        // Exponential inter-arrival times; 1 - u is in (0, 1], so the log is finite.
        clock += -(1.0 - rng.random::<f64>()).ln() / rate;
    }

    Trace {
        header: vec![
            "Beowulf synthetic workload (sim/)".to_string(),
            format!("Seed: {}", config.seed),
            format!("MaxJobs: {}", config.jobs),
            format!("MaxNodes: {nodes}"),
            format!("MaxProcs: {}", u64::from(nodes) * u64::from(cpus)),
            format!("OfferedLoad: {}", config.load),
        ],
        jobs,
    }
}

/// Processors of one job, from the size mix.
fn size(rng: &mut StdRng, nodes: u32, cpus: u32) -> u32 {
    let draw = rng.random::<f64>();
    let whole_nodes = |rng: &mut StdRng, low: u32, high: u32| {
        let high = high.clamp(1, nodes);
        let low = low.clamp(1, high);
        rng.random_range(low..=high) * cpus
    };
    if draw < 0.50 {
        rng.random_range(1..=cpus)
    } else if draw < 0.80 {
        whole_nodes(rng, 2, nodes / 16)
    } else if draw < 0.95 {
        whole_nodes(rng, nodes / 16, nodes / 4)
    } else {
        whole_nodes(rng, nodes / 4, nodes / 2)
    }
}

fn log_uniform(rng: &mut StdRng, low: f64, high: f64) -> f64 {
    if high <= low {
        return low;
    }
    (low.ln() + rng.random::<f64>() * (high.ln() - low.ln())).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let config = SynthConfig::new(200, 32, 4, 7);
        assert_eq!(generate(&config), generate(&config));
        let other = SynthConfig { seed: 8, ..config };
        assert_ne!(generate(&config).jobs, generate(&other).jobs);
    }

    #[test]
    fn jobs_follow_the_mix_and_arrive_at_the_offered_load() {
        let config = SynthConfig::new(4000, 128, 2, 1);
        let trace = generate(&config);
        let jobs = &trace.jobs;
        assert_eq!(jobs.len(), 4000);
        assert!(jobs.windows(2).all(|pair| pair[0].submit <= pair[1].submit));
        assert!(
            jobs.iter()
                .all(|job| (1..=256).contains(&job.requested_procs))
        );
        assert!(jobs.iter().all(|job| (60..=8 * 3600).contains(&job.run)));
        let single = jobs.iter().filter(|job| job.requested_procs <= 2).count();
        let wide = jobs.iter().filter(|job| job.requested_procs >= 64).count();
        assert!((1800..2200).contains(&single), "single-node jobs: {single}");
        assert!((100..400).contains(&wide), "wide jobs: {wide}");
        let timeouts = jobs
            .iter()
            .filter(|job| job.requested_time < job.run)
            .count();
        assert!(
            (40..130).contains(&timeouts),
            "underestimated jobs: {timeouts}"
        );
        let work: f64 = jobs
            .iter()
            .map(|job| (job.requested_procs * job.run) as f64)
            .sum();
        let span = jobs.last().unwrap().submit as f64;
        let load = work / (span * 256.0);
        assert!((0.8..1.0).contains(&load), "offered load {load}");
    }
}
