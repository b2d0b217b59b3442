//! Property tests: random clusters (with partitions, features, GRES, advance reservations, arrays,
//! dependencies and preempting QOS), running jobs and queues; every plan must pass
//! `invariants::check`, be deterministic, and never delay the top job (re-planned to confirm).

use beowulf_scheduler::{
    AdvanceReservation, ArrayMember, Association, Constraint, Dependency, JobOutcome,
    NodeAvailability, NodeView, Partition, PendingJob, Plan, PreemptMode, PriorityWeights, Qos,
    RunningJob, SchedulerInput, invariants, plan,
};
use beowulf_types::{JobHold, JobId, NodeName, PendingReason, Resources, Timestamp};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeMap, BTreeSet};

const NOW: u64 = 10_000_000;
/// Memory is drawn in units of this many MiB, so memory, not only CPUs, sometimes decides.
const MEMORY_UNIT_MB: u64 = 512;

#[derive(Debug, Clone)]
struct Scenario {
    input: SchedulerInput,
    seed: u64,
}

/// Times drawn from a few round values as well as at random, so ends and shadow times often tie.
fn span() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(1000u64),
        Just(5000),
        Just(10_000),
        Just(4999),
        Just(5001),
        1u64..30_000,
    ]
}

fn availability() -> impl Strategy<Value = NodeAvailability> {
    prop_oneof![
        6 => Just(NodeAvailability::Up),
        2 => Just(NodeAvailability::Drain),
        2 => Just(NodeAvailability::Down),
    ]
}

/// Features `a` and `b` by bit.
const FEATURES: [&str; 2] = ["a", "b"];
const USERS: [&str; 2] = ["u0", "u1"];
/// The array every generated array element belongs to, throttled to this many running elements.
const ARRAY: JobId = JobId(500);
const ARRAY_MAX: u32 = 2;

fn mask_set(mask: u16, names: &[NodeName]) -> BTreeSet<NodeName> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| n.clone())
        .collect()
}

/// Site policy, drawn per scenario: (partitions on, p1 mask, p1 max time, p1 max nodes, p1 only
/// u0), reservations as (mask, start offset, length, only u0, maintenance), QOS on.
type PolicyDraw = (
    (bool, u16, Option<u64>, Option<u32>, bool),
    Vec<(u16, u64, u64, bool, bool)>,
    bool,
);

fn policy() -> impl Strategy<Value = PolicyDraw> {
    (
        (
            prop::bool::weighted(0.4),
            any::<u16>(),
            prop::option::weighted(0.3, span()),
            prop::option::weighted(0.3, 1u32..=3),
            prop::bool::weighted(0.2),
        ),
        prop::collection::vec(
            (
                any::<u16>(),
                0u64..20_000,
                span(),
                any::<bool>(),
                prop::bool::weighted(0.2),
            ),
            0usize..=2,
        )
        .prop_flat_map(|r| (Just(r), prop::bool::weighted(0.35)))
        .prop_map(|(r, on)| if on { r } else { Vec::new() }),
        prop::bool::weighted(0.3),
    )
}

/// Per pending job: (partition choice, user, constraint choice, GPUs, reservation choice, array
/// member, dependency choice, high QOS).
type JobPolicy = (u8, usize, u8, u32, u8, bool, u8, bool);

