//! The agent's PMIx server: Open MPI ranks started by the agent itself (direct launch, as
//! `srun --mpi=pmix` does) get their job's map and exchange their addresses through it, with no
//! `mpirun` and no daemon per node.
//!
//! OpenPMIx's server library does the client protocol; `shim.c` builds its info arrays and turns
//! its callbacks into [`PmixEvent`]s. The agent answers fences ([`FenceRequest`]) by gathering every
//! node's contribution (`agent::direct`), and ends the job on an abort.
//!
//! A fence request is answered exactly once: [`FenceRequest::complete`], or a failure when the
//! request is dropped unanswered, so a rank never waits on a fence the agent forgot.

use beowulf_types::RunKey;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokio::sync::mpsc;

/// Statuses of libpmix (`pmix_common.h`).
const PMIX_SUCCESS: c_int = 0;

unsafe extern "C" {
    fn bw_pmix_init(
        tmpdir: *const c_char,
        hostname: *const c_char,
        fence: FenceFn,
        abort: AbortFn,
        user: *mut c_void,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn bw_pmix_register(
        nspace: *const c_char,
        jobid: *const c_char,
        tmpdir: *const c_char,
        nodes: *const c_char,
        ppn: *const c_char,
        node_index: u32,
        nnodes: u32,
        nranks: u32,
        node_names: *const *const c_char,
        node_of_rank: *const u32,
        local: *const u32,
        nlocal: u32,
        uid: u32,
        gid: u32,
    ) -> c_int;
    fn bw_pmix_fork_env(nspace: *const c_char, rank: u32, env: *mut *mut *mut c_char) -> c_int;
    fn bw_pmix_free_env(env: *mut *mut c_char);
    fn bw_pmix_deregister(nspace: *const c_char);
    fn bw_pmix_fence_done(handle: *mut c_void, ok: c_int, data: *const c_char, ndata: usize);
    fn bw_pmix_error(status: c_int) -> *const c_char;
}

type FenceFn = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, usize, *mut c_void);
type AbortFn = unsafe extern "C" fn(*mut c_void, *const c_char, u32, c_int, *const c_char);

/// What a PMIx call failed with.
#[derive(Debug, thiserror::Error)]
pub enum PmixError {
    #[error("the PMIx server is already running in this process")]
    AlreadyStarted,
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error("cannot create the PMIx directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("{call} failed: {message} (PMIx status {status})")]
    Call {
        call: &'static str,
        status: i32,
        message: String,
    },
}

fn check(call: &'static str, status: c_int) -> Result<(), PmixError> {
    if status == PMIX_SUCCESS {
        return Ok(());
    }
    // SAFETY: PMIx_Error_string returns a static string for every status.
    let message = unsafe { CStr::from_ptr(bw_pmix_error(status)) }
        .to_string_lossy()
        .into_owned();
    Err(PmixError::Call {
        call,
        status,
        message,
    })
}

fn cstring(what: &'static str, s: &str) -> Result<CString, PmixError> {
    CString::new(s).map_err(|_| PmixError::Nul { what })
}

/// What the PMIx server asks of the agent.
#[derive(Debug)]
pub enum PmixEvent {
    /// Every local rank of `nspace` reached a fence.
    Fence(FenceRequest),
    /// A rank called MPI_Abort.
    Abort {
        nspace: String,
        rank: u32,
        status: i32,
        message: String,
    },
}

/// One node's part of a fence, to be answered with every node's data.
#[derive(Debug)]
pub struct FenceRequest {
    pub nspace: String,
    pub data: Vec<u8>,
    handle: FenceHandle,
}

#[derive(Debug)]
struct FenceHandle(*mut c_void);

// SAFETY: the handle is an allocation of the shim that bw_pmix_fence_done may take on any thread.
unsafe impl Send for FenceHandle {}

impl FenceRequest {
    /// Releases the local ranks with the gathered data, or with an error.
    pub fn complete(mut self, result: Result<&[u8], ()>) {
        let handle = std::mem::replace(&mut self.handle.0, std::ptr::null_mut());
        finish(handle, result);
    }
}

impl Drop for FenceRequest {
    fn drop(&mut self) {
        if !self.handle.0.is_null() {
            finish(self.handle.0, Err(()));
        }
    }
}

fn finish(handle: *mut c_void, result: Result<&[u8], ()>) {
    let (ok, data) = match result {
        Ok(data) => (1, data),
        Err(()) => (0, &[][..]),
    };
    // SAFETY: `handle` came from the shim's fence callback and is completed exactly once (the
    // request owns it and clears it when it completes); the shim copies `data`.
    unsafe { bw_pmix_fence_done(handle, ok, data.as_ptr().cast(), data.len()) }
}

/// Where the callbacks send their events (set once, when the server starts).
static EVENTS: OnceLock<mpsc::UnboundedSender<PmixEvent>> = OnceLock::new();

unsafe extern "C" fn on_fence(
    _user: *mut c_void,
    nspace: *const c_char,
    data: *const c_char,
    ndata: usize,
    done: *mut c_void,
) {
    // SAFETY: the shim passes the library's NUL-terminated nspace and `ndata` bytes at `data`,
    // valid for the duration of the call.
    let nspace = unsafe { CStr::from_ptr(nspace) }
        .to_string_lossy()
        .into_owned();
    let data = if ndata == 0 || data.is_null() {
        Vec::new()
    } else {
        // SAFETY: see above.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), ndata) }.to_vec()
    };
    let request = FenceRequest {
        nspace,
        data,
        handle: FenceHandle(done),
    };
    match EVENTS.get() {
        // A send that fails drops the request, which answers it with an error.
        Some(events) => drop(events.send(PmixEvent::Fence(request))),
        None => drop(request),
    }
}

unsafe extern "C" fn on_abort(
    _user: *mut c_void,
    nspace: *const c_char,
    rank: u32,
    status: c_int,
    message: *const c_char,
) {
    // SAFETY: NUL-terminated strings from the library, valid for the duration of the call.
    let (nspace, message) = unsafe {
        (
            CStr::from_ptr(nspace).to_string_lossy().into_owned(),
            CStr::from_ptr(message).to_string_lossy().into_owned(),
        )
    };
    if let Some(events) = EVENTS.get() {
        let _ = events.send(PmixEvent::Abort {
            nspace,
            rank,
            status,
            message,
        });
    }
}

/// The job as one node registers it: its nodes with ranks, in order, and each one's ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMap {
    pub nspace: String,
    pub job_id: String,
    /// The run's private TMPDIR on this node.
    pub tmpdir: String,
    /// (node, number of ranks) of every node with ranks, in nodelist order; ranks are numbered
    /// through the nodes in this order.
    pub nodes: Vec<(String, u32)>,
    /// This node's position in `nodes`.
    pub node_index: u32,
    pub uid: u32,
    pub gid: u32,
}

