//! Passwords (Argon2id) and bearer tokens.
//!
//! Passwords are hashed on the blocking thread pool, at most
//! `max_concurrent_hashes` at a time, and are never logged. Tokens are 32 random
//! bytes; only their SHA-256 digest is stored, so a copy of the database does not
//! give working tokens.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::RegistryConfig;
use crate::error::RegistryError;
use crate::names::hex;

/// Prefix of every token this registry issues.
pub(crate) const TOKEN_PREFIX: &str = "nbt_";
/// Shortest password accepted, in characters.
pub(crate) const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

pub(crate) fn check_password(password: &str) -> Result<(), RegistryError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(RegistryError::InvalidPassword(
            "it must be at least 8 characters long",
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(RegistryError::InvalidPassword(
            "it must be at most 1024 bytes long",
        ));
    }
    Ok(())
}

/// Hashes and verifies passwords.
pub(crate) struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the user is unknown so
    /// that a log-in for an unknown name costs as much as one for a known name.
    dummy_hash: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish()
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], RegistryError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)
        .map_err(|e| RegistryError::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(buf)
}

fn hash_with(params: &Params, password: &[u8]) -> Result<String, RegistryError> {
    let salt_bytes = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| RegistryError::Internal(format!("salt: {e}")))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| RegistryError::Internal(format!("password hash: {e}")))
}

impl Hasher {
    pub(crate) fn new(config: &RegistryConfig) -> Result<Hasher, RegistryError> {
        let params = Params::new(
            config.argon2_memory_kib.max(Params::MIN_M_COST),
            config.argon2_iterations.max(1),
            1,
            None,
        )
        .map_err(|e| RegistryError::Config(format!("Argon2 parameters: {e}")))?;
        let dummy = random_bytes::<24>()?;
        let dummy_hash = hash_with(&params, &dummy)?;
        Ok(Hasher {
            params,
            permits: Arc::new(Semaphore::new(config.max_concurrent_hashes.max(1))),
            dummy_hash,
        })
    }

    /// Hashes a password into a PHC string (`$argon2id$v=19$m=…`).
    pub(crate) async fn hash(&self, password: &str) -> Result<String, RegistryError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RegistryError::ShuttingDown)?;
        let params = self.params.clone();
        let password = password.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || hash_with(&params, &password))
            .await
            .map_err(|e| RegistryError::Internal(format!("hash task: {e}")))?
    }

    /// Checks `password` against `hash`; with `None`, checks against a dummy hash and
    /// returns false, taking the same time.
    pub(crate) async fn verify(
        &self,
        password: &str,
        hash: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RegistryError::ShuttingDown)?;
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.as_bytes().to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            Argon2::default()
                .verify_password(&password, &parsed)
                .is_ok()
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("verify task: {e}")))?;
        Ok(known && ok)
    }
}

/// A new random bearer token: `nbt_` and 64 hex digits.
pub(crate) fn new_token() -> Result<String, RegistryError> {
    let bytes = random_bytes::<32>()?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// True when `s` has the shape of a token this registry issues.
pub(crate) fn looks_like_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The digest under which a token is stored.
pub(crate) fn token_digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(&RegistryConfig::for_tests()).unwrap();
        let hash = h.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct horse"));
        assert!(h.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!h.verify("wrong horse!", Some(&hash)).await.unwrap());
        assert!(!h.verify("correct horse", None).await.unwrap());
        assert!(!h.verify("x", Some("not a hash")).await.unwrap());
    }

    #[test]
    fn tokens() {
        let t = new_token().unwrap();
        assert!(looks_like_token(&t));
        assert!(!looks_like_token("nbt_xyz"));
        assert_ne!(new_token().unwrap(), t);
        assert_eq!(token_digest(&t).len(), 64);
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }
}
