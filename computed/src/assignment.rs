//! A job run's part on this node as the agent carries it out ([`Assignment`]), and the agent's
//! one edge where the head's wire assignment (`v1::Assignment`) becomes it.
//!
//! ```text
//!  v1::DesiredState ─▶ fill left-out payloads (agent) ─▶ Assignment::try_from, per run
//!        ├─ every one valid: the agent's core (reconcile, launcher, MPI, output) uses these
//!        └─ one refused (AssignmentError): nothing of that desired state is applied
//! ```
//!
//! The type lives here, not in `beowulf-types`, because it is the agent's view alone: the head
//! builds its wire assignments straight from its job records and never needs this one, and the
//! shared vocabulary (node names, run keys, fabrics, MPI flavours, timestamps) it is made of is
//! already in `beowulf-types`. The conversion is here with it, so that what the wire could get
//! wrong is checked in one place, once, as a desired state arrives: a node name that is none, a
//! rank range that overflows or goes beyond the job's ranks, an index outside the node list.
//! The agent's core then reads typed fields (paths, node names, a rank range, the umask with its
//! default applied) and never a wire string or a bare number of the wire again.

use beowulf_proto::v1;
use beowulf_types::{JobSignal, MpiFlavor, NodeName, RunFabric, RunKey, SignalScope, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;

/// The umask of jobs whose submitter sent none (older clients): the usual login default.
pub const DEFAULT_UMASK: u32 = 0o022;

/// Longest node name taken: a DNS name's limit.
const MAX_NODE_NAME: usize = 253;

/// One job run's part on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub key: RunKey,
    pub job_name: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group of the user, the primary one included, as the head looked them up at submit;
    /// empty from heads that did not send them (the agent then looks them up).
    pub gids: Vec<u32>,
    /// The submitter's umask for the tasks and their output files ([`DEFAULT_UMASK`] when the
    /// head sent none).
    pub umask: u32,
    /// Index of this node in `nodelist` (SLURM_NODEID).
    pub node_index: u32,
    /// The run's nodes, in allocation order; each named once.
    pub nodelist: Vec<NodeName>,
    /// The job's total number of ranks.
    pub ntasks: u32,
    /// The ranks run here: within `0..ntasks`.
    pub ranks: Range<u32>,
    pub cpus_per_task: u32,
    /// CPUs and memory of the run on this node (its cgroup's limits).
    pub cpus: u32,
    pub memory_mb: u64,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    /// When the run must be stopped (start + time limit).
    pub deadline: Timestamp,
    pub partition: String,
    /// The image to stage on this node, when the job runs in a container.
    pub image: Option<ContainerImage>,
    /// The MPI wiring, for MPI jobs.
    pub mpi: Option<MpiLaunch>,
    /// Where this node's tasks' output goes, when the run's tasks write on several nodes.
    pub output: Option<OutputForward>,
    /// For batch scripts: what `srun` in the script needs to start job steps.
    pub steps: Option<StepLaunch>,
    /// The signal the job asked for before its time limit (`--signal`).
    pub warn_signal: Option<WarnSignal>,
    /// Signals users sent to the run (`scancel --signal`), numbered from 1.
    pub signals: Vec<RunSignal>,
    /// Generic resources the run has on this node (`gpu` = 2).
    pub gres: BTreeMap<String, u32>,
}

/// A signal a user sent to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSignal {
    /// From 1 per run: each is delivered once.
    pub seq: u32,
    pub signal: nix::sys::signal::Signal,
    pub scope: SignalScope,
}

/// A signal a job asked for before its time limit (sbatch's `--signal=[B:]SIG@TIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarnSignal {
    pub signal: nix::sys::signal::Signal,
    /// Sent this long before the run's deadline.
    pub before_ms: u64,
    /// Only the batch script's own shell; else the job's steps' tasks.
    pub batch_only: bool,
}

impl Assignment {
    /// How many ranks run here.
    pub fn local_tasks(&self) -> u32 {
        self.ranks.end - self.ranks.start
    }

