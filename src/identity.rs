//! Who someone is, as the gate knows it: an [`Identity`] asserted by a provider, how a
//! request proved one ([`Via`]), and the opaque ids sessions and flows are known by. A leaf:
//! it imports nothing of linkgate, so every room above may use it.

use serde::{Deserialize, Serialize};

/// A signed-in identity as the provider asserts it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// `sub` (or the configured subject claim).
    pub subject: String,
    /// Email, if given.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the provider says the email is verified (absent counts as unverified).
    #[serde(default)]
    pub email_verified: bool,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// `preferred_username`.
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// Groups, from the configured claim.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Identity {
    /// An identity for tests: `sub@example.test`, verified, no name or groups.
    #[cfg(test)]
    pub fn sample(issuer: &str, sub: &str) -> Self {
        Identity {
            issuer: issuer.into(),
            subject: sub.into(),
            email: Some(format!("{sub}@example.test")),
            email_verified: true,
            name: None,
            preferred_username: None,
            groups: vec![],
        }
    }

    /// The stable key of this identity: issuer and subject.
    pub fn key(&self) -> String {
        format!("{}|{}", self.issuer, self.subject)
    }

    /// What to show a person: email, else username, else subject.
    pub fn display(&self) -> &str {
        self.email
            .as_deref()
            .or(self.preferred_username.as_deref())
            .unwrap_or(&self.subject)
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A session cookie.
    Session,
    /// An `Authorization: Bearer` JWT.
    Bearer,
    /// The platform's account JWT (`[account] source = "jwt"`) alone, no session: remembered
    /// by the token's hash, nothing written to the store.
    AccountJwt,
}

/// A random 128-bit identifier (a session id, or a browser binding).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpaqueId([u8; ID_LEN]);

/// The length of an [`OpaqueId`] in bytes.
pub const ID_LEN: usize = 16;

impl OpaqueId {
    /// A fresh random id from the operating system's CSPRNG.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// An id from given bytes (derived ones, see `Sessions::jwt_session_id`; sealed flows
    /// carry ids so).
    pub fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The id as lower-case hex (store keys).
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The raw bytes (AEAD associated data).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses the hex form back (operator tools).
    pub fn from_hex(hex: &str) -> Option<Self> {
        from_hex(hex).map(Self)
    }
}

impl std::fmt::Debug for OpaqueId {
    /// Only a prefix: enough to correlate logs, not enough to replay.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpaqueId({}…)", &self.to_hex()[..8])
    }
}

/// Bytes as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower- or upper-case hex of exactly `N` bytes back to bytes; `None` for anything else.
pub fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_goes_there_and_back() {
        let id = OpaqueId::random();
        assert_eq!(OpaqueId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(from_hex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(from_hex::<2>("0a"), None);
        assert_eq!(from_hex::<1>("zz"), None);
        assert_eq!(from_hex::<32>(&"g".repeat(64)), None);
    }
}
