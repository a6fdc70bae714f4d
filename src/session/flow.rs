//! A login flow in a sealed, short-lived cookie: what `start` must remember until the
//! provider sends the browser back to `callback` (PKCE verifier, nonce, `rd`, intent,
//! provider, `redirect_uri`, and for a connect the session that asked for it).
//!
//! SECURITY: an anonymous `GET {prefix}/start` costs the store nothing. The flow travels in
//! the browser, sealed with XChaCha20-Poly1305 under a key of its own (HKDF of the cookie
//! secret, see [`super::keys`]), so the client can neither read the verifier nor change a
//! field. Each flow is bound to its `state`: the cookie carries SHA-256 of the state and the
//! callback compares it in constant time, and the cookie's name carries a short prefix of
//! the state so that several tabs can sign in at once (one cookie each).
//!
//! What replaces "taken once from the store": the callback clears the flow cookie whatever
//! happens, so a browser can use a flow once; the authorization code is single-use at the
//! provider (OAuth 2.0, RFC 6749 section 4.1.2), so a replay of a captured callback (URL and
//! cookie) fails at the exchange; and after a successful exchange, and only then, the state
//! is marked used in the store (`flow:{state}`, until the flow would have expired) so that
//! even a provider that accepted a code twice could not complete one flow twice. A flow
//! expires ten minutes after `start` (inside the seal, not only the cookie's `Max-Age`).
//!
//! Size: the sealed value is bounded: `rd` is at most [`MAX_RD`] bytes (longer is refused at
//! `start`), `redirect_uri` comes from the configuration (`public_url`, or a configured
//! host), the rest is fixed. One flow cookie stays under [`MAX_VALUE`] bytes, well below the
//! ~4 KB at which browsers drop a cookie; a browser keeps at most [`MAX_FLOWS`] of them and
//! at most [`BUDGET`] bytes in all (the oldest make room).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::cookie::OpaqueId;
use super::keys::Keys;
use super::Intent;

/// The longest `rd` (bytes, after query decoding) a flow keeps: 2 KiB. `start` refuses a
/// longer one with 400; linkgate's own redirects to `start` never send one (they fall back
/// to `/`).
pub const MAX_RD: usize = 2048;
/// The most flow cookies one browser keeps at once (tabs signing in together).
pub const MAX_FLOWS: usize = 4;
/// The longest sealed flow cookie value (base64 text); a flow that would be longer is not
/// made. With `rd` at its bound the value is about 3.1 KB.
pub const MAX_VALUE: usize = 3400;
/// The most bytes of flow cookie values a browser keeps at once; older flows are dropped to
/// make room, so the `Cookie` header stays within what front proxies accept (nginx: 8 KB a
/// header line by default).
pub const BUDGET: usize = 6144;
/// The length of a `state`: 32 random bytes as hex.
pub const STATE_LEN: usize = 64;
/// How much of the state names the cookie (48 bits: tabs never collide in practice).
const NAME_STATE_LEN: usize = 12;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const AAD: &[u8] = b"linkgate/flow";

/// The session that started a flow, for a flow that may link: the callback links only for
/// this same session, still holding this same identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AskedBy {
    /// The session id.
    pub session: OpaqueId,
    /// SHA-256 of the identity key (issuer and subject) that session held.
    pub identity: [u8; 32],
}

impl AskedBy {
    /// The session `session` holding the identity whose key is `identity_key`.
    pub fn new(session: OpaqueId, identity_key: &str) -> Self {
        Self {
            session,
            identity: Sha256::digest(identity_key.as_bytes()).into(),
        }
    }

    /// Whether `session`, holding the identity keyed `identity_key`, is the one that asked
    /// (constant time).
    pub fn is(&self, session: &OpaqueId, identity_key: &str) -> bool {
        let other = Self::new(*session, identity_key);
        let same_session = self.session.as_bytes().ct_eq(other.session.as_bytes());
        let same_identity = self.identity.ct_eq(&other.identity);
        bool::from(same_session & same_identity)
    }
}

