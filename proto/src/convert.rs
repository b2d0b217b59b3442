//! Conversions between the wire messages and the plain domain types of `beowulf-types`.

use crate::v1;
use beowulf_types::{
    IbPort, IbPortState, Inventory, JobId, JobSignal, JobState, MpiFlavor, Nic, NodeState,
    RunFabric, RunKey, SignalScope,
};

impl From<RunFabric> for v1::RunFabric {
    fn from(fabric: RunFabric) -> Self {
        match fabric {
            RunFabric::Ib => v1::RunFabric::Ib,
            RunFabric::Tcp => v1::RunFabric::Tcp,
        }
    }
}

impl From<v1::RunFabric> for RunFabric {
    /// Unspecified (a sender that set none) reads as TCP: the gigabit network always works.
    fn from(fabric: v1::RunFabric) -> Self {
        match fabric {
            v1::RunFabric::Ib => RunFabric::Ib,
            v1::RunFabric::Tcp | v1::RunFabric::Unspecified => RunFabric::Tcp,
        }
    }
}

impl From<MpiFlavor> for v1::MpiFlavor {
    fn from(flavor: MpiFlavor) -> Self {
        match flavor {
            MpiFlavor::Openmpi => v1::MpiFlavor::Openmpi,
            MpiFlavor::Mpich => v1::MpiFlavor::Mpich,
            MpiFlavor::None => v1::MpiFlavor::Unspecified,
        }
    }
}

impl From<v1::MpiFlavor> for MpiFlavor {
    fn from(flavor: v1::MpiFlavor) -> Self {
        match flavor {
            v1::MpiFlavor::Openmpi => MpiFlavor::Openmpi,
            v1::MpiFlavor::Mpich => MpiFlavor::Mpich,
            v1::MpiFlavor::Unspecified => MpiFlavor::None,
        }
    }
}

impl From<SignalScope> for v1::SignalScope {
    fn from(scope: SignalScope) -> Self {
        match scope {
            SignalScope::Steps => v1::SignalScope::Steps,
            SignalScope::Batch => v1::SignalScope::Batch,
            SignalScope::Full => v1::SignalScope::Full,
        }
    }
}

impl From<v1::SignalScope> for SignalScope {
    fn from(scope: v1::SignalScope) -> Self {
        match scope {
            v1::SignalScope::Steps => SignalScope::Steps,
            v1::SignalScope::Batch => SignalScope::Batch,
            v1::SignalScope::Full => SignalScope::Full,
        }
    }
}

impl From<JobSignal> for v1::JobSignal {
    fn from(s: JobSignal) -> Self {
        v1::JobSignal {
            seq: s.seq,
            signal: s.signal,
            scope: v1::SignalScope::from(s.scope) as i32,
        }
    }
}

impl From<&v1::JobSignal> for JobSignal {
    /// An unknown scope (a newer head) reads as the default, the steps' tasks.
    fn from(s: &v1::JobSignal) -> Self {
        JobSignal {
            seq: s.seq,
            signal: s.signal,
            scope: s.scope().into(),
        }
    }
}

impl v1::JobInfo {
    /// The job's state; `None` for a word this build does not know (a newer head).
    pub fn job_state(&self) -> Option<JobState> {
        JobState::parse(&self.state)
    }
}

impl v1::WhyReply {
    /// The job's state; `None` for a word this build does not know (a newer head).
    pub fn job_state(&self) -> Option<JobState> {
        JobState::parse(&self.state)
    }
}

impl v1::NodeInfo {
    /// The node's state; `None` for a word this build does not know (a newer head).
    pub fn node_state(&self) -> Option<NodeState> {
        NodeState::parse(&self.state)
    }
}

impl v1::MpiLaunch {
    /// The run's fabric as a domain value.
    pub fn run_fabric(&self) -> RunFabric {
        self.fabric().into()
    }

    /// The run's MPI implementation as a domain value.
    pub fn mpi_flavor(&self) -> MpiFlavor {
        self.flavor().into()
    }
}

/// `run_key()` for the messages that name a job run by `job_id` and `run`.
macro_rules! run_key_of {
    ($($message:ident),+) => {$(
        impl v1::$message {
            /// The job run this message is about.
            pub fn run_key(&self) -> RunKey {
                RunKey {
                    job: JobId(self.job_id),
                    run: self.run,
                }
            }
        }
    )+};
}

run_key_of!(
    RunRef,
    RunReport,
    Assignment,
    OutputRequest,
    FenceRequest,
    LaunchRequest
);

impl From<RunKey> for v1::RunRef {
    fn from(key: RunKey) -> Self {
        v1::RunRef {
            job_id: key.job.0,
            run: key.run,
        }
    }
}

