//! MPI wiring: the `mpirun` command line the first node of an mpirun-launched job runs (remote
//! launcher pointed at `beowulf-rsh`), the environment of ranks the agents start directly, and
//! the transport settings of the fabric the head chose, for both. Pure: tested without MPI.

use crate::assignment::MpiLaunch;
use beowulf_proto::v1;
use beowulf_types::{MpiFlavor, NodeName, RunFabric};

/// Environment variables `beowulf-rsh` reads (set for mpirun, and for the daemons it starts).
pub use beowulf_proto::local_socket::launch_env::{
    JOB as ENV_JOB, RUN as ENV_RUN, SOCKET as ENV_LAUNCH_SOCKET, TOKEN as ENV_TOKEN,
};

/// The settings measured to work on soft-RoCE (docs/design.md §7): UCX over RC verbs, and without
/// the DGID check UCX's UD wire-up times out on rxe.
const UCX_IB_ENV: [(&str, &str); 2] =
    [("UCX_TLS", "rc,self"), ("UCX_UD_VERBS_ETH_DGID_CHECK", "n")];

/// What the command line is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct MpirunInput<'a> {
    pub mpi: &'a MpiLaunch,
    pub nodelist: &'a [NodeName],
    /// The program and its arguments (the job's `command`).
    pub command: &'a [String],
    /// Path of `beowulf-rsh` as mpirun sees it (inside the container, or on the host).
    pub rsh_agent: &'a str,
    /// Interface or CIDR for Open MPI's TCP traffic (`lo` on a local cluster, the gigabit
    /// network on real nodes); `None` lets Open MPI pick.
    pub tcp_include: Option<&'a str>,
    /// Verbs device and port for UCX (`rxe0:1`), when the fabric is ib and the node has one.
    pub ib_device: Option<&'a str>,
}

/// `mpirun` and its arguments.
pub fn mpirun_argv(input: &MpirunInput<'_>) -> Vec<String> {
    let ntasks = input.mpi.ranks();
    // mpirun runs on the first node: naming it `localhost` makes mpirun start that node's ranks
    // itself instead of launching a daemon there through the agent (one process and one
    // remote launch fewer: ~50 ms of a 5-node start on this machine, issue 7).
    let hosts: Vec<String> = input
        .nodelist
        .iter()
        .enumerate()
        .map(|(index, node)| {
            if index == 0 {
                "localhost"
            } else {
                node.as_str()
            }
        })
        .zip(&input.mpi.tasks_per_node)
        .filter(|(_, tasks)| **tasks > 0)
        .map(|(node, tasks)| format!("{node}:{tasks}"))
        .collect();
    let mut argv: Vec<String> = vec![
        "mpirun".into(),
        "-np".into(),
        ntasks.to_string(),
        "--host".into(),
        hosts.join(","),
    ];
    let mut mca = |name: &str, value: &str| {
        argv.extend(["--mca".to_string(), name.to_string(), value.to_string()]);
    };
    // The job's environment has Slurm's variables (scripts expect them), which would make Open
    // MPI look for srun: use the rsh launcher, and the hosts given here rather than Slurm's.
    mca("plm", "rsh");
    mca("ras", "^slurm");
    mca("plm_rsh_agent", input.rsh_agent);
    // mpirun starts every daemon itself (no tree spawn): each launch is checked by the target
    // node's agent against the job's credential, and 5-500 daemons start fine from one place.
    mca("plm_rsh_no_tree_spawn", "1");
    // A daemon must stay the child of its launch: the agent tracks it, and a container ends
    // when its first process does (a daemonized orted would be killed with it).
    mca("orte_leave_session_attached", "1");
    if let Some(include) = input.tcp_include {
        mca("oob_tcp_if_include", include);
    }
    let fabric = fabric_settings(input.mpi.fabric, input.tcp_include, input.ib_device);
    for (name, value) in &fabric.mca {
        mca(name, value);
    }
    for (k, v) in fabric.env {
        argv.extend(["-x".to_string(), format!("{k}={v}")]);
    }
    argv.extend(input.command.iter().cloned());
    argv
}

/// Open MPI's transport settings for the fabric the head chose: MCA parameters and plain
/// environment variables (UCX's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricSettings {
    pub mca: Vec<(&'static str, String)>,
    pub env: Vec<(String, String)>,
}