fn job_policy() -> impl Strategy<Value = JobPolicy> {
    (
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        0usize..2,
        prop_oneof![10 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        prop_oneof![12 => Just(0u32), 3 => Just(1u32), 2 => Just(2u32), 1 => Just(3u32)],
        prop_oneof![16 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop::bool::weighted(0.2),
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        prop::bool::weighted(0.15),
    )
}

/// Per pending job: (required nodes mask, bit 15 an unknown node; excluded nodes mask; exclusive;
/// begin time).
type Placement = (u16, u16, bool, Option<u64>);

fn placement() -> impl Strategy<Value = Placement> {
    (
        prop_oneof![10 => Just(0u16), 2 => (0u16..12).prop_map(|b| 1 << b), 1 => any::<u16>()],
        prop_oneof![10 => Just(0u16), 1 => any::<u16>()],
        prop::bool::weighted(0.15),
        prop_oneof![10 => Just(None), 1 => Just(Some(NOW + 1000)), 1 => Just(Some(NOW - 10))],
    )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    // (CPUs, memory units, availability, feature bits, GPUs)
    let nodes = prop::collection::vec(
        (
            1u32..=16,
            2u64..=16,
            availability(),
            0u8..4,
            prop_oneof![3 => Just(0u32), 1 => 1u32..=2],
        ),
        1..=12,
    );
    // (node mask, CPUs per node, memory units per node, end offset, overdue by, GPUs, low QOS,
    // array member)
    let running = prop::collection::vec(
        (
            any::<u16>(),
            1u32..=8,
            0u64..=8,
            span(),
            prop_oneof![4 => Just(0u64), 1 => 1u64..5000],
            0u32..=1,
            any::<bool>(),
            prop::bool::weighted(0.2),
        ),
        0..10,
    );
    // (age, nodes, CPUs per node, memory units per node, time limit)
    let pending = prop::collection::vec(
        (
            (
                0u64..1_000_000,
                prop_oneof![8 => 1u32..=2, 4 => 3u32..=4, 1 => Just(0u32), 1 => 5u32..=13],
                prop_oneof![1 => Just(0u32), 8 => 1u32..=4, 3 => 5u32..=16],
                prop_oneof![3 => 0u64..=2, 1 => 3u64..=10],
                span(),
            ),
            job_policy(),
            placement(),
        ),
        0..30,
    );
    let weights = (
        0u32..=1000,
        prop_oneof![Just(0u64), 1u64..2_000_000],
        0u32..=1000,
        prop_oneof![Just(0u32), 0u32..=1000],
        prop_oneof![Just(0u32), 0u32..=1000],
    );
    (nodes, running, pending, weights, policy(), any::<u64>()).prop_map(
        |(nodes, running, pending, weights, policy, seed)| {
            let (age_weight, max_age, size_weight, fairshare_weight, qos_weight) = weights;
            let ((partitions_on, p1_mask, p1_time, p1_nodes, p1_only_u0), reservations, qos_on) =
                policy;
            let nodes: BTreeMap<NodeName, NodeView> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (cpus, memory, availability, features, gpus))| {
                    let view = NodeView {
                        capacity: Resources::new(cpus, memory * MEMORY_UNIT_MB),
                        availability,
                        features: FEATURES
                            .iter()
                            .enumerate()
                            .filter(|(bit, _)| features & (1 << bit) != 0)
                            .map(|(_, f)| f.to_string())
                            .collect(),
                        gres: if gpus > 0 {
                            BTreeMap::from([("gpu".to_string(), gpus)])
                        } else {
                            BTreeMap::new()
                        },
                    };
                    (NodeName::new(format!("n{i:02}")), view)
                })
                .collect();
            let names: Vec<NodeName> = nodes.keys().cloned().collect();
            // Running jobs only on Up and Drain nodes, clamped to what is left of each node.
            let mut left: Vec<Resources> = nodes.values().map(|view| view.capacity).collect();
            let mut gpus_left: Vec<u32> = nodes
                .values()
                .map(|v| v.gres.get("gpu").copied().unwrap_or(0))
                .collect();
            let mut running_jobs = Vec::new();
            for (index, (mask, cpus, memory, end, overdue, gpus, low, member)) in
                running.into_iter().enumerate()
            {
                let mut allocation = BTreeMap::new();
                for (node, name) in names.iter().enumerate() {
                    if mask & (1 << node) == 0
                        || nodes[name].availability == NodeAvailability::Down
                        || gpus_left[node] < gpus
                    {
                        continue;
                    }
                    let take = Resources::new(
                        cpus.min(left[node].cpus),
                        (memory * MEMORY_UNIT_MB).min(left[node].memory_mb),
                    );
                    if take.is_zero() {
                        continue;
                    }
                    left[node] = left[node].saturating_sub(&take);
                    allocation.insert(name.clone(), take);
                }
                if gpus > 0 {
                    for name in allocation.keys() {
                        let node = names.iter().position(|n| n == name).unwrap();
                        gpus_left[node] -= gpus;
                    }
                }
                if !allocation.is_empty() {
                    let id = 1000 + index as u64;
                    running_jobs.push(RunningJob {
                        id: JobId(id),
                        allocation,
                        expected_end: Timestamp(NOW + end - overdue),
                        gres_per_node: if gpus > 0 {
                            BTreeMap::from([("gpu".to_string(), gpus)])
                        } else {
                            BTreeMap::new()
                        },
                        user: USERS[index % 2].to_string(),
                        name: format!("job{}", index % 3),
                        qos: low.then(|| "low".to_string()),
                        priority: id,
                        array: member.then_some(ArrayMember {
                            array: ARRAY,
                            index: id as u32,
                            max_running: Some(ARRAY_MAX),
                        }),
                        // Some running jobs have their nodes alone (here even where the generator
                        // packed others beside them: nothing new may join either way).
                        exclusive: index % 4 == 0,
                    });
                }
            }
            let mut partitions = BTreeMap::new();
            if partitions_on {
                partitions.insert(
                    "p0".to_string(),
                    Partition {
                        default: true,
                        ..Default::default()
                    },
                );
                partitions.insert(
                    "p1".to_string(),
                    Partition {
                        nodes: mask_set(p1_mask, &names),
                        max_time: p1_time,
                        max_nodes: p1_nodes,
                        allowed_users: if p1_only_u0 {
                            BTreeSet::from(["u0".to_string()])
                        } else {
                            BTreeSet::new()
                        },
                        priority_factor: 2,
                        ..Default::default()
                    },
                );
            }
            let reservations: BTreeMap<String, AdvanceReservation> = reservations
                .into_iter()
                .enumerate()
                .map(|(i, (mask, offset, length, only_u0, maintenance))| {
                    let start = Timestamp(NOW - 5000 + offset);
                    (
                        format!("r{i}"),
                        AdvanceReservation {
                            nodes: mask_set(mask, &names),
                            all_nodes: false,
                            start,
                            end: start.plus(length),
                            users: if only_u0 {
                                BTreeSet::from(["u0".to_string()])
                            } else {
                                BTreeSet::new()
                            },
                            maintenance,
                        },
                    )
                })
                .collect();
            let pending_count = pending.len() as u64;
            let pending = pending
                .into_iter()
                .enumerate()
                .map(
                    |(index, ((age, nodes, cpus, memory, time_limit), policy, placement))| {
                        let (required, excluded, exclusive, begin) = placement;
                        let mut required_nodes = mask_set(required & 0x7fff, &names);
                        if required & 0x8000 != 0 {
                            required_nodes.insert(NodeName::new("ghost"));
                        }
                        let (
                            partition,
                            user,
                            constraint,
                            gpus,
                            reservation,
                            member,
                            dependency,
                            high,
                        ) = policy;
                        let id = index as u64 + 1;
                        PendingJob {
                            id: JobId(id),
                            submitted: Timestamp(NOW - age),
                            nodes,
                            per_node: Resources::new(cpus, memory * MEMORY_UNIT_MB),
                            time_limit,
                            partition: match partition {
                                0 => None,
                                1 => Some("p1".to_string()),
                                2 => Some("p0".to_string()),
                                _ => Some("nope".to_string()),
                            }
                            .filter(|_| partitions_on || partition == 3),
                            user: USERS[user].to_string(),
                            groups: BTreeSet::new(),
                            account: format!("acct{}", user),
                            qos: (qos_on && high).then(|| "high".to_string()),
                            name: format!("job{}", index % 3),
                            dependencies: match dependency {
                                0 => vec![],
                                1 => vec![Dependency::Singleton],
                                2 => vec![Dependency::AfterOk(JobId((id % pending_count) + 1))],
                                _ => vec![Dependency::AfterAny(JobId(1000 + id % 4))],
                            },
                            constraint: match constraint {
                                0 => None,
                                1 => Some(Constraint::parse("a").unwrap()),
                                2 => Some(Constraint::parse("a|b").unwrap()),
                                _ => Some(Constraint::parse("a&b").unwrap()),
                            },
                            gres_per_node: match gpus {
                                0 => BTreeMap::new(),
                                3 => BTreeMap::from([("fpga".to_string(), 1)]),
                                n => BTreeMap::from([("gpu".to_string(), n)]),
                            },
                            reservation: match reservation {
                                0 => None,
                                1 => Some("r0".to_string()),
                                _ => Some("r1".to_string()),
                            },
                            array: member.then_some(ArrayMember {
                                array: ARRAY,
                                index: id as u32,
                                max_running: Some(ARRAY_MAX),
                            }),
                            // A few held jobs, of both kinds: never started, never blocking.
                            held: id.is_multiple_of(7).then_some(if id.is_multiple_of(2) {
                                JobHold::Admin
                            } else {
                                JobHold::User
                            }),
                            required_nodes,
                            excluded_nodes: mask_set(excluded, &names),
                            exclusive,
                            begin: begin.map(Timestamp),
                        }
                    },
                )
                .collect();
            let qos = if qos_on {
                BTreeMap::from([
                    (
                        "high".to_string(),
                        Qos {
                            priority: 10,
                            preempts: BTreeSet::from(["low".to_string()]),
                            preempt_mode: PreemptMode::Off,
                        },
                    ),
                    (
                        "low".to_string(),
                        Qos {
                            priority: 0,
                            preempts: BTreeSet::new(),
                            preempt_mode: PreemptMode::Requeue,
                        },
                    ),
                ])
            } else {
                BTreeMap::new()
            };
            Scenario {
                input: SchedulerInput {
                    nodes,
                    running: running_jobs,
                    pending,
                    weights: PriorityWeights {
                        age_weight,
                        max_age,
                        size_weight,
                        fairshare_weight,
                        partition_weight: 100,
                        qos_weight,
                    },
                    partitions,
                    qos,
                    reservations,
                    usage: BTreeMap::from([
                        (Association::User("u0".to_string()), 1000.0),
                        (Association::Account("acct1".to_string()), 10.0),
                    ]),
                    shares: BTreeMap::new(),
                    job_outcomes: BTreeMap::from([
                        (JobId(1000), JobOutcome::Completed),
                        (JobId(1001), JobOutcome::Failed),
                    ]),
                },
                seed,
            }
        },
    )
}

