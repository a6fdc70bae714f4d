//! Keys derived from `session.cookie_secret` with HKDF-SHA256, one per use, so that the
//! cookie MAC key and the record encryption key are independent even though the operator
//! manages one secret.

use hkdf::Hkdf;
use sha2::Sha256;

/// The derived keys. `Debug` never prints them.
#[derive(Clone)]
pub struct Keys {
    cookie_mac: [u8; 32],
    record_aead: [u8; 32],
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
        // 32-byte outputs are always within HKDF-SHA256's limit.
        let _ = hk.expand(b"cookie-mac", &mut cookie_mac);
        let _ = hk.expand(b"record-aead", &mut record_aead);
        Self {
            cookie_mac,
            record_aead,
        }
    }

    /// The HMAC key for cookie tags.
    pub fn cookie_mac(&self) -> &[u8] {
        &self.cookie_mac
    }

    /// The AEAD key for records at rest.
    pub fn record_aead(&self) -> &[u8; 32] {
        &self.record_aead
    }
}
