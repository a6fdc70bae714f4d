//! The session cookie: an opaque random id with an HMAC tag, so a forged or altered cookie is
//! refused by arithmetic alone, before any store lookup.
//!
//! Wire form: base64url(no padding) of `id (16 bytes) || tag (16 bytes)`, where
//! `tag = HMAC-SHA256(mac_key, "session" || id)[..16]`. The id carries 128 random bits; the
//! tag is compared in constant time. The same construction tags the CSRF token of forms,
//! under another label.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;
use subtle::ConstantTimeEq;

use super::keys::Keys;

use crate::identity::ID_LEN;
const TAG_LEN: usize = 16;
/// The exact length of an encoded cookie value.
pub const ENCODED_LEN: usize = (ID_LEN + TAG_LEN) * 4 / 3 + 1;

pub use crate::identity::OpaqueId;

/// What an [`OpaqueId`] is for; each purpose gets its own tag domain, so a binding cookie can
/// never be replayed as a session cookie.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// The session cookie.
    Session,
    /// The browser-binding cookie of login flows.
    Binding,
    /// The CSRF token of forms.
    Csrf,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"session",
            Purpose::Binding => b"binding",
            Purpose::Csrf => b"csrf",
        }
    }
}

fn tag(keys: &Keys, purpose: Purpose, id: &OpaqueId) -> [u8; TAG_LEN] {
    let mut mac = keys.cookie_mac();
    mac.update(purpose.label());
    mac.update(id.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full[..TAG_LEN]);
    out
}

/// Encodes an id with its tag for a cookie value.
pub fn encode(keys: &Keys, purpose: Purpose, id: &OpaqueId) -> String {
    let mut raw = [0u8; ID_LEN + TAG_LEN];
    raw[..ID_LEN].copy_from_slice(id.as_bytes());
    raw[ID_LEN..].copy_from_slice(&tag(keys, purpose, id));
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes and verifies a cookie value; `None` for anything forged, altered or malformed.
pub fn decode(keys: &Keys, purpose: Purpose, value: &str) -> Option<OpaqueId> {
    if value.len() != ENCODED_LEN {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
    if raw.len() != ID_LEN + TAG_LEN {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&raw[..ID_LEN]);
    let id = OpaqueId::from_bytes(id);
    let expected = tag(keys, purpose, &id);
    bool::from(expected.ct_eq(&raw[ID_LEN..])).then_some(id)
}

pub use crate::credentials::{all_cookies, cookies};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::derive(&[7u8; 32])
    }

    #[test]
    fn round_trips_and_refuses_tampering() {
        let k = keys();
        let id = OpaqueId::random();
        let cookie = encode(&k, Purpose::Session, &id);
        assert_eq!(cookie.len(), ENCODED_LEN);
        assert_eq!(decode(&k, Purpose::Session, &cookie), Some(id));
        // Another purpose, another key, one flipped character: all refused.
        assert_eq!(decode(&k, Purpose::Binding, &cookie), None);
        assert_eq!(
            decode(&Keys::derive(&[8u8; 32]), Purpose::Session, &cookie),
            None
        );
        let mut bytes = cookie.into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            decode(&k, Purpose::Session, &String::from_utf8(bytes).unwrap()),
            None
        );
    }

    #[test]
    fn hex_round_trips() {
        let id = OpaqueId::random();
        assert_eq!(OpaqueId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(OpaqueId::from_hex("zz"), None);
    }

    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    proptest! {
        #[test]
        fn arbitrary_values_never_verify(value in ".{0,64}") {
            prop_assert_eq!(decode(&keys(), Purpose::Session, &value), None);
        }

        /// Values of exactly the right length and alphabet: only the tag can refuse them.
        #[test]
        fn well_formed_forgeries_never_verify(value in "[A-Za-z0-9_-]{43}") {
            prop_assert_eq!(decode(&keys(), Purpose::Session, &value), None);
            prop_assert_eq!(decode(&keys(), Purpose::Binding, &value), None);
        }

        /// Any one character of a genuine cookie changed (id or tag, any position, any
        /// replacement in the alphabet): refused.
        #[test]
        fn a_modified_cookie_never_verifies(id in any::<[u8; 16]>(), pos in 0usize..ENCODED_LEN, step in 1usize..64) {
            let k = keys();
            let id = OpaqueId::from_bytes(id);
            let genuine = encode(&k, Purpose::Session, &id);
            prop_assert_eq!(decode(&k, Purpose::Session, &genuine), Some(id));
            let mut bytes = genuine.into_bytes();
            let at = ALPHABET.iter().position(|c| *c == bytes[pos]).unwrap_or(0);
            bytes[pos] = ALPHABET[(at + step) % ALPHABET.len()];
            let modified = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(decode(&k, Purpose::Session, &modified), None);
        }

        /// The same id under another purpose's tag, or with a tag of another id, never
        /// verifies: a binding or CSRF token is never a session cookie.
        #[test]
        fn tags_do_not_travel_between_ids_or_purposes(a in any::<[u8; 16]>(), b in any::<[u8; 16]>()) {
            prop_assume!(a != b);
            let k = keys();
            let (a, b) = (OpaqueId::from_bytes(a), OpaqueId::from_bytes(b));
            let csrf = encode(&k, Purpose::Csrf, &a);
            prop_assert_eq!(decode(&k, Purpose::Session, &csrf), None);
            let raw_a = URL_SAFE_NO_PAD.decode(encode(&k, Purpose::Session, &a)).unwrap();
            let raw_b = URL_SAFE_NO_PAD.decode(encode(&k, Purpose::Session, &b)).unwrap();
            let mut spliced = raw_a[..ID_LEN].to_vec();
            spliced.extend_from_slice(&raw_b[ID_LEN..]);
            prop_assert_eq!(decode(&k, Purpose::Session, &URL_SAFE_NO_PAD.encode(spliced)), None);
        }
    }
}