fn plan_with(input: &SchedulerInput, seed: u64) -> Plan {
    plan(input, Timestamp(NOW), &mut StdRng::seed_from_u64(seed))
}

/// The top job: the highest-priority job waiting for `Resources` (all before it started or can
/// never fit).
fn top_job(input: &SchedulerInput, plan: &Plan) -> Option<JobId> {
    let submitted: BTreeMap<JobId, Timestamp> = input
        .pending
        .iter()
        .map(|job| (job.id, job.submitted))
        .collect();
    plan.pending
        .iter()
        .filter(|(_, pending)| {
            pending.reason == PendingReason::Resources
                || (pending.reason == PendingReason::Reservation
                    && pending.estimated_start.is_some())
        })
        .min_by_key(|(id, pending)| (std::cmp::Reverse(pending.priority), submitted[id], **id))
        .map(|(id, _)| *id)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) no oversubscription, (b) no start on Drain/Down, (c) exactly `nodes` distinct nodes,
    /// (d) every pending job started xor waiting, (e) the top job is not delayed, plus reason
    /// consistency: all of it through the reusable checker.
    #[test]
    fn every_plan_keeps_the_invariants(scenario in scenario()) {
        let plan = plan_with(&scenario.input, scenario.seed);
        if let Err(problem) = invariants::check(&scenario.input, Timestamp(NOW), &plan) {
            return Err(TestCaseError::fail(format!("{problem}\nplan: {plan:#?}")));
        }
    }

    #[test]
    fn starts_only_on_up_nodes_with_distinct_nodes_and_no_oversubscription(scenario in scenario()) {
        let input = &scenario.input;
        let plan = plan_with(input, scenario.seed);
        let mut used: BTreeMap<&NodeName, (u64, u64)> = BTreeMap::new();
        for job in &input.running {
            for (name, amount) in &job.allocation {
                let entry = used.entry(name).or_default();
                entry.0 += u64::from(amount.cpus);
                entry.1 += amount.memory_mb;
            }
        }
        let jobs: BTreeMap<JobId, &PendingJob> = input.pending.iter().map(|j| (j.id, j)).collect();
        for start in &plan.starts {
            let distinct: BTreeSet<&NodeName> = start.nodes.iter().collect();
            prop_assert_eq!(distinct.len(), jobs[&start.job].nodes as usize);
            prop_assert_eq!(start.nodes.len(), distinct.len());
            for name in &start.nodes {
                prop_assert_eq!(input.nodes[name].availability, NodeAvailability::Up);
                let entry = used.entry(name).or_default();
                entry.0 += u64::from(start.per_node.cpus);
                entry.1 += start.per_node.memory_mb;
            }
        }
        let touched: BTreeSet<&NodeName> = plan.starts.iter().flat_map(|s| &s.nodes).collect();
        for name in touched {
            let capacity = input.nodes[name].capacity;
            prop_assert!(used[name].0 <= u64::from(capacity.cpus), "{} CPUs", name);
            prop_assert!(used[name].1 <= capacity.memory_mb, "{} memory", name);
        }
        let started: BTreeSet<JobId> = plan.starts.iter().map(|s| s.job).collect();
        prop_assert_eq!(started.len(), plan.starts.len());
        for job in &input.pending {
            prop_assert!(started.contains(&job.id) != plan.pending.contains_key(&job.id));
        }
        prop_assert_eq!(started.len() + plan.pending.len(), jobs.len());
    }

    /// (e) again, literally: add the plan's starts as running jobs ending at now + time limit,
    /// re-plan the top job alone, and its estimated start must not be later than the plan's.
    #[test]
    fn backfill_never_delays_the_top_job(scenario in scenario()) {
        let input = &scenario.input;
        let plan = plan_with(input, scenario.seed);
        let Some(top) = top_job(input, &plan) else {
            return Ok(());
        };
        let estimate = plan.pending[&top].estimated_start;
        prop_assert!(estimate.is_some(), "top job {} has no estimate", top);
        let mut replay = input.clone();
        let jobs: BTreeMap<JobId, &PendingJob> = input.pending.iter().map(|j| (j.id, j)).collect();
        for start in &plan.starts {
            replay.running.push(RunningJob {
                id: start.job,
                allocation: start.nodes.iter().map(|n| (n.clone(), start.per_node)).collect(),
                expected_end: Timestamp(NOW).plus(jobs[&start.job].time_limit),
                gres_per_node: jobs[&start.job].gres_per_node.clone(),
                exclusive: jobs[&start.job].exclusive,
                ..Default::default()
            });
        }
        // Nodes held for preemptors: filled by a job that may end any moment, as the pass's
        // timeline (which counts them free) sees them.
        for (index, name) in plan.held_for_preemptors.values().flatten().enumerate() {
            replay.running.push(RunningJob {
                id: JobId(90_000 + index as u64),
                allocation: BTreeMap::from([(name.clone(), input.nodes[name].capacity)]),
                expected_end: Timestamp(NOW),
                gres_per_node: input.nodes[name].gres.clone(),
                ..Default::default()
            });
        }
        let mut alone = jobs[&top].clone();
        // Alone it must not preempt what others preempted, nor count itself against its array.
        alone.qos = None;
        alone.array = None;
        replay.pending = vec![alone];
        let again = plan_with(&replay, scenario.seed);
        if !again.starts.is_empty() {
            // Held nodes look free to the timeline, and a filler job cannot keep a job asking
            // for nothing off them: the top job then was due now anyway.
            prop_assert!(
                !plan.held_for_preemptors.is_empty() && estimate == Some(Timestamp(NOW)),
                "top job {} fits now after all",
                top
            );
            return Ok(());
        }
        let again = &again.pending[&top];
        // Later starts may have taken what advance reservations kept it from: either reason.
        prop_assert!(
            matches!(again.reason, PendingReason::Resources | PendingReason::Reservation),
            "{:?}",
            again.reason
        );
        prop_assert!(again.estimated_start <= estimate, "{:?} > {:?}", again.estimated_start, estimate);
    }

    #[test]
    fn same_input_and_rng_state_give_the_same_plan(scenario in scenario()) {
        let first = plan_with(&scenario.input, scenario.seed);
        let second = plan_with(&scenario.input, scenario.seed);
        prop_assert_eq!(&first, &second);
        // Input order of the queue does not matter either.
        let mut reversed = scenario.input.clone();
        reversed.pending.reverse();
        prop_assert_eq!(first, plan_with(&reversed, scenario.seed));
    }
}

#[test]
#[ignore = "prints how often generated scenarios reach each branch"]
fn coverage_of_generated_scenarios() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..2000 {
        let scenario = scenario().new_tree(&mut runner).unwrap().current();
        let plan = plan_with(&scenario.input, scenario.seed);
        let top = top_job(&scenario.input, &plan);
        *counts.entry("cases").or_default() += 1;
        if let Some(top) = top {
            *counts.entry("has top job").or_default() += 1;
            let top_priority = plan.pending[&top].priority;
            if plan.starts.iter().any(|s| s.priority < top_priority) {
                *counts.entry("backfilled below top").or_default() += 1;
            }
        }
        for pending in plan.pending.values() {
            *counts.entry(pending.reason.as_str()).or_default() += 1;
        }
        *counts.entry("starts").or_default() += plan.starts.len();
        *counts.entry("preemptions").or_default() += plan.preemptions.len();
    }
    println!("{counts:#?}");
}