    /// The MPI wiring of a run whose ranks every node's agent starts itself (direct launch).
    pub fn direct_mpi(&self) -> Option<&MpiLaunch> {
        self.mpi.as_ref().filter(|m| m.direct)
    }
}

/// The image a container run stages on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    /// As the job file named it: an absolute path for a user's tarball, else a stored image's
    /// name.
    pub reference: String,
    /// `sha256:<hex>` of the rootfs tar: the key of the node-local image cache.
    pub digest: String,
    /// The rootfs tar on the shared area.
    pub tar_path: PathBuf,
}

/// The MPI wiring of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiLaunch {
    pub flavor: MpiFlavor,
    pub fabric: RunFabric,
    /// The run's launch credential.
    pub token: String,
    /// Launch endpoint (`host:port` of AgentLaunch) of the run's nodes.
    pub endpoints: BTreeMap<NodeName, String>,
    /// Ranks per node, in nodelist order (as many as the run has nodes).
    pub tasks_per_node: Vec<u32>,
    /// Every node's agent starts its ranks itself (PMIx); else the first node runs mpirun.
    pub direct: bool,
}

impl MpiLaunch {
    /// The run's ranks on all its nodes (fits a `u32`: checked by the conversion).
    pub fn ranks(&self) -> u32 {
        self.tasks_per_node
            .iter()
            .fold(0u32, |sum, n| sum.saturating_add(*n))
    }
}

/// What the agents of a batch script's nodes need to start its job steps (`srun`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLaunch {
    /// The run's credential: steps are started only for requests carrying it.
    pub token: String,
    /// Launch endpoint (`host:port` of AgentLaunch) of the run's nodes.
    pub endpoints: BTreeMap<NodeName, String>,
}

/// Where the output of a run's tasks goes when they write on several nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputForward {
    /// Index in the nodelist of the node whose agent writes the output files.
    pub writer_index: u32,
    /// That node.
    pub writer: NodeName,
    /// Launch endpoint of the writer's agent.
    pub writer_endpoint: String,
    /// The run's credential: the writer takes output only with it.
    pub token: String,
}

/// Why the agent refuses an assignment of the head: each names the run and the wire field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("job {run}: {field} names {name:?}, which is not a node name: {reason}")]
    NodeName {
        run: RunKey,
        field: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("job {run}: nodelist names node {node} twice")]
    DuplicateNode { run: RunKey, node: NodeName },
    #[error("job {run}: node_index {node_index} is outside the nodelist of {nodes} nodes")]
    NodeIndex {
        run: RunKey,
        node_index: u32,
        nodes: usize,
    },
    #[error("job {run}: first_rank {first_rank} + local_tasks {local_tasks} overflows")]
    RankOverflow {
        run: RunKey,
        first_rank: u32,
        local_tasks: u32,
    },
    #[error(
        "job {run}: first_rank {} + local_tasks {} gives ranks {}..{}, beyond ntasks {ntasks}",
        ranks.start,
        ranks.end - ranks.start,
        ranks.start,
        ranks.end
    )]
    RanksBeyondNtasks {
        run: RunKey,
        ranks: Range<u32>,
        ntasks: u32,
    },
    #[error("job {run}: umask {umask:#o} has bits beyond 0o777")]
    Umask { run: RunKey, umask: u32 },
    #[error(
        "job {run}: argv and env are left out (payload_omitted) and were not filled in from an \
         earlier desired state"
    )]
    PayloadOmitted { run: RunKey },
    #[error(
        "job {run}: output.writer_index {writer_index} is outside the nodelist of {nodes} nodes"
    )]
    WriterIndex {
        run: RunKey,
        writer_index: u32,
        nodes: usize,
    },
    #[error("job {run}: mpi.tasks_per_node has {given} entries for the nodelist's {nodes} nodes")]
    TasksPerNode {
        run: RunKey,
        given: usize,
        nodes: usize,
    },
    #[error("job {run}: mpi.tasks_per_node adds up to more ranks than a u32 holds")]
    RankCount { run: RunKey },
    #[error("job {run}: signal {signal} is not a signal of this system")]
    WarnSignal { run: RunKey, signal: i32 },
}

