//! Records at rest are sealed with XChaCha20-Poly1305 under a key derived from the cookie
//! secret. The associated data names the record (its store key), so a sealed record copied
//! under another key fails to open. A store dump alone reveals no token.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::keys::Keys;

const NONCE_LEN: usize = 24;

/// Seals `plaintext` for the record named `name`: `nonce || ciphertext+tag`.
pub fn seal(keys: &Keys, name: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(keys.record_aead().into());
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let nonce = XNonce::from_slice(&nonce_bytes);
    let mut out = nonce_bytes.to_vec();
    // Encryption with a valid key and nonce cannot fail for in-memory buffers.
    if let Ok(ct) = cipher.encrypt(
        nonce,
        Payload {
            msg: plaintext,
            aad: name,
        },
    ) {
        out.extend_from_slice(&ct);
    }
    out
}

/// Opens a sealed record; `None` if it was altered, sealed under another key or another
/// name.
pub fn open(keys: &Keys, name: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(keys.record_aead().into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: name })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_under_their_name_and_key() {
        let k = Keys::derive(&[1u8; 32]);
        let sealed = seal(&k, b"session:abc", b"{\"sub\":\"alice\"}");
        assert!(
            !sealed.windows(5).any(|w| w == b"alice"),
            "plaintext visible at rest"
        );
        assert_eq!(
            open(&k, b"session:abc", &sealed).unwrap(),
            b"{\"sub\":\"alice\"}"
        );
        assert!(open(&k, b"session:abd", &sealed).is_none());
        assert!(open(&Keys::derive(&[2u8; 32]), b"session:abc", &sealed).is_none());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(&k, b"session:abc", &bad).is_none());
    }
}
