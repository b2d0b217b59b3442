//! The cluster CA: created once at the first `cluster init`, it signs the head's server
//! certificate and one client certificate per node; the agent API accepts only agents that
//! present a certificate it signed (mutual TLS).
//!
//! Files in the CA directory (`<state_dir>/tls` by default): `ca.crt`, `ca.key` (0600), and
//! `NAME.crt` / `NAME.key` (0600) per identity. Existing files are kept: running init again
//! changes nothing, and a node's certificate stays the one already installed on it.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

pub use beowulf_types::HEAD_TLS_NAME;

/// Why the CA could not be created, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cluster CA {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("cluster CA: cannot make a certificate for {name}: {message}")]
    Sign { name: String, message: String },
}

/// The CA directory, with the CA loaded (or just created).
#[derive(Debug)]
pub struct ClusterCa {
    dir: PathBuf,
    cert_pem: String,
    key: KeyPair,
}

fn file_error(path: &Path, message: impl ToString) -> CaError {
    CaError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn write_secret(path: &Path, text: &str, mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| file_error(&tmp, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

impl ClusterCa {
    /// Loads the CA from `dir`, creating it (and the directory, 0700) when it does not exist.
    pub fn ensure(dir: &Path) -> Result<ClusterCa, CaError> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if cert_path.exists() {
            let cert_pem =
                std::fs::read_to_string(&cert_path).map_err(|e| file_error(&cert_path, e))?;
            let key_pem =
                std::fs::read_to_string(&key_path).map_err(|e| file_error(&key_path, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| file_error(&key_path, e))?;
            return Ok(ClusterCa {
                dir: dir.to_path_buf(),
                cert_pem,
                key,
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| file_error(dir, e))?;
        }
        let sign_err = |e: rcgen::Error| CaError::Sign {
            name: "the CA".into(),
            message: e.to_string(),
        };
        let key = KeyPair::generate().map_err(sign_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(sign_err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Beowulf cluster CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(sign_err)?;
        write_secret(&key_path, &key.serialize_pem(), 0o600)?;
        write_secret(&cert_path, &cert.pem(), 0o644)?;
        Ok(ClusterCa {
            dir: dir.to_path_buf(),
            cert_pem: cert.pem(),
            key,
        })
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `NAME.crt` and `NAME.key` in the CA directory.
    pub fn identity_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// Makes `NAME.crt`/`NAME.key` unless they exist: a certificate for `name` (also its common
    /// name) and `alt_names` (DNS names or IP addresses), for servers and clients alike.
    pub fn ensure_identity(&self, name: &str, alt_names: &[String]) -> Result<(), CaError> {
        let (cert_path, key_path) = self.identity_paths(name);
        if cert_path.exists() && key_path.exists() {
            return Ok(());
        }
        let sign_err = |e: rcgen::Error| CaError::Sign {
            name: name.to_string(),
            message: e.to_string(),
        };
        let mut names = vec![name.to_string()];
        names.extend(alt_names.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(sign_err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(sign_err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(sign_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(sign_err)?;
        write_secret(&key_path, &key.serialize_pem(), 0o600)?;
        write_secret(&cert_path, &cert.pem(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_keeps_existing_identities() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("tls");
        let ca = ClusterCa::ensure(&ca_dir).unwrap();
        ca.ensure_identity("node1", &["10.77.0.1".into()]).unwrap();
        let (cert, key) = ca.identity_paths("node1");
        let first = std::fs::read_to_string(&cert).unwrap();
        assert!(first.starts_with("-----BEGIN CERTIFICATE-----"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Loaded again: the same CA, and node1's certificate is not replaced.
        let again = ClusterCa::ensure(&ca_dir).unwrap();
        again.ensure_identity("node1", &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), first);
        again.ensure_identity("node2", &[]).unwrap();
        assert!(again.identity_paths("node2").0.exists());
    }
}