impl JobMap {
    /// The ranks of node `index`.
    pub fn ranks_of(&self, index: usize) -> std::ops::Range<u32> {
        let first: u32 = self.nodes[..index].iter().map(|(_, n)| n).sum();
        first..first + self.nodes[index].1
    }

    fn size(&self) -> u32 {
        self.nodes.iter().map(|(_, n)| n).sum()
    }

    /// PMIx_generate_ppn's input: each node's ranks, comma-separated, nodes separated by ';'.
    fn ppn(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                self.ranks_of(i)
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The process's PMIx server (libpmix allows one per process).
#[derive(Debug)]
pub struct PmixServer {
    dir: PathBuf,
}

static SERVER: OnceLock<PmixServer> = OnceLock::new();

/// The PMIx store the server and its ranks use, as an MCA parameter libpmix reads from the
/// environment. The shared-memory stores (ds21, ds12, the default) lock a segment the ranks lock
/// too: with them a node stalled for a minute (measured) — a rank blocked on the server while
/// holding its read lock, the server waiting for the write lock to drop an ended job's
/// namespace. The hash store answers ranks by message instead; the server passes the choice on
/// to every rank it sets up.
pub const STORE_ENV: (&str, &str) = ("PMIX_MCA_gds", "hash");

/// Sets what libpmix reads from this process's environment ([`STORE_ENV`]).
///
/// # Safety
///
/// Call before the process has other threads (the environment is not synchronised with C code
/// reading it).
pub unsafe fn configure_process() {
    // SAFETY: the caller guarantees no other thread exists.
    unsafe { std::env::set_var(STORE_ENV.0, STORE_ENV.1) };
}

/// The namespace of a job run's ranks.
pub fn nspace_of(key: RunKey) -> String {
    format!("beowulf.{}.{}", key.job, key.run)
}

impl PmixServer {
    /// Starts the server, its rendezvous files under `dir` (made world-traversable: the ranks
    /// run as the job's users and read the server's shared-memory store there). `hostname` is
    /// the node's name as the job's node list has it.
    pub fn start(
        dir: &Path,
        hostname: &str,
    ) -> Result<(&'static PmixServer, mpsc::UnboundedReceiver<PmixEvent>), PmixError> {
        if SERVER.get().is_some() {
            return Err(PmixError::AlreadyStarted);
        }
        let dir_error = |source| PmixError::Dir {
            path: dir.display().to_string(),
            source,
        };
        // Left over from an earlier agent of this node: its files are stale.
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(dir_error)?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        EVENTS.set(tx).map_err(|_| PmixError::AlreadyStarted)?;
        let c_dir = cstring("the PMIx directory", &dir.display().to_string())?;
        let c_host = cstring("the node name", hostname)?;
        // SAFETY: valid C strings; the callbacks are `extern "C"` functions of the right types
        // that never unwind; `user` is unused.
        let status = unsafe {
            bw_pmix_init(
                c_dir.as_ptr(),
                c_host.as_ptr(),
                on_fence,
                on_abort,
                std::ptr::null_mut(),
            )
        };
        check("PMIx_server_init", status)?;
        let dir = dir.to_path_buf();
        Ok((SERVER.get_or_init(|| PmixServer { dir }), rx))
    }

    /// The server's directory (rendezvous and shared-memory files its ranks read).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Registers a job run's namespace and this node's ranks of it (before they start).
    pub fn register(&self, map: &JobMap) -> Result<(), PmixError> {
        let nspace = cstring("the namespace", &map.nspace)?;
        let job_id = cstring("the job ID", &map.job_id)?;
        let tmpdir = cstring("the run's TMPDIR", &map.tmpdir)?;
        let names: Vec<CString> = map
            .nodes
            .iter()
            .map(|(n, _)| cstring("a node name", n))
            .collect::<Result<_, _>>()?;
        let nodes = cstring(
            "the node list",
            &map.nodes
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )?;
        let ppn = cstring("the rank map", &map.ppn())?;
        let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let node_of_rank: Vec<u32> = (0..map.nodes.len())
            .flat_map(|i| map.ranks_of(i).map(move |_| i as u32))
            .collect();
        let local: Vec<u32> = map.ranks_of(map.node_index as usize).collect();
        // SAFETY: every pointer is valid for the call, arrays have the lengths passed with them
        // (`node_of_rank` has one entry per rank, `name_ptrs` one per node).
        let status = unsafe {
            bw_pmix_register(
                nspace.as_ptr(),
                job_id.as_ptr(),
                tmpdir.as_ptr(),
                nodes.as_ptr(),
                ppn.as_ptr(),
                map.node_index,
                map.nodes.len() as u32,
                map.size(),
                name_ptrs.as_ptr(),
                node_of_rank.as_ptr(),
                local.as_ptr(),
                local.len() as u32,
                map.uid,
                map.gid,
            )
        };
        check("PMIx_server_register_nspace", status)
    }

    /// The environment variables rank `rank` needs to reach this server.
    pub fn fork_env(&self, nspace: &str, rank: u32) -> Result<Vec<(String, String)>, PmixError> {
        let c_nspace = cstring("the namespace", nspace)?;
        let mut env: *mut *mut c_char = std::ptr::null_mut();
        // SAFETY: `env` starts as an empty (NULL) argv that the library grows with malloc.
        let status = unsafe { bw_pmix_fork_env(c_nspace.as_ptr(), rank, &mut env) };
        let mut vars = Vec::new();
        if !env.is_null() {
            let mut at = env;
            // SAFETY: a NULL-terminated array of NUL-terminated strings, freed once below.
            unsafe {
                while !(*at).is_null() {
                    let entry = CStr::from_ptr(*at).to_string_lossy();
                    if let Some((k, v)) = entry.split_once('=') {
                        vars.push((k.to_string(), v.to_string()));
                    }
                    at = at.add(1);
                }
                bw_pmix_free_env(env);
            }
        }
        check("PMIx_server_setup_fork", status)?;
        Ok(vars)
    }

    /// Forgets a job run's namespace (its ranks have ended).
    pub fn deregister(&self, nspace: &str) {
        if let Ok(c_nspace) = cstring("the namespace", nspace) {
            // SAFETY: a valid C string; the call waits for the library to finish.
            unsafe { bw_pmix_deregister(c_nspace.as_ptr()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> JobMap {
        JobMap {
            nspace: nspace_of(RunKey {
                job: beowulf_types::JobId(7),
                run: 0,
            }),
            job_id: "7".into(),
            tmpdir: "/tmp/x".into(),
            nodes: vec![
                ("node1".into(), 2),
                ("node3".into(), 1),
                ("node4".into(), 2),
            ],
            node_index: 2,
            uid: 1000,
            gid: 1000,
        }
    }

    #[test]
    fn ranks_are_numbered_through_the_nodes_in_order() {
        let map = map();
        assert_eq!(map.ranks_of(0), 0..2);
        assert_eq!(map.ranks_of(1), 2..3);
        assert_eq!(map.ranks_of(2), 3..5);
        assert_eq!(map.size(), 5);
        assert_eq!(map.ppn(), "0,1;2;3,4");
    }

    /// The real library: the one server of this test process.
    #[test]
    fn a_registered_rank_gets_its_namespace_rank_and_the_servers_address() {
        // SAFETY: the other tests of this binary do not touch libpmix or read PMIX_MCA_gds.
        unsafe { configure_process() };
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let (server, _events) = PmixServer::start(&dir.path().join("pmix"), "node3").unwrap();
        assert!(matches!(
            PmixServer::start(&dir.path().join("again"), "node3"),
            Err(PmixError::AlreadyStarted)
        ));
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        let mut map = map();
        map.tmpdir = run_dir.display().to_string();
        map.uid = nix::unistd::getuid().as_raw();
        map.gid = nix::unistd::getgid().as_raw();
        server.register(&map).unwrap();
        let env = server.fork_env(&map.nspace, 4).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PMIX_NAMESPACE").as_deref(), Some("beowulf.7.0"));
        assert_eq!(get("PMIX_RANK").as_deref(), Some("4"));
        assert_eq!(get("PMIX_GDS_MODULE").as_deref(), Some("hash"), "{env:?}");
        assert!(
            get("PMIX_SERVER_URI4").is_some_and(|uri| uri.contains("tcp4://127.0.0.1:")),
            "{env:?}"
        );
        server.deregister(&map.nspace);
    }
}