/// UCX over the verbs device for `ib`; else ob1 with TCP, pinned to `tcp_include` when given.
pub fn fabric_settings(
    fabric: RunFabric,
    tcp_include: Option<&str>,
    ib_device: Option<&str>,
) -> FabricSettings {
    let mut mca: Vec<(&'static str, String)> = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    if fabric == RunFabric::Ib {
        mca.push(("pml", "ucx".into()));
        mca.push(("btl", "^openib,uct".into()));
        mca.push(("osc", "ucx".into()));
        env.extend(
            UCX_IB_ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        if let Some(device) = ib_device {
            env.push(("UCX_NET_DEVICES".into(), device.to_string()));
        }
    } else {
        mca.push(("pml", "ob1".into()));
        mca.push(("btl", "self,vader,tcp".into()));
        if let Some(include) = tcp_include {
            mca.push(("btl_tcp_if_include", include.to_string()));
        }
    }
    FabricSettings { mca, env }
}

/// The environment of a rank the agent starts itself (direct launch), beside what the PMIx
/// server gives it, for the job's MPI flavor (Open MPI or MPICH).
///
/// Open MPI: the fabric's settings as `OMPI_MCA_*` variables, and `SLURM_STEP_ID`. Open MPI 4.1
/// decides how it was started from the environment ("schizo"): with Slurm's job variables and a
/// step ID it takes itself for a rank started by `srun --mpi=pmix` and reads its job from the
/// PMIx server; without them it runs as a singleton of one rank (measured).
///
/// MPICH (built by `scripts/build-mpich.sh` for ch4:ofi as a PMIx client): libfabric's provider
/// and interface, see [`mpich_fabric_env`].
pub fn direct_env(
    launch: &MpiLaunch,
    tcp_include: Option<&str>,
    ib_device: Option<&str>,
) -> Vec<(String, String)> {
    let fabric = launch.fabric;
    if launch.flavor == MpiFlavor::Mpich {
        return mpich_fabric_env(fabric, launch.ranks(), tcp_include, ib_device);
    }
    let settings = fabric_settings(fabric, tcp_include, ib_device);
    let mut env: Vec<(String, String)> = settings
        .mca
        .into_iter()
        .map(|(name, value)| (format!("OMPI_MCA_{name}"), value))
        .collect();
    env.extend(settings.env);
    env.push(("SLURM_STEP_ID".into(), "0".into()));
    env
}

/// MPICH's transport for the fabric the head chose, as libfabric variables: the verbs provider
/// under the RxM layer (reliable datagrams over verbs connections) restricted to the node's verbs
/// device for `ib`; else the tcp provider under RxM, on `tcp_include` when it names an interface
/// (libfabric takes interface names only, not a CIDR: with a CIDR it picks one itself).
///
/// `FI_UNIVERSE_SIZE` is the job's rank count (MPICH does not tell libfabric): RxM sizes its
/// verbs completion queues for that many peers, and with libfabric's default of 256 it asks for
/// more entries than soft-RoCE allows (rxe: 32767), so every endpoint failed (measured with
/// `fi_pingpong -p "verbs;ofi_rxm"` between two lab VMs: EINVAL at fi_enable, fine with 8).
pub fn mpich_fabric_env(
    fabric: RunFabric,
    ranks: u32,
    tcp_include: Option<&str>,
    ib_device: Option<&str>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("FI_UNIVERSE_SIZE".into(), ranks.to_string())];
    if fabric == RunFabric::Ib {
        env.push(("FI_PROVIDER".into(), "verbs;ofi_rxm".into()));
        if let Some(device) = ib_device {
            // `rxe0:1`: libfabric names devices without the port.
            let name = device.split(':').next().unwrap_or(device);
            env.push(("FI_VERBS_DEVICE_NAME".into(), name.to_string()));
        }
    } else {
        env.push(("FI_PROVIDER".into(), "tcp;ofi_rxm".into()));
        if let Some(iface) = tcp_include.filter(|i| !i.contains('/')) {
            env.push(("FI_TCP_IFACE".into(), iface.to_string()));
        }
    }
    env
}

pub use beowulf_proto::launch_client::{ConnectError, connect_launch};

/// Connects to this node's agent over its local launch socket (the agent knows the caller by
/// its uid).
pub async fn connect_local_launch(
    socket: &std::path::Path,
) -> Result<v1::agent_launch_client::AgentLaunchClient<tonic::transport::Channel>, ConnectError> {
    let channel = beowulf_proto::local_socket::connect_unix(socket, "http://computed")
        .await
        .map_err(|source| ConnectError::LocalUnreachable {
            socket: socket.to_path_buf(),
            source,
        })?;
    Ok(v1::agent_launch_client::AgentLaunchClient::new(channel))
}

