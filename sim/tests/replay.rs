//! Replays the hand-written SWF fixture and synthetic workloads with the invariant checker on, and
//! checks the figures: exact ones for the fixture, EASY against FCFS for a synthetic trace.

use beowulf_sim::policy::Policy;
use beowulf_sim::synth::{self, SynthConfig};
use beowulf_sim::workload::{self, Skipped};
use beowulf_sim::{Cluster, Job, Outcome, Report, SimConfig, simulate, swf};
use beowulf_types::{JobId, JobState, Timestamp};

const FIXTURE: &str = include_str!("fixtures/small.swf");

fn fixture_jobs() -> Vec<Job> {
    let trace = swf::parse_str("small.swf", FIXTURE).unwrap();
    assert_eq!(trace.jobs.len(), 7);
    let (jobs, skipped) = workload::jobs_from_swf(&trace.jobs, 4, 4);
    assert_eq!(
        skipped,
        Skipped {
            unknown_run_time: 1,
            wider_than_cluster: 1,
            ..Skipped::default()
        }
    );
    jobs
}

fn run(jobs: &[Job], nodes: u32, cpus: u32, config: SimConfig) -> Outcome {
    simulate(
        Cluster::uniform(nodes, cpus),
        jobs.to_vec(),
        Vec::new(),
        &config,
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

fn job(outcome: &Outcome, id: u64) -> &beowulf_sim::JobOutcome {
    outcome.jobs.iter().find(|job| job.id == JobId(id)).unwrap()
}

#[test]
fn fixture_backfills_under_easy_and_blocks_under_fcfs() {
    let jobs = fixture_jobs();
    let easy = run(&jobs, 4, 4, SimConfig::new(Policy::Easy));
    let fcfs = run(&jobs, 4, 4, SimConfig::new(Policy::Fcfs));

    let starts = |outcome: &Outcome| -> Vec<u64> {
        outcome
            .jobs
            .iter()
            .map(|job| job.start.unwrap().0 / 1000)
            .collect()
    };
    assert_eq!(starts(&easy), vec![0, 100, 10, 200, 200]);
    assert_eq!(starts(&fcfs), vec![0, 100, 200, 200, 200]);
    for outcome in [&easy, &fcfs] {
        let five = job(outcome, 5);
        assert_eq!(five.state, JobState::Timeout);
        assert_eq!(five.end, Some(Timestamp(250_000)));
        assert_eq!(
            job(outcome, 3).cpus,
            4,
            "allocated processors stand in for requested"
        );
    }

    let easy = Report::new(&easy);
    let fcfs = Report::new(&fcfs);
    // Waits (s): easy 0 95 0 180 170, fcfs 0 95 190 180 170.
    assert_eq!(easy.mean_wait_s, 89.0);
    assert_eq!(fcfs.mean_wait_s, 127.0);
    assert_eq!((easy.p95_wait_s, fcfs.p95_wait_s), (180.0, 190.0));
    // CPU·s 1200 + 1600 + 200 + 600 + 50 over 16 CPUs × 500 s, under both.
    assert_eq!(easy.makespan_s, 500.0);
    assert!((easy.utilisation - 3650.0 / 8000.0).abs() < 1e-12);
    assert_eq!(easy.utilisation, fcfs.utilisation);
    // Bounded slowdown of job 3: (0 + 50) / 50 under easy, (190 + 50) / 50 under fcfs.
    assert!(easy.mean_bounded_slowdown < fcfs.mean_bounded_slowdown);
    assert_eq!(
        (easy.timeout, easy.completed, easy.never_started),
        (1, 4, 0)
    );
    // Passes at 0, 5, 10, 20, 30, (easy: 60, when job 3 ends,) 100 and 200 s. FCFS calls `plan` once
    // per start plus once for the job that blocks, if any: 1+1+1+1+1+2+3.
    assert_eq!((easy.passes, easy.scheduler_calls), (8, 8));
    assert_eq!((fcfs.passes, fcfs.scheduler_calls), (7, 10));
}

#[test]
fn periodic_passes_add_passes_but_change_nothing_here() {
    let jobs = fixture_jobs();
    let plain = run(&jobs, 4, 4, SimConfig::new(Policy::Easy));
    let periodic = run(
        &jobs,
        4,
        4,
        SimConfig {
            interval: Some(7_000),
            ..SimConfig::new(Policy::Easy)
        },
    );
    assert_eq!(plain.jobs, periodic.jobs);
    // Ticks every 7 s from 0 s; they pass only while jobs wait (until 200 s): 7, 14, ..., 196.
    assert_eq!(periodic.stats.passes, plain.stats.passes + 28);
}

#[test]
fn easy_beats_fcfs_on_a_synthetic_trace_and_replays_identically_from_swf() {
    let config = SynthConfig::new(1_500, 32, 2, 3);
    let trace = synth::generate(&config);
    let (jobs, skipped) = workload::jobs_from_swf(&trace.jobs, 32, 2);
    assert_eq!(skipped.total(), 0);

    let easy = run(&jobs, 32, 2, SimConfig::new(Policy::Easy));
    let fcfs = run(&jobs, 32, 2, SimConfig::new(Policy::Fcfs));
    let (easy_report, fcfs_report) = (Report::new(&easy), Report::new(&fcfs));
    assert_eq!(easy_report.never_started, 0);
    assert_eq!(fcfs_report.never_started, 0);
    assert!(
        easy_report.utilisation > fcfs_report.utilisation,
        "utilisation easy {} fcfs {}",
        easy_report.utilisation,
        fcfs_report.utilisation
    );
    assert!(
        easy_report.mean_wait_s * 2.0 < fcfs_report.mean_wait_s,
        "mean wait easy {} fcfs {}",
        easy_report.mean_wait_s,
        fcfs_report.mean_wait_s
    );
    assert!(easy_report.p95_bounded_slowdown < fcfs_report.p95_bounded_slowdown);

    // Written out and parsed back, the trace gives the very same simulation.
    let text = swf::write(&trace);
    let parsed = swf::parse_str("synthetic.swf", &text).unwrap();
    let (again, _) = workload::jobs_from_swf(&parsed.jobs, 32, 2);
    assert_eq!(again, jobs);
    let replayed = run(&again, 32, 2, SimConfig::new(Policy::Easy));
    assert_eq!(replayed.jobs, easy.jobs);
}
