//! The node names a peer's certificate vouches for (its subject CN and DNS names), so that
//! headnoded can refuse an agent that registers under another node's name, and an agent can
//! refuse another node's agent that speaks for a node it is not.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject common names and DNS subject-alternative names of a DER certificate; empty when it
/// cannot be parsed (the TLS layer already checked it is the cluster CA's).
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push((*dns).to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    #[test]
    fn the_common_name_and_dns_names_are_read() {
        let mut params =
            CertificateParams::new(vec!["node1".to_string(), "10.77.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "node1");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_names(cert.der()), ["node1"]);
        assert!(certificate_names(b"not a certificate").is_empty());
    }
}