/// `name` as a node name, or why it is none: a node name is used as a file name, in mpirun's
/// host list (`node:slots,...`), in hostlists (`node[1-3]`) and as a C string (PMIx).
fn node_name(run: RunKey, field: &'static str, name: String) -> Result<NodeName, AssignmentError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NODE_NAME {
        Some("it is longer than 253 bytes")
    } else if name == "." || name == ".." {
        Some("it is a relative directory name")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or a control character")
    } else if name.contains(['/', ',', ':', '[', ']']) {
        Some("it contains one of / , : [ ]")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AssignmentError::NodeName {
            run,
            field,
            name,
            reason,
        }),
        None => Ok(NodeName::new(name)),
    }
}

impl TryFrom<v1::Assignment> for Assignment {
    type Error = AssignmentError;

    /// The wire assignment, checked. Its argv and environment must be there: the agent fills in
    /// those the head left out as already sent before converting.
    fn try_from(a: v1::Assignment) -> Result<Self, AssignmentError> {
        let run = a.run_key();
        if a.payload_omitted {
            return Err(AssignmentError::PayloadOmitted { run });
        }
        let mut nodelist = Vec::with_capacity(a.nodelist.len());
        let mut seen = BTreeSet::new();
        for name in a.nodelist {
            let node = node_name(run, "nodelist", name)?;
            if !seen.insert(node.clone()) {
                return Err(AssignmentError::DuplicateNode { run, node });
            }
            nodelist.push(node);
        }
        let nodes = nodelist.len();
        if a.node_index as usize >= nodes {
            return Err(AssignmentError::NodeIndex {
                run,
                node_index: a.node_index,
                nodes,
            });
        }
        let end = a
            .first_rank
            .checked_add(a.local_tasks)
            .ok_or(AssignmentError::RankOverflow {
                run,
                first_rank: a.first_rank,
                local_tasks: a.local_tasks,
            })?;
        let ranks = a.first_rank..end;
        if end > a.ntasks {
            return Err(AssignmentError::RanksBeyondNtasks {
                run,
                ranks,
                ntasks: a.ntasks,
            });
        }
        let umask = a.umask.unwrap_or(DEFAULT_UMASK);
        if umask & !0o777 != 0 {
            return Err(AssignmentError::Umask { run, umask });
        }
        let output = a
            .output
            .map(|o| {
                let writer = nodelist.get(o.writer_index as usize).cloned().ok_or(
                    AssignmentError::WriterIndex {
                        run,
                        writer_index: o.writer_index,
                        nodes,
                    },
                )?;
                Ok(OutputForward {
                    writer_index: o.writer_index,
                    writer,
                    writer_endpoint: o.writer_endpoint,
                    token: o.token,
                })
            })
            .transpose()?;
        let mpi = a.mpi.map(|m| mpi_launch(run, nodes, m)).transpose()?;
        let steps = a
            .steps
            .map(|s| {
                Ok::<_, AssignmentError>(StepLaunch {
                    token: s.token,
                    endpoints: endpoints(run, "steps.endpoints", s.endpoints)?,
                })
            })
            .transpose()?;
        let warn_signal = a
            .warn_signal
            .map(|w| {
                let signal = nix::sys::signal::Signal::try_from(w.signal).map_err(|_| {
                    AssignmentError::WarnSignal {
                        run,
                        signal: w.signal,
                    }
                })?;
                Ok::<_, AssignmentError>(WarnSignal {
                    signal,
                    before_ms: w.before_ms,
                    batch_only: w.batch_only,
                })
            })
            .transpose()?;
        let signals = a
            .signals
            .iter()
            .map(|s| {
                let signal = nix::sys::signal::Signal::try_from(s.signal).map_err(|_| {
                    AssignmentError::WarnSignal {
                        run,
                        signal: s.signal,
                    }
                })?;
                let s = JobSignal::from(s);
                Ok(RunSignal {
                    seq: s.seq,
                    signal,
                    scope: s.scope,
                })
            })
            .collect::<Result<_, AssignmentError>>()?;
        Ok(Assignment {
            key: run,
            job_name: a.job_name,
            user: a.user,
            uid: a.uid,
            gid: a.gid,
            gids: a.gids,
            umask,
            node_index: a.node_index,
            nodelist,
            ntasks: a.ntasks,
            ranks,
            cpus_per_task: a.cpus_per_task,
            cpus: a.cpus,
            memory_mb: a.memory_mb,
            argv: a.argv,
            env: a.env.into_iter().collect(),
            workdir: PathBuf::from(a.workdir),
            stdout_path: PathBuf::from(a.stdout_path),
            stderr_path: PathBuf::from(a.stderr_path),
            deadline: Timestamp(a.deadline_ms),
            partition: a.partition,
            image: a.image.map(|i| ContainerImage {
                reference: i.reference,
                digest: i.digest,
                tar_path: PathBuf::from(i.tar_path),
            }),
            mpi,
            output,
            steps,
            warn_signal,
            signals,
            gres: a.gres.into_iter().collect(),
        })
    }
}