/// A login in progress. `Debug` leaves the PKCE verifier and the nonce out.
#[derive(Clone, PartialEq, Eq)]
pub struct Flow {
    /// Which provider (`sso` or `account`).
    pub provider: String,
    /// Why.
    pub intent: Intent,
    /// PKCE verifier.
    pub verifier: String,
    /// The nonce the id_token must carry.
    pub nonce: String,
    /// Where to go afterwards (already validated, at most [`MAX_RD`] bytes).
    pub rd: String,
    /// The redirect URI sent to the provider (the exchange must repeat it).
    pub redirect_uri: String,
    /// The session that started it, when it was started by one (connect flows, and account
    /// sign-ins of a session waiting for its account).
    pub asked_by: Option<AskedBy>,
    /// Unix milliseconds after which the flow is refused (milliseconds: the oldest of
    /// several flows started within a second is still the one dropped first).
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("provider", &self.provider)
            .field("intent", &self.intent)
            .field("verifier", &crate::secret::Redacted)
            .field("nonce", &crate::secret::Redacted)
            .field("rd", &self.rd)
            .field("redirect_uri", &self.redirect_uri)
            .field("asked_by", &self.asked_by)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// A fresh random `state` ([`STATE_LEN`] hex characters).
pub fn new_state() -> String {
    OpaqueId::random().to_hex() + &OpaqueId::random().to_hex()
}

/// Whether `state` has the shape linkgate gives it (anything else is not looked up).
pub fn is_state(state: &str) -> bool {
    state.len() == STATE_LEN && state.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The name of the cookie of the flow with `state`, under `prefix` (the binding cookie
/// name, e.g. `__Host-linkgate_bind`): `prefix_` and the first hex digits of the state.
pub fn cookie_name(prefix: &str, state: &str) -> String {
    let short: String = state.chars().take(NAME_STATE_LEN).collect();
    format!("{prefix}_{short}")
}

fn state_hash(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

// === encoding ===

fn put_str(out: &mut Vec<u8>, s: &str) -> Option<()> {
    let len = u16::try_from(s.len()).ok()?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Some(())
}

/// Reads fields off the front of a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Flow {
    /// `version | expires_at | sha256(state) | intent | asked_by? | provider | verifier |
    /// nonce | redirect_uri | rd`, strings as a 16-bit length and bytes. Binary rather than
    /// JSON: no escaping can make a value grow.
    fn encode(&self, state: &str) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(256 + self.rd.len() + self.redirect_uri.len());
        out.push(VERSION);
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&state_hash(state));
        out.push(match self.intent {
            Intent::Login => 0,
            Intent::Connect => 1,
        });
        match &self.asked_by {
            None => out.push(0),
            Some(a) => {
                out.push(1);
                out.extend_from_slice(a.session.as_bytes());
                out.extend_from_slice(&a.identity);
            }
        }
        for s in [
            &self.provider,
            &self.verifier,
            &self.nonce,
            &self.redirect_uri,
            &self.rd,
        ] {
            put_str(&mut out, s)?;
        }
        Some(out)
    }

    /// The inverse of [`Flow::encode`], with the state hash still to be checked.
    fn decode(plain: &[u8]) -> Option<(Flow, [u8; 32])> {
        let mut r = Reader(plain);
        if r.byte()? != VERSION {
            return None;
        }
        let expires_at_ms = i64::from_be_bytes(r.array()?);
        let hash: [u8; 32] = r.array()?;
        let intent = match r.byte()? {
            0 => Intent::Login,
            1 => Intent::Connect,
            _ => return None,
        };
        let asked_by = match r.byte()? {
            0 => None,
            1 => Some(AskedBy {
                session: OpaqueId::from_bytes(r.array()?),
                identity: r.array()?,
            }),
            _ => return None,
        };
        let flow = Flow {
            provider: r.string()?,
            intent,
            verifier: r.string()?,
            nonce: r.string()?,
            redirect_uri: r.string()?,
            rd: r.string()?,
            asked_by,
            expires_at_ms,
        };
        r.0.is_empty().then_some((flow, hash))
    }

    /// Seals the flow of `state` into a cookie value; `None` when it would be longer than
    /// [`MAX_VALUE`] (it is then not made).
    pub fn seal(&self, keys: &Keys, state: &str) -> Option<String> {
        let plain = self.encode(state)?;
        let cipher = XChaCha20Poly1305::new(keys.flow_aead().into());
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: AAD,
                },
            )
            .ok()?;
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&ct);
        let value = URL_SAFE_NO_PAD.encode(raw);
        (value.len() <= MAX_VALUE).then_some(value)
    }

    /// Opens a flow cookie value whatever its state (to find the oldest flows to drop);
    /// `None` for anything forged, altered, malformed or oversized.
    pub fn open_any(keys: &Keys, value: &str) -> Option<Flow> {
        Self::open_inner(keys, value).map(|(flow, _)| flow)
    }

    /// Opens the flow cookie value of `state`: `None` unless it was sealed by linkgate under
    /// this secret for this very state. Expiry is the caller's to check ([`Flow::expired`]).
    pub fn open(keys: &Keys, value: &str, state: &str) -> Option<Flow> {
        let (flow, hash) = Self::open_inner(keys, value)?;
        bool::from(hash.ct_eq(&state_hash(state))).then_some(flow)
    }

    fn open_inner(keys: &Keys, value: &str) -> Option<(Flow, [u8; 32])> {
        if value.len() > MAX_VALUE {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(keys.flow_aead().into());
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: AAD })
            .ok()?;
        Self::decode(&plain)
    }

    /// Whether the flow is past its ten minutes at `now_ms` (unix milliseconds).
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::derive(&[9u8; 32])
    }

    fn flow(rd: &str) -> Flow {
        Flow {
            provider: "sso".into(),
            intent: Intent::Connect,
            verifier: "v".repeat(43),
            nonce: "n".repeat(43),
            rd: rd.into(),
            redirect_uri: "https://shop.example.com/oauth2/callback".into(),
            asked_by: Some(AskedBy::new(OpaqueId::random(), "https://acc|42")),
            expires_at_ms: 1_900_000_000_000,
        }
    }

    #[test]
    fn a_flow_opens_only_for_its_state_and_key() {
        let k = keys();
        let state = new_state();
        let f = flow("/orders?id=7");
        let value = f.seal(&k, &state).unwrap();
        assert!(!value.contains("orders"), "sealed, not readable");
        assert_eq!(Flow::open(&k, &value, &state), Some(f.clone()));
        assert_eq!(Flow::open(&k, &value, &new_state()), None, "another state");
        assert_eq!(Flow::open(&Keys::derive(&[1u8; 32]), &value, &state), None);
        let mut bytes = value.into_bytes();
        bytes[40] = if bytes[40] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        assert_eq!(Flow::open(&k, &altered, &state), None);
    }

    #[test]
    fn a_flow_with_rd_at_its_bound_stays_well_under_four_kilobytes() {
        // The worst case: every other byte of rd multi-byte, no escaping possible.
        let rd = "/".to_string() + &"é".repeat((MAX_RD - 1) / 2);
        assert!(rd.len() <= MAX_RD);
        let value = flow(&rd).seal(&keys(), &new_state()).unwrap();
        assert!(value.len() <= MAX_VALUE, "{}", value.len());
        // Name, value and attributes of the Set-Cookie line.
        assert!(value.len() + 120 < 3600);
    }

    #[test]
    fn asked_by_tells_sessions_and_identities_apart() {
        let id = OpaqueId::random();
        let a = AskedBy::new(id, "iss|alice");
        assert!(a.is(&id, "iss|alice"));
        assert!(!a.is(&OpaqueId::random(), "iss|alice"));
        assert!(!a.is(&id, "iss|mallory"));
    }

    #[test]
    fn states_have_one_shape() {
        let s = new_state();
        assert!(is_state(&s));
        assert!(!is_state(&s[1..]));
        assert!(!is_state(&format!("{}g", &s[1..])));
        assert_eq!(cookie_name("__Host-linkgate_bind", &s).len(), 20 + 1 + 12);
    }

    proptest! {
        #[test]
        fn open_never_panics_and_never_accepts_noise(value in ".{0,600}", state in "[0-9a-f]{64}") {
            prop_assert_eq!(Flow::open(&keys(), &value, &state), None);
            prop_assert_eq!(Flow::open_any(&keys(), &value), None);
        }

        #[test]
        fn open_never_accepts_a_changed_character(pos in 0usize..4000, step in 1usize..64, rd in "/[ -~]{0,300}") {
            let k = keys();
            let state = new_state();
            let f = flow(&rd);
            let value = f.seal(&k, &state).unwrap();
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut bytes = value.clone().into_bytes();
            let i = pos % bytes.len();
            let at = alphabet.iter().position(|c| *c == bytes[i]).unwrap_or(0);
            bytes[i] = alphabet[(at + step) % alphabet.len()];
            let altered = String::from_utf8(bytes).unwrap();
            prop_assert_ne!(&altered, &value);
            prop_assert_eq!(Flow::open(&k, &altered, &state), None);
            prop_assert_eq!(Flow::open(&k, &value, &state), Some(f));
        }

        #[test]
        fn decode_never_panics_on_arbitrary_plaintext(plain in proptest::collection::vec(any::<u8>(), 0..400)) {
            let decoded = Flow::decode(&plain);
            prop_assert!(decoded.is_none() || plain.first() == Some(&VERSION));
        }

        #[test]
        fn every_flow_round_trips(
            rd in "/\\PC{0,200}",
            verifier in "[A-Za-z0-9_-]{43,128}",
            uri in "https?://[a-z.]{1,40}(:[0-9]{1,5})?/oauth2/callback",
            connect in any::<bool>(),
            session in proptest::option::of(any::<[u8; 16]>()),
            expires_at_ms in any::<i64>(),
        ) {
            let k = keys();
            let state = new_state();
            let f = Flow {
                provider: "account".into(),
                intent: if connect { Intent::Connect } else { Intent::Login },
                verifier,
                nonce: "n".into(),
                rd,
                redirect_uri: uri,
                asked_by: session.map(|s| AskedBy::new(OpaqueId::from_bytes(s), "iss|sub")),
                expires_at_ms,
            };
            let value = f.seal(&k, &state).unwrap();
            prop_assert!(value.len() <= MAX_VALUE);
            prop_assert_eq!(Flow::open(&k, &value, &state), Some(f.clone()));
            prop_assert_eq!(Flow::open_any(&k, &value), Some(f));
        }
    }
}
