//! The node's mutual TLS files (`[tls]` in computed.toml), read for the session with the head and
//! for the launch service between agents, with errors that name the file.

use beowulf_types::config::TlsFiles;
use std::path::{Path, PathBuf};

/// The PEM text of a node's TLS files.
#[derive(Debug, Clone)]
pub struct TlsPem {
    /// The cluster CA's certificate: peers must be signed by it.
    pub ca: String,
    /// This node's certificate.
    pub cert: String,
    /// This node's private key.
    pub key: String,
}

/// Why the node's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        /// `CA certificate`, `certificate` or `key`.
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the three files of `[tls]`.
pub fn read(files: &TlsFiles) -> Result<TlsPem, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read_to_string(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    Ok(TlsPem {
        ca: read("CA certificate", &files.ca)?,
        cert: read("certificate", &files.cert)?,
        key: read("key", &files.key)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_with_its_role() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "ca").unwrap();
        std::fs::write(dir.path().join("node.pem"), "cert").unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("node.pem"),
            key: dir.path().join("node.key"),
        };
        let error = read(&files).unwrap_err();
        let TlsError::Read { what, path, .. } = &error;
        assert_eq!((*what, path), ("key", &files.key));
        assert!(
            error.to_string().starts_with(&format!(
                "cannot read the TLS key {}: ",
                files.key.display()
            )),
            "{error}"
        );
        std::fs::write(&files.key, "key").unwrap();
        let pem = read(&files).unwrap();
        assert_eq!(
            (pem.ca.as_str(), pem.cert.as_str(), pem.key.as_str()),
            ("ca", "cert", "key")
        );
    }
}
