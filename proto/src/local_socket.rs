//! gRPC over a unix socket (the head's client socket, an agent's local launch socket), and the
//! environment through which an agent tells a job's processes where its launch socket is.

use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// Variables the agent sets for a job's processes that may ask it to launch (mpirun's remote
/// launcher `beowulf-rsh`, `srun` in a batch script), and that those read.
pub mod launch_env {
    /// The run's launch credential.
    pub const TOKEN: &str = "BEOWULF_LAUNCH_TOKEN";
    /// The node agent's local launch socket, as the process sees it (in its container or not).
    pub const SOCKET: &str = "BEOWULF_LAUNCH_SOCKET";
    pub const JOB: &str = "BEOWULF_JOB_ID";
    pub const RUN: &str = "BEOWULF_RUN";
}

/// A channel to the gRPC server on the unix socket `path` (`authority` only names it in
/// requests); the server knows the caller by its uid.
pub async fn connect_unix(
    path: &Path,
    authority: &'static str,
) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_path_buf();
    Endpoint::from_static(authority)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}
