//! Signed unsubscribe tokens: every email carries a link that turns its kind off
//! without logging in.
//!
//! A token is `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))` with
//! payload `v1:<userId>:<KIND>`. Nothing is stored per token: whoever holds the secret
//! can mint them, nobody else can forge one, and the only thing a token can do is turn
//! one kind's email off for one user (idempotent), so it needs no expiry.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::kinds::Kind;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";

/// Longest token accepted (a payload of a UUID and the longest kind, plus the MAC, is ~110).
const MAX_TOKEN_CHARS: usize = 256;

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    /// A signer with `secret` (config guarantees at least 32 bytes).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        HmacSha256::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// The token that turns `kind` off for `user_id`.
    pub fn sign(&self, user_id: &str, kind: Kind) -> String {
        let payload = format!("{VERSION}:{user_id}:{}", kind.as_str());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// The (user id, kind) a genuine token names; `None` for anything else (malformed,
    /// forged, another secret, an unknown kind). The MAC is compared in constant time.
    pub fn verify(&self, token: &str) -> Option<(String, Kind)> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let (payload_b64, mac_b64) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(mac_b64).ok()?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let mut parts = payload.splitn(3, ':');
        let (version, user_id, kind) = (parts.next()?, parts.next()?, parts.next()?);
        if version != VERSION {
            return None;
        }
        let user_id = devconnect::user::parse_user_id(user_id).ok()?;
        Some((user_id, Kind::parse(kind)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "0190c3a4-0000-7000-8000-000000000001";

    #[test]
    fn a_signed_token_names_its_user_and_kind() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            s.verify(&s.sign(USER, Kind::Message)),
            Some((USER.to_string(), Kind::Message))
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_or_altered_is_refused() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let other = Signer::new(b"another secret of thirty-two bytes");
        let token = other.sign(USER, Kind::Message);
        assert_eq!(s.verify(&token), None);
        // Same MAC, payload swapped to another kind.
        let genuine = s.sign(USER, Kind::Message);
        let mac = genuine.split_once('.').unwrap().1;
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(format!("v1:{USER}:DIGEST")));
        assert_eq!(s.verify(&forged), None);
        for garbage in ["", ".", "abc", "a.b.c", &"x".repeat(1000)] {
            assert_eq!(s.verify(garbage), None, "{garbage}");
        }
    }
}
