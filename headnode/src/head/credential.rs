//! Launch credentials: the secret of one run that its nodes' agents demand before they start an
//! MPI daemon, take part in a fence or accept forwarded output for it.
//!
//! A credential is drawn from the OS CSPRNG (getrandom), never from the scheduler's RNG: that one
//! is seeded for reproducible plans, and credentials drawn from it could be computed by any user
//! who had seen one of them (the attack in docs/security.md).

use rand::TryRngCore;

/// 128 bits: out of reach of guessing at any rate a network service can be asked.
const CREDENTIAL_BYTES: usize = 16;

/// A fresh credential, as lowercase hex.
pub(super) fn new_launch_credential() -> Result<String, super::HeadError> {
    let mut bytes = [0u8; CREDENTIAL_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| super::HeadError::Entropy(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_long_hex_and_never_repeat() {
        let a = new_launch_credential().unwrap();
        let b = new_launch_credential().unwrap();
        assert_eq!(a.len(), 2 * CREDENTIAL_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
