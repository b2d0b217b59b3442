//! Scenario tests of site policy, one (at least) per feature, as a Slurm user would expect it:
//! partitions, fair-share / QOS / partition priority, arrays, dependencies, features and GRES,
//! preemption, advance reservations, and `why`.

mod common;

use beowulf_scheduler::{
    AdvanceReservation, ArrayMember, Association, Blocker, Constraint, Dependency, JobOutcome,
    NodeLack, Partition, PreemptMode, Preemption, Qos, why,
};
use beowulf_types::{JobHold, JobId, PendingReason, Timestamp};
use common::*;
use std::collections::{BTreeMap, BTreeSet};

const NOW: u64 = 1_000_000;
const HOUR: u64 = 3_600_000;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn nodes(items: &[&str]) -> BTreeSet<beowulf_types::NodeName> {
    items.iter().map(|s| name(s)).collect()
}

#[test]
fn partitions_confine_jobs_to_their_nodes_and_hold_jobs_over_their_limits() {
    let mut input = input(&[("a1", 4, Up), ("a2", 4, Up), ("g1", 4, Up)]);
    input.partitions = BTreeMap::from([
        (
            "batch".to_string(),
            Partition {
                nodes: nodes(&["a1", "a2"]),
                max_time: Some(HOUR),
                max_nodes: Some(2),
                default: true,
                ..Default::default()
            },
        ),
        (
            "gpu".to_string(),
            Partition {
                nodes: nodes(&["g1"]),
                allowed_groups: set(&["gpu-users"]),
                ..Default::default()
            },
        ),
    ]);
    let mut long = pending(2, 10, 1, 1, 2 * HOUR);
    long.partition = Some("batch".into());
    let mut gpu_denied = pending(3, 20, 1, 1, 1000);
    gpu_denied.partition = Some("gpu".into());
    let mut gpu_ok = gpu_denied.clone();
    gpu_ok.id = JobId(4);
    gpu_ok.groups = set(&["gpu-users"]);
    let mut unknown = pending(6, 40, 1, 1, 1000);
    unknown.partition = Some("nope".into());
    input.pending = vec![
        // Default partition: 2 nodes x 4 CPUs, so it lands on a1 and a2, never g1.
        pending(1, 0, 2, 4, 1000),
        long,
        gpu_denied,
        gpu_ok,
        pending(5, 30, 3, 1, 1000),
        unknown,
    ];
    let plan = checked_plan(&input, NOW);
    assert_eq!(nodes_of(&plan, 1), vec!["a1", "a2"]);
    assert_eq!(nodes_of(&plan, 4), vec!["g1"]);
    assert_eq!(waiting(&plan, 2).reason, PendingReason::PartitionTimeLimit);
    assert_eq!(waiting(&plan, 3).reason, PendingReason::PartitionNotAllowed);
    assert_eq!(waiting(&plan, 5).reason, PendingReason::PartitionNodeLimit);
    assert_eq!(waiting(&plan, 6).reason, PendingReason::PartitionConfig);
}