/// The launch endpoint of `node` in a run's launch, if the node is one of the run's.
pub fn endpoint_of<'a>(launch: &'a MpiLaunch, node: &NodeName) -> Option<&'a str> {
    launch.endpoints.get(node).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(fabric: RunFabric) -> MpiLaunch {
        MpiLaunch {
            flavor: MpiFlavor::Openmpi,
            fabric,
            token: "t".into(),
            endpoints: [
                (NodeName::new("node1"), "127.0.0.1:1".to_string()),
                (NodeName::new("node2"), "127.0.0.1:2".to_string()),
            ]
            .into_iter()
            .collect(),
            tasks_per_node: vec![2, 1],
            direct: false,
        }
    }

    #[test]
    fn tcp_runs_pin_open_mpi_to_the_given_network() {
        let mpi = launch(RunFabric::Tcp);
        let nodes = [NodeName::new("node1"), NodeName::new("node2")];
        let command = ["./hello".to_string()];
        let argv = mpirun_argv(&MpirunInput {
            mpi: &mpi,
            nodelist: &nodes,
            command: &command,
            rsh_agent: "/.beowulf/beowulf-rsh",
            tcp_include: Some("lo"),
            ib_device: None,
        });
        let line = argv.join(" ");
        assert!(
            line.starts_with("mpirun -np 3 --host localhost:2,node2:1 "),
            "{line}"
        );
        assert!(line.contains("--mca plm_rsh_agent /.beowulf/beowulf-rsh"));
        assert!(
            line.contains("--mca pml ob1 --mca btl self,vader,tcp --mca btl_tcp_if_include lo")
        );
        assert!(line.ends_with(" ./hello"));
        assert!(!line.contains("ucx"));
    }

    #[test]
    fn ib_runs_use_ucx_with_the_soft_roce_settings() {
        let mpi = launch(RunFabric::Ib);
        let nodes = [NodeName::new("node1"), NodeName::new("node2")];
        let line = mpirun_argv(&MpirunInput {
            mpi: &mpi,
            nodelist: &nodes,
            command: &["./hello".to_string()],
            rsh_agent: "/r",
            tcp_include: None,
            ib_device: Some("rxe0:1"),
        })
        .join(" ");
        assert!(line.contains("--mca pml ucx"), "{line}");
        assert!(line.contains(
            "-x UCX_TLS=rc,self -x UCX_UD_VERBS_ETH_DGID_CHECK=n -x UCX_NET_DEVICES=rxe0:1"
        ));
    }

    #[test]
    fn direct_ranks_get_the_fabric_as_mca_variables_and_a_step() {
        let env = direct_env(&launch(RunFabric::Tcp), Some("lo"), None);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("OMPI_MCA_pml"), Some("ob1"));
        assert_eq!(get("OMPI_MCA_btl_tcp_if_include"), Some("lo"));
        assert_eq!(get("SLURM_STEP_ID"), Some("0"));
        let env = direct_env(&launch(RunFabric::Ib), None, Some("rxe0:1"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("OMPI_MCA_pml"), Some("ucx"));
        assert_eq!(get("UCX_NET_DEVICES"), Some("rxe0:1"));
    }

    #[test]
    fn mpich_ranks_get_libfabric_providers_and_no_open_mpi_variables() {
        let mpich = |fabric: RunFabric| MpiLaunch {
            flavor: MpiFlavor::Mpich,
            ..launch(fabric)
        };
        let env = direct_env(&mpich(RunFabric::Tcp), Some("lo"), None);
        let pairs = |env: &[(String, String)]| -> Vec<String> {
            env.iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        assert_eq!(
            pairs(&env),
            [
                "FI_UNIVERSE_SIZE=3",
                "FI_PROVIDER=tcp;ofi_rxm",
                "FI_TCP_IFACE=lo"
            ]
        );
        // A CIDR is Open MPI's syntax only: libfabric picks the interface itself.
        let env = direct_env(&mpich(RunFabric::Tcp), Some("10.0.0.0/24"), None);
        assert_eq!(
            pairs(&env),
            ["FI_UNIVERSE_SIZE=3", "FI_PROVIDER=tcp;ofi_rxm"]
        );
        let env = direct_env(&mpich(RunFabric::Ib), None, Some("rxe0:1"));
        assert_eq!(
            pairs(&env),
            [
                "FI_UNIVERSE_SIZE=3",
                "FI_PROVIDER=verbs;ofi_rxm",
                "FI_VERBS_DEVICE_NAME=rxe0"
            ]
        );
    }

    #[test]
    fn endpoints_are_found_by_node() {
        let launch = launch(RunFabric::Tcp);
        assert_eq!(
            endpoint_of(&launch, &NodeName::new("node2")),
            Some("127.0.0.1:2")
        );
        assert_eq!(endpoint_of(&launch, &NodeName::new("node9")), None);
    }
}
