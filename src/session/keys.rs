//! Keys derived from `session.cookie_secret` with HKDF-SHA256, one per use, so that the
//! cookie MAC key and the record encryption key are independent even though the operator
//! manages one secret.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The derived keys. `Debug` never prints them.
#[derive(Clone)]
pub struct Keys {
    /// The cookie HMAC with its key already absorbed: every tag clones it instead of
    /// hashing the padded key again (two SHA-256 blocks saved per cookie check).
    cookie_mac: Hmac<Sha256>,
    record_aead: [u8; 32],
    flow_aead: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

impl Keys {
    /// Derives every key from the 32-byte cookie secret.
    pub fn derive(secret: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"linkgate/v1"), secret);
        let mut cookie_mac = [0u8; 32];
        let mut record_aead = [0u8; 32];
        let mut flow_aead = [0u8; 32];
        // 32-byte outputs are always within HKDF-SHA256's limit.
        let _ = hk.expand(b"cookie-mac", &mut cookie_mac);
        let _ = hk.expand(b"record-aead", &mut record_aead);
        let _ = hk.expand(b"flow-aead", &mut flow_aead);
        let cookie_mac = <Hmac<Sha256> as Mac>::new_from_slice(&cookie_mac)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self {
            cookie_mac,
            record_aead,
            flow_aead,
        }
    }

    /// A fresh HMAC for a cookie tag, keyed.
    pub fn cookie_mac(&self) -> Hmac<Sha256> {
        self.cookie_mac.clone()
    }

    /// The AEAD key for records at rest.
    pub fn record_aead(&self) -> &[u8; 32] {
        &self.record_aead
    }

    /// The AEAD key for login flows sealed into cookies (see `session::flow`): its own key,
    /// so a flow cookie can never be opened as a record at rest, nor the reverse.
    pub fn flow_aead(&self) -> &[u8; 32] {
        &self.flow_aead
    }
}
