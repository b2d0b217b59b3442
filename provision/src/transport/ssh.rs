//! `SshTransport`: a compute node over SSH (russh), with the host key verified against the inventory and
//! key authentication. One connection per node; each command is a channel on it.

use super::host_key::HostKeyPolicy;
use super::{ExecOutput, Transport, TransportError, shell_quote};
use async_trait::async_trait;
use beowulf_types::NodeName;
use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, load_secret_key};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long connecting and authenticating may take. A lab VM under TCG answers an SSH round trip in
/// about a second (DESIGN §6) and key exchange takes several; 30 s leaves room without hiding a dead node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Keepalives every 15 s notice a node that died under a long-running command (a package install).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Exit status `read_file` uses to say "no such file" (distinct from cat's own errors, which exit 1).
const MISSING_FILE_STATUS: u32 = 44;

/// Where and how to reach one node.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub node: NodeName,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key: PathBuf,
    pub host_keys: HostKeyPolicy,
}

/// A connected node.
pub struct SshTransport {
    node: NodeName,
    handle: Handle<Verifier>,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The client handler: checks the host key and remembers why it refused one.
struct Verifier {
    policy: HostKeyPolicy,
    refusal: Arc<Mutex<Option<TransportError>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(TransportError::Connect {
                    node: self.policy.node.clone(),
                    address: self.policy.address.clone(),
                    reason:
                        "the node offered a host certificate; pin its plain host key in known_hosts"
                            .into(),
                });
            return Ok(false);
        };
        let verdict: Result<(), TransportError> = self.policy.verify(key as &PublicKey);
        match verdict {
            Ok(()) => Ok(true),
            Err(e) => {
                *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                Ok(false)
            }
        }
    }
}

impl SshTransport {
    /// Connects, verifies the host key and logs in with the target's key.
    pub async fn connect(target: &SshTarget) -> Result<Self, TransportError> {
        let connect_err = |reason: String| TransportError::Connect {
            node: target.node.clone(),
            address: format!("{}:{}", target.address, target.port),
            reason,
        };
        let key = load_secret_key(&target.key, None).map_err(|e| TransportError::Key {
            path: target.key.clone(),
            reason: e.to_string(),
        })?;
        let config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE_INTERVAL),
            inactivity_timeout: None,
            ..Default::default()
        });
        let refusal = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            policy: target.host_keys.clone(),
            refusal: refusal.clone(),
        };
        let address = (target.address.as_str(), target.port);
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, client::connect(config, address, verifier)).await;
        let mut handle = match connected {
            Err(_) => {
                return Err(connect_err(format!(
                    "no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                if let Some(refused) = refusal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    return Err(refused);
                }
                return Err(connect_err(e.to_string()));
            }
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| connect_err(e.to_string()))?
            .flatten();
        let auth = tokio::time::timeout(
            CONNECT_TIMEOUT,
            handle.authenticate_publickey(
                &target.user,
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            ),
        )
        .await
        .map_err(|_| connect_err("authentication timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
        if !auth.success() {
            return Err(TransportError::AuthRejected {
                node: target.node.clone(),
                user: target.user.clone(),
                key: target.key.clone(),
            });
        }
        Ok(Self {
            node: target.node.clone(),
            handle,
        })
    }

    /// Ends the connection politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "provisioning done", "en")
            .await;
    }

    fn io(&self, operation: &str) -> impl Fn(russh::Error) -> TransportError + '_ {
        let operation = operation.to_string();
        move |e| TransportError::Io {
            node: self.node.clone(),
            operation: operation.clone(),
            reason: e.to_string(),
        }
    }

    /// Runs `command`, feeding `stdin`, and collects raw output and the exit status.
    async fn run(
        &self,
        command: &str,
        stdin: &[u8],
    ) -> Result<(u32, Vec<u8>, Vec<u8>), TransportError> {
        let what = format!("running `{command}`");
        let io = self.io(&what);
        let mut channel = self.handle.channel_open_session().await.map_err(&io)?;
        channel.exec(true, command).await.map_err(&io)?;
        if !stdin.is_empty() {
            channel.data(stdin).await.map_err(&io)?;
        }
        channel.eof().await.map_err(&io)?;
        let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    stderr.extend_from_slice(
                        format!("killed by signal {signal_name:?}\n").as_bytes(),
                    );
                    status = Some(128 + 9);
                }
                _ => {}
            }
        }
        let status = status.ok_or_else(|| TransportError::Io {
            node: self.node.clone(),
            operation: what.clone(),
            reason: "the channel closed without an exit status (connection lost?)".into(),
        })?;
        Ok((status, stdout, stderr))
    }
}

#[async_trait]
impl Transport for SshTransport {
    fn node(&self) -> &NodeName {
        &self.node
    }

    async fn exec(&self, command: &str) -> Result<ExecOutput, TransportError> {
        let (status, stdout, stderr) = self.run(command, &[]).await?;
        Ok(ExecOutput {
            status: i32::try_from(status).unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    async fn put_file(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), TransportError> {
        let target = Path::new(path);
        let dir = target
            .parent()
            .and_then(|p| p.to_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file");
        let tmp = format!("{}/.{name}.beowulf-tmp", dir.trim_end_matches('/'));
        let command = format!(
            "set -e; mkdir -p {dir}; umask 077; cat > {tmp}; chmod {mode:o} {tmp}; mv -f {tmp} {path}",
            dir = shell_quote(dir),
            tmp = shell_quote(&tmp),
            path = shell_quote(path),
        );
        let (status, _, stderr) = self.run(&command, bytes).await?;
        if status != 0 {
            return Err(TransportError::Io {
                node: self.node.clone(),
                operation: format!("writing {path}"),
                reason: format!("exit {status}: {}", String::from_utf8_lossy(&stderr).trim()),
            });
        }
        Ok(())
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, TransportError> {
        let q = shell_quote(path);
        let command =
            format!("if [ -e {q} ]; then cat -- {q}; else exit {MISSING_FILE_STATUS}; fi");
        match self.run(&command, &[]).await? {
            (0, stdout, _) => Ok(Some(stdout)),
            (MISSING_FILE_STATUS, _, _) => Ok(None),
            (status, _, stderr) => Err(TransportError::Io {
                node: self.node.clone(),
                operation: format!("reading {path}"),
                reason: format!("exit {status}: {}", String::from_utf8_lossy(&stderr).trim()),
            }),
        }
    }
}
