//! argon2id password hashing, off the async runtime (hashing takes tens of ms of CPU).

use std::sync::LazyLock;

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use devconnect::AppError;

/// Shortest accepted password.
pub const MIN_CHARS: usize = 8;
/// Longest accepted password (bounds the hashing cost an attacker can ask for).
pub const MAX_CHARS: usize = 128;

/// Checks the length rule.
pub fn validate(password: &str) -> Result<(), AppError> {
    let len = password.chars().count();
    if !(MIN_CHARS..=MAX_CHARS).contains(&len) {
        return Err(AppError::Validation(format!(
            "password must be {MIN_CHARS} to {MAX_CHARS} characters"
        )));
    }
    Ok(())
}

/// Hashes with argon2id and the crate's default (OWASP) parameters, as a PHC string.
pub async fn hash(password: String) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|e| AppError::internal("hashing task", e))?
}

fn hash_now(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal("argon2", e))
}

/// A hash of nothing anyone knows: verifying against it for unknown emails makes
/// "no such user" take as long as "wrong password", so timing reveals no accounts.
static DECOY: LazyLock<String> = LazyLock::new(|| hash_now("decoy password never issued").unwrap_or_default());

/// Verifies `password` against `stored`, or against the decoy when there is no user.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
        let phc = stored.as_deref().unwrap_or(DECOY.as_str());
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && stored.is_some()
    })
    .await
    .map_err(|e| AppError::internal("verify task", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_characters_are_too_short() {
        assert!(validate("1234567").is_err());
        assert!(validate("12345678").is_ok());
    }

    #[test]
    fn passwords_longer_than_128_characters_are_rejected() {
        assert!(validate(&"x".repeat(129)).is_err());
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), Some(h.clone())).await.unwrap());
        assert!(!verify("wrong horse".into(), Some(h)).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        assert!(!verify("decoy password never issued".into(), None).await.unwrap());
    }
}
