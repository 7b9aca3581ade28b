//! Passwords (argon2id), random tokens and API keys.

use crate::AppError;
use crate::error::anyhow_like;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use rand::Rng;
use sha2::{Digest, Sha256};

/// Hashes a password with argon2id on a blocking thread (it is deliberately slow).
///
/// # Errors
/// Internal, when hashing fails.
pub async fn hash_password(password: String, memory_kib: u32, iterations: u32) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let params = Params::new(memory_kib, iterations, 1, None).map_err(|e| anyhow_like::msg(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut salt_bytes = [0u8; 16];
        rand::rng().fill(&mut salt_bytes);
        argon
            .hash_password_with_salt(password.as_bytes(), &salt_bytes)
            .map(|h| h.to_string())
            .map_err(|e| anyhow_like::msg(e.to_string()))
    })
    .await
    .map_err(anyhow_like::internal)?
}

/// Checks a password against a stored hash on a blocking thread. The parameters come from
/// the stored hash, so older hashes keep verifying after the settings change.
pub async fn verify_password(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || Argon2::default().verify_password(password.as_bytes(), stored.as_str()).is_ok())
        .await
        .unwrap_or(false)
}

/// A random URL-safe token of `bytes` random bytes (hex encoded).
#[must_use]
pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

/// SHA-256 of a secret token, hex encoded. Tokens carry 128+ random bits, so a fast hash is
/// enough (no dictionary to attack) and lets us look them up by hash.
#[must_use]
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new API key: `cbk_` + 8 visible prefix characters + 32 secret characters.
#[must_use]
pub fn new_api_key() -> (String, String) {
    let body = random_token(20);
    let prefix = format!("cbk_{}", &body[..8]);
    (format!("cbk_{body}"), prefix)
}

/// A temporary password for a new or reset account: 16 characters, letters and digits.
#[must_use]
pub fn temporary_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    loop {
        let p: String = (0..16).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        if p.chars().any(|c| c.is_ascii_digit()) && p.chars().any(char::is_alphabetic) {
            return p;
        }
    }
}

/// Compares two strings in time independent of where they differ.
#[must_use]
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = hash_password("correct horse 1".into(), 1024, 1).await.unwrap_or_default();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse 1".into(), h.clone()).await);
        assert!(!verify_password("correct horse 2".into(), h).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
    }

    #[test]
    fn api_keys_have_a_visible_prefix() {
        let (key, prefix) = new_api_key();
        assert!(key.starts_with(&prefix));
        assert_eq!(key.len(), 44);
        assert_ne!(new_api_key().0, key);
    }
}