#[test]
fn fair_share_qos_and_partition_factors_reorder_the_queue() {
    let mut input = input(&[("n1", 1, Up)]);
    input.weights.age_weight = 0;
    input.weights.size_weight = 0;
    input.weights.fairshare_weight = 1000;
    // ann used a lot recently, bob nothing: bob's job goes first although submitted later.
    input.usage = BTreeMap::from([(Association::User("ann".into()), 5_000_000.0)]);
    let mut ann = pending(1, 0, 1, 1, 1000);
    ann.user = "ann".into();
    let mut bob = pending(2, 100, 1, 1, 1000);
    bob.user = "bob".into();
    input.pending = vec![ann.clone(), bob.clone()];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![2]);
    assert!(waiting(&plan, 1).priority < plan.starts[0].priority);

    // A QOS priority outweighs fair-share when weighted more.
    input.weights.qos_weight = 5000;
    input.qos = BTreeMap::from([(
        "urgent".to_string(),
        Qos {
            priority: 100,
            ..Default::default()
        },
    )]);
    let mut urgent = ann.clone();
    urgent.qos = Some("urgent".into());
    input.pending = vec![urgent, bob.clone()];
    assert_eq!(started(&checked_plan(&input, NOW)), vec![1]);

    // So does a partition's priority factor.
    input.weights.qos_weight = 0;
    input.weights.partition_weight = 5000;
    input.partitions = BTreeMap::from([
        (
            "low".to_string(),
            Partition {
                default: true,
                ..Default::default()
            },
        ),
        (
            "high".to_string(),
            Partition {
                priority_factor: 10,
                ..Default::default()
            },
        ),
    ]);
    let mut high = ann;
    high.partition = Some("high".into());
    input.pending = vec![high, bob];
    assert_eq!(started(&checked_plan(&input, NOW)), vec![1]);
}

#[test]
fn backfill_respects_features_and_gres_of_the_top_job() {
    // gpu1 is the only GPU node; job 100 holds it until NOW + 5000. The top job needs its 2 GPUs.
    let mut input = input(&[("cpu1", 4, Up), ("gpu1", 4, Up)]);
    input.nodes.get_mut(&name("gpu1")).unwrap().gres = BTreeMap::from([("gpu".into(), 2)]);
    let mut holder = running(100, &["gpu1"], 1, NOW + 5000);
    holder.gres_per_node = BTreeMap::from([("gpu".into(), 1)]);
    input.running = vec![holder];
    let mut top = pending(1, 0, 1, 1, 10_000);
    top.gres_per_node = BTreeMap::from([("gpu".into(), 2)]);
    // A long CPU job may start on gpu1's free CPUs (the reservation leaves 3 spare) or on cpu1;
    // a long GPU job may not take gpu1's free GPU.
    let mut long_gpu = pending(3, 20, 1, 1, 1_000_000);
    long_gpu.gres_per_node = BTreeMap::from([("gpu".into(), 1)]);
    input.pending = vec![top, pending(2, 10, 1, 4, 1_000_000), long_gpu];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(nodes_of(&plan, 2), vec!["cpu1"]);
    assert_eq!(waiting(&plan, 1).reason, PendingReason::Resources);
    assert_eq!(
        waiting(&plan, 1).estimated_start,
        Some(Timestamp(NOW + 5000))
    );
    assert_eq!(waiting(&plan, 3).reason, PendingReason::Priority);
    assert_eq!(plan.top_job.as_ref().unwrap().job, JobId(1));
}

#[test]
fn array_throttle_limits_running_elements() {
    let mut input = input(&[("n1", 8, Up)]);
    let member = |index| ArrayMember {
        array: JobId(10),
        index,
        max_running: Some(3),
    };
    let mut already = running(10, &["n1"], 1, NOW + 1000);
    already.array = Some(member(0));
    input.running = vec![already];
    input.pending = (1..=5)
        .map(|i| {
            let mut job = pending(10 + u64::from(i), u64::from(i), 1, 1, 1000);
            job.array = Some(member(i));
            job
        })
        .collect();
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![11, 12]);
    for job in [13, 14, 15] {
        assert_eq!(waiting(&plan, job).reason, PendingReason::JobArrayTaskLimit);
    }
}

