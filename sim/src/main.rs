//! `beowulf-sim`: replay an SWF trace or a synthetic workload through the scheduler, run scenario
//! files, or time one pass over a large cluster.

#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use beowulf_sim::big_pass::{self, BigPassConfig};
use beowulf_sim::synth::{self, SynthConfig};
use beowulf_sim::{Cluster, Job, Policy, Report, SimConfig, scenario, simulate, swf, workload};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "beowulf-sim",
    about = "Discrete-event simulator over the Beowulf scheduler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a trace in the Standard Workload Format on N nodes × C CPUs.
    Replay {
        trace: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Generate a seeded synthetic workload, optionally write it as SWF, and replay it.
    Synth {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Offered load (CPU·time asked for / cluster CPU·time over the arrival span).
        #[arg(long, default_value_t = 0.9)]
        load: f64,
        /// Write the generated trace here (SWF), to replay it later with `replay`.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run scenario files and compare with their expectations; prints each job's outcome.
    Scenario { files: Vec<PathBuf> },
    /// Time one full scheduling pass over a large cluster and queue; prints time and peak RSS.
    Pass {
        #[arg(long, default_value_t = 10_000)]
        nodes: u32,
        #[arg(long, default_value_t = 64)]
        cpus: u32,
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        /// Share of nodes running a job.
        #[arg(long, default_value_t = 0.5)]
        busy: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Skip the invariant check of the plan.
        #[arg(long)]
        no_check: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long)]
    nodes: u32,
    #[arg(long)]
    cpus: u32,
    #[arg(long, value_enum, default_value_t = PolicyArg::Easy)]
    policy: PolicyArg,
    /// Run the invariant checker after every scheduler call; stop at the first violation.
    #[arg(long)]
    check: bool,
    /// Also run a pass every this many seconds (besides after every event batch).
    #[arg(long)]
    interval: Option<u64>,
    /// Seed for the workload generator and the scheduler's rng.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PolicyArg {
    Easy,
    Fcfs,
    Both,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Replay { trace, run } => {
            let text = std::fs::read_to_string(&trace)
                .with_context(|| format!("reading {}", trace.display()))?;
            let parsed = swf::parse_str(&trace.display().to_string(), &text)?;
            replay(&parsed, &run)
        }
        Command::Synth {
            jobs,
            load,
            out,
            run,
        } => {
            let config = SynthConfig {
                load,
                ..SynthConfig::new(jobs, run.nodes, run.cpus, run.seed)
            };
            let trace = synth::generate(&config);
            if let Some(out) = out {
                std::fs::write(&out, swf::write(&trace))
                    .with_context(|| format!("writing {}", out.display()))?;
                println!("trace: {}", out.display());
            }
            replay(&trace, &run)
        }
        Command::Scenario { files } => run_scenarios(&files),
        Command::Pass {
            nodes,
            cpus,
            jobs,
            busy,
            seed,
            no_check,
        } => {
            let config = BigPassConfig {
                nodes,
                cpus,
                jobs,
                busy_share: busy,
                seed,
                check: !no_check,
            };
            let input = big_pass::build(&config);
            let cpu_before = cpu_time_ms()?;
            let result = big_pass::pass(&input, &config)?;
            let cpu = cpu_time_ms()? - cpu_before;
            println!("nodes: {}", result.nodes);
            println!("running: {}", result.running);
            println!("pending: {}", result.pending);
            println!("starts: {}", result.starts);
            println!("waiting: {}", result.waiting);
            println!(
                "pass_time_ms: {:.1}",
                result.plan_time.as_secs_f64() * 1000.0
            );
            if !no_check {
                println!(
                    "check_time_ms: {:.1}",
                    result.check_time.as_secs_f64() * 1000.0
                );
            }
            // CPU time, unlike wall-clock time, is not inflated by other load (10 ms resolution).
            let cpu_label = if no_check {
                "pass_cpu_ms"
            } else {
                "pass_and_check_cpu_ms"
            };
            println!("{cpu_label}: {cpu}");
            println!("peak_rss_mib: {}", peak_rss_mib()?);
            Ok(())
        }
    }
}

fn replay(trace: &swf::Trace, run: &RunArgs) -> Result<()> {
    let (jobs, skipped) = workload::jobs_from_swf(&trace.jobs, run.nodes, run.cpus);
    println!("cluster: {} nodes x {} cpus", run.nodes, run.cpus);
    println!("trace_jobs: {}", trace.jobs.len());
    println!("skipped_jobs: {}", skipped.total());
    let policies = match run.policy {
        PolicyArg::Easy => vec![Policy::Easy],
        PolicyArg::Fcfs => vec![Policy::Fcfs],
        PolicyArg::Both => Policy::ALL.to_vec(),
    };
    let reports = policies
        .into_iter()
        .map(|policy| simulate_one(&jobs, policy, run))
        .collect::<Result<Vec<_>>>()?;
    match reports.as_slice() {
        [report] => print!("{}", report.lines()),
        reports => print!("{}", beowulf_sim::report::table(reports)),
    }
    Ok(())
}

fn simulate_one(jobs: &[Job], policy: Policy, run: &RunArgs) -> Result<Report> {
    let config = SimConfig {
        policy,
        check: run.check,
        seed: run.seed,
        interval: run.interval.map(|seconds| seconds * 1000),
    };
    let outcome = simulate(
        Cluster::uniform(run.nodes, run.cpus),
        jobs.to_vec(),
        Vec::new(),
        &config,
    )?;
    Ok(Report::new(&outcome))
}

fn run_scenarios(files: &[PathBuf]) -> Result<()> {
    let mut failed = 0;
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let parsed = scenario::parse(&file.display().to_string(), &text)?;
        match scenario::run(&parsed) {
            Ok(outcomes) => {
                for outcome in outcomes {
                    println!("{} ({}): ok", file.display(), outcome.policy);
                    print!("{}", scenario::describe(&outcome));
                }
            }
            Err(error) => {
                failed += 1;
                eprintln!("{error}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} scenario(s) failed", files.len());
    }
    Ok(())
}

/// User + system CPU time of this process so far (fields 14 and 15 of /proc/self/stat), in ms.
fn cpu_time_ms() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    let after_name = stat
        .rsplit_once(')')
        .context("no `)` in /proc/self/stat")?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .context("/proc/self/stat is too short")?
            .parse::<u64>()
            .context("CPU time in /proc/self/stat is not a number")
    };
    // Field 3 (state) is fields[0], so utime (14) is fields[11] and stime (15) fields[12].
    let ticks_per_second = 100; // USER_HZ, 100 on every Linux architecture Beowulf runs on
    Ok((ticks(11)? + ticks(12)?) * 1000 / ticks_per_second)
}

/// The process's peak resident set size (VmHWM in /proc/self/status), in MiB.
fn peak_rss_mib() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM has no value")?
        .parse()
        .context("VmHWM is not a number")?;
    Ok(kib / 1024)
}
