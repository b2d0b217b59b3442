//! `LocalTransport`: runs steps on this machine (the head's own steps).

use super::{ExecOutput, Transport, TransportError};
use async_trait::async_trait;
use beowulf_types::NodeName;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Commands and files on the machine the engine runs on.
#[derive(Debug, Clone)]
pub struct LocalTransport {
    node: NodeName,
}

impl LocalTransport {
    /// A transport for this machine, called `node` in errors and events.
    pub fn new(node: impl Into<NodeName>) -> Self {
        Self { node: node.into() }
    }

    fn io(&self, operation: String) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
        move |e| TransportError::Io {
            node: self.node.clone(),
            operation,
            reason: e.to_string(),
        }
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn node(&self) -> &NodeName {
        &self.node
    }

    async fn exec(&self, command: &str) -> Result<ExecOutput, TransportError> {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(self.io(format!("running `{command}`")))?;
        let status = out.status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            out.status.signal().map_or(-1, |s| 128 + s)
        });
        Ok(ExecOutput {
            status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn put_file(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), TransportError> {
        let target = Path::new(path);
        let op = || format!("writing {path}");
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(self.io(op()))?;
        }
        let tmp = target.with_file_name(format!(
            ".{}.beowulf-tmp",
            target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file")
        ));
        tokio::fs::write(&tmp, bytes).await.map_err(self.io(op()))?;
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(self.io(op()))?;
        tokio::fs::rename(&tmp, target).await.map_err(self.io(op()))
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, TransportError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(format!("reading {path}"))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_put_and_read_on_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let t = LocalTransport::new("head");
        let out = t.exec("echo out; echo err >&2; exit 3").await.unwrap();
        assert_eq!(
            (out.status, out.stdout.as_str(), out.stderr.as_str()),
            (3, "out\n", "err\n")
        );
        let path = dir.path().join("sub/f.conf");
        let p = path.to_str().unwrap();
        assert_eq!(t.read_file(p).await.unwrap(), None);
        t.put_file(p, b"hello", 0o600).await.unwrap();
        assert_eq!(
            t.read_file(p).await.unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }
}