#[test]
fn dependencies_wait_start_or_never_as_in_slurm() {
    let mut input = input(&[("n1", 8, Up)]);
    input.running = vec![running(100, &["n1"], 1, NOW + 1000)];
    input.job_outcomes = BTreeMap::from([
        (JobId(200), JobOutcome::Completed),
        (JobId(201), JobOutcome::Failed),
    ]);
    let with = |id, dependencies: Vec<Dependency>| {
        let mut job = pending(id, id, 1, 1, 1000);
        job.dependencies = dependencies;
        job.user = "ann".into();
        job.name = format!("job{id}");
        job
    };
    let mut singleton_a = with(7, vec![Dependency::Singleton]);
    singleton_a.name = "nightly".into();
    let mut singleton_b = with(8, vec![Dependency::Singleton]);
    singleton_b.name = "nightly".into();
    input.pending = vec![
        with(1, vec![Dependency::AfterOk(JobId(100))]),
        with(2, vec![Dependency::AfterOk(JobId(200))]),
        with(3, vec![Dependency::AfterOk(JobId(201))]),
        with(4, vec![Dependency::AfterNotOk(JobId(201))]),
        with(5, vec![Dependency::AfterAny(JobId(1))]),
        with(6, vec![Dependency::AfterOk(JobId(999))]),
        singleton_a,
        singleton_b,
    ];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![2, 4, 7]);
    assert_eq!(waiting(&plan, 1).reason, PendingReason::Dependency);
    assert_eq!(
        waiting(&plan, 3).reason,
        PendingReason::DependencyNeverSatisfied
    );
    assert_eq!(waiting(&plan, 5).reason, PendingReason::Dependency);
    assert_eq!(
        waiting(&plan, 6).reason,
        PendingReason::DependencyNeverSatisfied
    );
    // Only one "nightly" of ann at a time, the earlier first.
    assert_eq!(waiting(&plan, 8).reason, PendingReason::Dependency);
}

#[test]
fn constraints_and_gres_choose_the_nodes_that_have_them() {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up), ("n3", 4, Up)]);
    input.nodes.get_mut(&name("n1")).unwrap().features = set(&["avx512"]);
    input.nodes.get_mut(&name("n2")).unwrap().features = set(&["avx512", "ib"]);
    input.nodes.get_mut(&name("n3")).unwrap().gres = BTreeMap::from([("gpu".into(), 4)]);
    let mut both = pending(1, 0, 1, 1, 1000);
    both.constraint = Some(Constraint::parse("avx512&ib").unwrap());
    let mut either = pending(2, 10, 2, 1, 1000);
    either.constraint = Some(Constraint::parse("ib|avx512").unwrap());
    let mut gpus = pending(3, 20, 1, 1, 1000);
    gpus.gres_per_node = BTreeMap::from([("gpu".into(), 2)]);
    let mut impossible = pending(4, 30, 1, 1, 1000);
    impossible.constraint = Some(Constraint::parse("fpga").unwrap());
    let mut too_many_gpus = pending(5, 40, 1, 1, 1000);
    too_many_gpus.gres_per_node = BTreeMap::from([("gpu".into(), 8)]);
    input.pending = vec![both, either, gpus, impossible, too_many_gpus];
    let plan = checked_plan(&input, NOW);
    assert_eq!(nodes_of(&plan, 1), vec!["n2"]);
    assert_eq!(nodes_of(&plan, 2), vec!["n1", "n2"]);
    assert_eq!(nodes_of(&plan, 3), vec!["n3"]);
    assert_eq!(waiting(&plan, 4).reason, PendingReason::BadConstraints);
    assert_eq!(waiting(&plan, 5).reason, PendingReason::BadConstraints);

    let error = Constraint::parse("avx512&&ib").unwrap_err();
    assert_eq!(error.position, 7);
    assert!(error.to_string().contains("position 7"), "{error}");
}