impl From<&Inventory> for v1::Inventory {
    fn from(inv: &Inventory) -> Self {
        v1::Inventory {
            hostname: inv.hostname.clone(),
            cpus: inv.cpus,
            memory_mb: inv.memory_mb,
            os: inv.os.clone(),
            kernel: inv.kernel.clone(),
            arch: inv.arch.clone(),
            nics: inv
                .nics
                .iter()
                .map(|n| v1::Nic {
                    name: n.name.clone(),
                    mac: n.mac.clone(),
                    addresses: n.addresses.clone(),
                    up: n.up,
                    speed_mbps: n.speed_mbps,
                })
                .collect(),
            ib_ports: inv
                .ib_ports
                .iter()
                .map(|p| v1::IbPort {
                    device: p.device.clone(),
                    port: p.port,
                    state: p.state.as_str().to_string(),
                    phys_state: p.phys_state.clone(),
                    rate: p.rate.clone(),
                    link_layer: p.link_layer.clone(),
                    netdev: p.netdev.clone(),
                })
                .collect(),
            features: inv.features.clone(),
            gres: inv.gres.clone().into_iter().collect(),
            fabric_problem: inv.fabric_problem.clone(),
        }
    }
}

impl From<&v1::Inventory> for Inventory {
    fn from(inv: &v1::Inventory) -> Self {
        Inventory {
            hostname: inv.hostname.clone(),
            cpus: inv.cpus,
            memory_mb: inv.memory_mb,
            os: inv.os.clone(),
            kernel: inv.kernel.clone(),
            arch: inv.arch.clone(),
            nics: inv
                .nics
                .iter()
                .map(|n| Nic {
                    name: n.name.clone(),
                    mac: n.mac.clone(),
                    addresses: n.addresses.clone(),
                    up: n.up,
                    speed_mbps: n.speed_mbps,
                })
                .collect(),
            ib_ports: inv
                .ib_ports
                .iter()
                .map(|p| IbPort {
                    device: p.device.clone(),
                    port: p.port,
                    state: IbPortState::from_sysfs(&p.state),
                    phys_state: p.phys_state.clone(),
                    rate: p.rate.clone(),
                    link_layer: p.link_layer.clone(),
                    netdev: p.netdev.clone(),
                })
                .collect(),
            features: inv.features.clone(),
            gres: inv.gres.clone().into_iter().collect(),
            fabric_problem: inv.fabric_problem.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fabrics_and_flavors_survive_the_wire() {
        for fabric in [RunFabric::Ib, RunFabric::Tcp] {
            assert_eq!(RunFabric::from(v1::RunFabric::from(fabric)), fabric);
            assert_eq!(RunFabric::parse(fabric.as_str()), Some(fabric));
        }
        assert_eq!(RunFabric::from(v1::RunFabric::Unspecified), RunFabric::Tcp);
        for flavor in [MpiFlavor::Openmpi, MpiFlavor::Mpich, MpiFlavor::None] {
            assert_eq!(MpiFlavor::from(v1::MpiFlavor::from(flavor)), flavor);
        }
        let launch = v1::MpiLaunch {
            flavor: v1::MpiFlavor::Mpich as i32,
            fabric: v1::RunFabric::Ib as i32,
            ..Default::default()
        };
        assert_eq!(
            (launch.mpi_flavor(), launch.run_fabric()),
            (MpiFlavor::Mpich, RunFabric::Ib)
        );
    }

    #[test]
    fn run_keys_survive_the_wire() {
        let key = RunKey {
            job: JobId(17),
            run: 2,
        };
        assert_eq!(v1::RunRef::from(key).run_key(), key);
        let report = v1::RunReport {
            job_id: 17,
            run: 2,
            ..Default::default()
        };
        assert_eq!(report.run_key(), key);
    }

    #[test]
    fn inventory_survives_the_wire() {
        let inv = Inventory {
            hostname: "node1".into(),
            cpus: 2,
            memory_mb: 4096,
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            nics: vec![Nic {
                name: "eth0".into(),
                mac: "52:54:00:00:00:01".into(),
                addresses: vec!["10.77.0.11/24".into()],
                up: true,
                speed_mbps: Some(1000),
            }],
            ib_ports: vec![IbPort {
                device: "rxe0".into(),
                port: 1,
                state: IbPortState::Active,
                phys_state: "5: LinkUp".into(),
                rate: "10 Gb/sec (1X QDR)".into(),
                link_layer: "Ethernet".into(),
                netdev: Some("eth1".into()),
            }],
            features: vec!["ib".into()],
            gres: [("gpu".to_string(), 2)].into(),
            fabric_problem: Some("pair probe to node2 failed".into()),
        };
        let wire = v1::Inventory::from(&inv);
        assert_eq!(Inventory::from(&wire), inv);
    }
}
