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

use pingora::http::RequestHeader;

use super::keys::Keys;

const ID_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// The exact length of an encoded cookie value.
pub const ENCODED_LEN: usize = (ID_LEN + TAG_LEN) * 4 / 3 + 1;

/// A random 128-bit identifier (a session id, or a browser binding).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpaqueId([u8; ID_LEN]);

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
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The raw bytes (AEAD associated data).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses the hex form back (operator tools).
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != ID_LEN * 2 {
            return None;
        }
        let mut out = [0u8; ID_LEN];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Debug for OpaqueId {
    /// Only a prefix: enough to correlate logs, not enough to replay.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpaqueId({}…)", &self.to_hex()[..8])
    }
}

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
    mac.update(&id.0);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full[..TAG_LEN]);
    out
}

/// Encodes an id with its tag for a cookie value.
pub fn encode(keys: &Keys, purpose: Purpose, id: &OpaqueId) -> String {
    let mut raw = [0u8; ID_LEN + TAG_LEN];
    raw[..ID_LEN].copy_from_slice(&id.0);
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
    let id = OpaqueId(id);
    let expected = tag(keys, purpose, &id);
    bool::from(expected.ct_eq(&raw[ID_LEN..])).then_some(id)
}

// === reading cookies ===

/// Every `(name, value)` pair of the request's `Cookie` headers.
pub fn all_cookies(req: &RequestHeader) -> impl Iterator<Item = (&str, &str)> + '_ {
    req.headers
        .get_all(http::header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
}

/// Every value of cookie `name` in the request's `Cookie` headers.
pub fn cookies<'a, 'n>(req: &'a RequestHeader, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
where
    'a: 'n,
{
    all_cookies(req).filter_map(move |(k, v)| (k == name).then_some(v))
}

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
            let id = OpaqueId(id);
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
            let (a, b) = (OpaqueId(a), OpaqueId(b));
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