fn qos_input() -> beowulf_scheduler::SchedulerInput {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up)]);
    input.qos = BTreeMap::from([
        (
            "high".to_string(),
            Qos {
                priority: 100,
                preempts: set(&["low", "standby"]),
                ..Default::default()
            },
        ),
        (
            "low".to_string(),
            Qos {
                preempt_mode: PreemptMode::Requeue,
                ..Default::default()
            },
        ),
        (
            "standby".to_string(),
            Qos {
                preempt_mode: PreemptMode::Cancel,
                ..Default::default()
            },
        ),
        // Listed nowhere as preemptable, and `Off` anyway.
        ("normal".to_string(), Qos::default()),
    ]);
    let mut low_old = running(100, &["n1"], 4, NOW + HOUR);
    low_old.qos = Some("low".into());
    low_old.priority = 50;
    let mut low_young = running(101, &["n2"], 2, NOW + HOUR);
    low_young.qos = Some("low".into());
    low_young.priority = 10;
    let mut normal = running(102, &["n2"], 2, NOW + HOUR);
    normal.qos = Some("normal".into());
    input.running = vec![low_old, low_young, normal];
    input
}

#[test]
fn high_qos_job_preempts_the_fewest_lowest_priority_jobs_and_starts_next_pass() {
    let mut input = qos_input();
    let mut urgent = pending(1, 0, 1, 2, 1000);
    urgent.qos = Some("high".into());
    input.pending = vec![urgent.clone(), pending(2, 10, 1, 1, 1000)];
    let plan = checked_plan(&input, NOW);
    // Job 101 (priority 10, 2 CPUs on n2) is enough; 100 is kept, 102 is never a victim.
    assert_eq!(
        plan.preemptions,
        vec![Preemption {
            victim: JobId(101),
            by: JobId(1),
            mode: PreemptMode::Requeue
        }]
    );
    let waiting_one = waiting(&plan, 1);
    assert_eq!(waiting_one.reason, PendingReason::Preempting);
    assert_eq!(waiting_one.estimated_start, Some(Timestamp(NOW)));
    assert_eq!(plan.held_for_preemptors[&JobId(1)], vec![name("n2")]);
    assert!(plan.starts.is_empty(), "job 2 must not take n2: {plan:#?}");

    // A job of a QOS that preempts nothing just waits.
    let mut plain = urgent;
    plain.qos = Some("normal".into());
    input.pending = vec![plain];
    let plan = checked_plan(&input, NOW);
    assert!(plan.preemptions.is_empty());
    assert_eq!(waiting(&plan, 1).reason, PendingReason::Resources);
}

#[test]
fn maintenance_reservation_lets_only_jobs_that_end_before_it_use_its_nodes() {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up)]);
    input.reservations = BTreeMap::from([
        (
            "maint".to_string(),
            AdvanceReservation {
                all_nodes: true,
                start: Timestamp(NOW + HOUR),
                end: Timestamp(NOW + 2 * HOUR),
                maintenance: true,
                ..Default::default()
            },
        ),
        (
            "course".to_string(),
            AdvanceReservation {
                nodes: nodes(&["n2"]),
                start: Timestamp(NOW + 3 * HOUR),
                end: Timestamp(NOW + 4 * HOUR),
                users: set(&["ann"]),
                ..Default::default()
            },
        ),
    ]);
    let mut in_course = pending(3, 20, 1, 1, HOUR / 2);
    in_course.reservation = Some("course".into());
    in_course.user = "ann".into();
    let mut not_listed = in_course.clone();
    not_listed.id = JobId(4);
    not_listed.user = "bob".into();
    input.pending = vec![
        // Ends before the maintenance: starts.
        pending(1, 0, 1, 4, HOUR),
        // Would run into it: waits, and is the top job, starting when the maintenance ends.
        pending(2, 10, 1, 4, 2 * HOUR),
        in_course,
        not_listed,
    ];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![1]);
    let top = waiting(&plan, 2);
    assert_eq!(top.reason, PendingReason::Reservation);
    // n2 is free at the end of the maintenance, but the course takes it at NOW + 3h: only n1
    // (free again by then) fits the 2-hour job.
    assert_eq!(top.estimated_start, Some(Timestamp(NOW + 2 * HOUR)));
    // The course job waits for its window.
    assert_eq!(waiting(&plan, 3).reason, PendingReason::Reservation);
    assert_eq!(waiting(&plan, 4).reason, PendingReason::Reservation);

    // Inside the window the course job starts, on n2 only.
    let mut later = input.clone();
    later.pending.retain(|job| job.id == JobId(3));
    let plan = checked_plan(&later, NOW + 3 * HOUR);
    assert_eq!(nodes_of(&plan, 3), vec!["n2"]);
}