/// Launch endpoints by node, their names checked.
fn endpoints(
    run: RunKey,
    field: &'static str,
    endpoints: std::collections::HashMap<String, String>,
) -> Result<BTreeMap<NodeName, String>, AssignmentError> {
    endpoints
        .into_iter()
        .map(|(node, endpoint)| Ok((node_name(run, field, node)?, endpoint)))
        .collect()
}

/// The MPI wiring of run `run` on `nodes` nodes, checked.
fn mpi_launch(run: RunKey, nodes: usize, m: v1::MpiLaunch) -> Result<MpiLaunch, AssignmentError> {
    // Unspecified (or unknown) values read as the wire's conversions say: no flavour, TCP.
    let (flavor, fabric) = (m.mpi_flavor(), m.run_fabric());
    if m.tasks_per_node.len() != nodes {
        return Err(AssignmentError::TasksPerNode {
            run,
            given: m.tasks_per_node.len(),
            nodes,
        });
    }
    if m.tasks_per_node
        .iter()
        .try_fold(0u32, |sum, n| sum.checked_add(*n))
        .is_none()
    {
        return Err(AssignmentError::RankCount { run });
    }
    let endpoints = endpoints(run, "mpi.endpoints", m.endpoints)?;
    Ok(MpiLaunch {
        flavor,
        fabric,
        token: m.token,
        endpoints,
        tasks_per_node: m.tasks_per_node,
        direct: m.direct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::JobId;

    const RUN: RunKey = RunKey {
        job: JobId(17),
        run: 2,
    };

    /// Node 1 of a 2-node direct MPI run of 3 ranks in a container, its output forwarded.
    fn wire() -> v1::Assignment {
        v1::Assignment {
            job_id: 17,
            run: 2,
            job_name: "hello".into(),
            user: "alice".into(),
            uid: 1000,
            gid: 1000,
            node_index: 1,
            nodelist: vec!["node1".into(), "node2".into()],
            ntasks: 3,
            first_rank: 2,
            local_tasks: 1,
            cpus_per_task: 1,
            cpus: 2,
            memory_mb: 512,
            argv: vec!["./hello".into()],
            env: [("MARK".to_string(), "x".to_string())].into(),
            workdir: "/home/alice".into(),
            stdout_path: "/home/alice/out".into(),
            stderr_path: "/home/alice/err".into(),
            deadline_ms: 1_700_000_000_000,
            partition: "batch".into(),
            image: Some(v1::ContainerImage {
                reference: "debian".into(),
                digest: "sha256:ab".into(),
                tar_path: "/srv/images/debian.tar".into(),
            }),
            mpi: Some(v1::MpiLaunch {
                flavor: v1::MpiFlavor::Openmpi as i32,
                fabric: v1::RunFabric::Ib as i32,
                token: "secret".into(),
                endpoints: [
                    ("node1".to_string(), "10.0.0.1:7000".to_string()),
                    ("node2".to_string(), "10.0.0.2:7000".to_string()),
                ]
                .into(),
                tasks_per_node: vec![2, 1],
                direct: true,
            }),
            output: Some(v1::OutputForward {
                writer_index: 0,
                writer_endpoint: "10.0.0.1:7000".into(),
                token: "secret".into(),
            }),
            gids: vec![1000, 27],
            umask: Some(0o077),
            payload_omitted: false,
            steps: Some(v1::StepLaunch {
                token: "secret".into(),
                endpoints: [("node2".to_string(), "10.0.0.2:7000".to_string())].into(),
            }),
            warn_signal: Some(v1::WarnSignal {
                signal: 10,
                before_ms: 60_000,
                batch_only: true,
            }),
            signals: vec![v1::JobSignal {
                seq: 1,
                signal: 12,
                scope: v1::SignalScope::Batch as i32,
            }],
            gres: [("gpu".to_string(), 2)].into(),
        }
    }

    #[test]
    fn a_valid_assignment_converts_field_by_field() {
        let a = Assignment::try_from(wire()).unwrap();
        let expected = Assignment {
            key: RUN,
            job_name: "hello".into(),
            user: "alice".into(),
            uid: 1000,
            gid: 1000,
            gids: vec![1000, 27],
            umask: 0o077,
            node_index: 1,
            nodelist: vec![NodeName::new("node1"), NodeName::new("node2")],
            ntasks: 3,
            ranks: 2..3,
            cpus_per_task: 1,
            cpus: 2,
            memory_mb: 512,
            argv: vec!["./hello".into()],
            env: [("MARK".to_string(), "x".to_string())].into(),
            workdir: "/home/alice".into(),
            stdout_path: "/home/alice/out".into(),
            stderr_path: "/home/alice/err".into(),
            deadline: Timestamp(1_700_000_000_000),
            partition: "batch".into(),
            image: Some(ContainerImage {
                reference: "debian".into(),
                digest: "sha256:ab".into(),
                tar_path: "/srv/images/debian.tar".into(),
            }),
            mpi: Some(MpiLaunch {
                flavor: MpiFlavor::Openmpi,
                fabric: RunFabric::Ib,
                token: "secret".into(),
                endpoints: [
                    (NodeName::new("node1"), "10.0.0.1:7000".to_string()),
                    (NodeName::new("node2"), "10.0.0.2:7000".to_string()),
                ]
                .into(),
                tasks_per_node: vec![2, 1],
                direct: true,
            }),
            output: Some(OutputForward {
                writer_index: 0,
                writer: NodeName::new("node1"),
                writer_endpoint: "10.0.0.1:7000".into(),
                token: "secret".into(),
            }),
            steps: Some(StepLaunch {
                token: "secret".into(),
                endpoints: [(NodeName::new("node2"), "10.0.0.2:7000".to_string())].into(),
            }),
            warn_signal: Some(WarnSignal {
                signal: nix::sys::signal::Signal::SIGUSR1,
                before_ms: 60_000,
                batch_only: true,
            }),
            signals: vec![RunSignal {
                seq: 1,
                signal: nix::sys::signal::Signal::SIGUSR2,
                scope: SignalScope::Batch,
            }],
            gres: [("gpu".to_string(), 2)].into(),
        };
        assert_eq!(a, expected);
        assert_eq!(a.local_tasks(), 1);
        assert_eq!(a.mpi.as_ref().map(MpiLaunch::ranks), Some(3));
        assert!(a.direct_mpi().is_some());
    }

    #[test]
    fn what_the_wire_leaves_unset_reads_as_its_defaults() {
        let a = Assignment::try_from(v1::Assignment {
            umask: None,
            image: None,
            mpi: Some(v1::MpiLaunch {
                flavor: v1::MpiFlavor::Unspecified as i32,
                fabric: v1::RunFabric::Unspecified as i32,
                tasks_per_node: vec![0, 1],
                ..Default::default()
            }),
            output: None,
            ..wire()
        })
        .unwrap();
        assert_eq!(a.umask, DEFAULT_UMASK);
        let mpi = a.mpi.unwrap();
        assert_eq!((mpi.flavor, mpi.fabric), (MpiFlavor::None, RunFabric::Tcp));
        assert!(mpi.endpoints.is_empty());
        // A node without ranks of the run (a script's other nodes) is valid.
        let idle = Assignment::try_from(v1::Assignment {
            first_rank: 0,
            local_tasks: 0,
            ..wire()
        })
        .unwrap();
        assert_eq!((idle.ranks.clone(), idle.local_tasks()), (0..0, 0));
    }

    /// Each wrong field is refused with a message naming the run and the field.
    #[test]
    fn what_the_wire_gets_wrong_is_refused_naming_the_run_and_the_field() {
        let mpi = |change: fn(&mut v1::MpiLaunch)| {
            let mut a = wire();
            change(a.mpi.as_mut().unwrap());
            a
        };
        let cases: Vec<(v1::Assignment, &str)> = vec![
            (
                v1::Assignment {
                    nodelist: vec!["node1".into(), "".into()],
                    ..wire()
                },
                "nodelist names \"\", which is not a node name: it is empty",
            ),
            (
                v1::Assignment {
                    nodelist: vec!["node1".into(), "node/2".into()],
                    ..wire()
                },
                "nodelist names \"node/2\"",
            ),
            (
                v1::Assignment {
                    nodelist: vec!["node1".into(), "node 2".into()],
                    ..wire()
                },
                "nodelist names \"node 2\"",
            ),
            (
                v1::Assignment {
                    nodelist: vec!["node1".into(), "node1".into()],
                    ..wire()
                },
                "nodelist names node node1 twice",
            ),
            (
                v1::Assignment {
                    node_index: 2,
                    ..wire()
                },
                "node_index 2 is outside the nodelist of 2 nodes",
            ),
            (
                v1::Assignment {
                    first_rank: u32::MAX,
                    local_tasks: 2,
                    ..wire()
                },
                "first_rank 4294967295 + local_tasks 2 overflows",
            ),
            (
                v1::Assignment {
                    first_rank: 2,
                    local_tasks: 2,
                    ..wire()
                },
                "first_rank 2 + local_tasks 2 gives ranks 2..4, beyond ntasks 3",
            ),
            (
                v1::Assignment {
                    umask: Some(0o4022),
                    ..wire()
                },
                "umask 0o4022 has bits beyond 0o777",
            ),
            (
                v1::Assignment {
                    payload_omitted: true,
                    ..wire()
                },
                "argv and env are left out (payload_omitted)",
            ),
            (
                v1::Assignment {
                    output: Some(v1::OutputForward {
                        writer_index: 5,
                        ..Default::default()
                    }),
                    ..wire()
                },
                "output.writer_index 5 is outside the nodelist of 2 nodes",
            ),
            (
                mpi(|m| m.tasks_per_node = vec![3]),
                "mpi.tasks_per_node has 1 entries for the nodelist's 2 nodes",
            ),
            (
                mpi(|m| m.tasks_per_node = vec![u32::MAX, 1]),
                "mpi.tasks_per_node adds up to more ranks than a u32 holds",
            ),
            (
                mpi(|m| {
                    m.endpoints.insert("node:3".into(), "10.0.0.3:7000".into());
                }),
                "mpi.endpoints names \"node:3\", which is not a node name",
            ),
        ];
        for (wire, expected) in cases {
            let error = Assignment::try_from(wire).unwrap_err().to_string();
            assert!(
                error.starts_with("job 17.2: ") && error.contains(expected),
                "{error:?} does not say {expected:?}"
            );
        }
    }
}