#[test]
fn why_names_the_blocking_nodes_the_top_job_and_an_estimated_start() {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up), ("n3", 4, Drain)]);
    input.nodes.get_mut(&name("n2")).unwrap().features = set(&["ib"]);
    input.running = vec![running(100, &["n1"], 4, NOW + 5000)];
    // Job 1 (top) needs both Up nodes; job 2 wants ib for longer than the shadow time.
    let mut ib = pending(2, 10, 1, 2, 100_000);
    ib.constraint = Some(Constraint::parse("ib").unwrap());
    let mut held = pending(3, 20, 1, 1, 1000);
    held.dependencies = vec![Dependency::AfterOk(JobId(100))];
    input.pending = vec![pending(1, 0, 2, 4, 10_000), ib, held];
    let plan = checked_plan(&input, NOW);
    assert_eq!(waiting(&plan, 2).reason, PendingReason::Priority);

    let explanation = why(&input, Timestamp(NOW), JobId(2));
    assert_eq!(explanation.reason, Some(PendingReason::Priority));
    assert!(explanation.blockers.contains(&Blocker::TopJob {
        job: JobId(1),
        start: Timestamp(NOW + 5000),
        nodes: vec![name("n1"), name("n2")],
    }));
    assert!(explanation.blockers.contains(&Blocker::Nodes {
        lack: NodeLack::Features("ib".into()),
        nodes: vec![name("n1"), name("n3")],
    }));
    // Behind the top job: n2 is free once the top job's run ends.
    assert_eq!(explanation.estimated_start, Some(Timestamp(NOW + 15_000)));
    let text = explanation.to_string();
    for needle in [
        "Job 2 is pending: Priority",
        "Job 1 holds the backfill reservation",
        "lack features ib: n1,n3",
        "Estimated start: in 15s",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    let held = why(&input, Timestamp(NOW), JobId(3)).to_string();
    assert!(
        held.contains("Waits for dependency afterok:100 (that job is running)"),
        "{held}"
    );
    let top = why(&input, Timestamp(NOW), JobId(1));
    assert_eq!(top.estimated_start, Some(Timestamp(NOW + 5000)));
    assert!(
        top.to_string().contains("have too few free CPUs: n1"),
        "{top}"
    );
}

#[test]
fn held_jobs_never_start_nor_reserve_and_say_who_held_them() {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up)]);
    input.running = vec![running(100, &["n1"], 4, NOW + HOUR)];
    // The oldest job would be the top job and reserve both nodes; held, it blocks nobody.
    let mut by_owner = pending(1, 0, 2, 4, HOUR);
    by_owner.held = Some(JobHold::User);
    let mut by_root = pending(2, 10, 1, 4, 1000);
    by_root.held = Some(JobHold::Admin);
    input.pending = vec![by_owner, by_root, pending(3, 20, 1, 4, 2 * HOUR)];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), [3]);
    assert_eq!(waiting(&plan, 1).reason, PendingReason::JobHeldUser);
    assert_eq!(waiting(&plan, 2).reason, PendingReason::JobHeldAdmin);
    assert_eq!(waiting(&plan, 1).estimated_start, None);
    assert!(plan.top_job.is_none(), "{:?}", plan.top_job);

    let explanation = why(&input, Timestamp(NOW), JobId(1));
    assert_eq!(explanation.reason, Some(PendingReason::JobHeldUser));
    assert!(
        explanation.to_string().contains("Held by its owner"),
        "{explanation}"
    );
    let explanation = why(&input, Timestamp(NOW), JobId(2)).to_string();
    assert!(explanation.contains("Held by root"), "{explanation}");
}
