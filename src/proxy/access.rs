//! The access line: one per request, `linkgate::access` at `INFO`.
//!
//! It is written here, byte for byte as tracing-subscriber's `fmt` layer would write the
//! `tracing` event (text, with or without ANSI colours, or JSON: the tests below hold the two
//! side by side), into a per-thread buffer sent to stderr in one `write`. Through
//! tracing-subscriber the same line cost ~22k instructions a request (its field visitor,
//! `fmt::Write` adaptors, the colour wrappers, its clock); here a few thousand
//! (bench/README.md, "Logging"). When `linkgate::access` is filtered out (`[log] level =
//! "warn"`, or `RUST_LOG`), nothing is built at all. Without the subscriber of
//! [`crate::logging::init`] (a library user with its own), the line goes through `tracing`
//! as before.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::IpAddr;

use crate::logging::{self, AccessFormat};

/// The `tracing` target of the access line.
pub const TARGET: &str = "linkgate::access";

/// The fields of one access line, in the order they are written.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// The status written to the client (0: none).
    pub status: u16,
    pub duration_ms: f64,
    /// The route's upstream name, `-` without one.
    pub upstream: &'a str,
    pub decision: &'a str,
    pub peer: Option<IpAddr>,
    /// The error that ended the request, if one did.
    pub error: Option<&'a pingora::Error>,
}

/// Whether an access line would be written at all (cheap: `tracing`'s cached interest).
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// Writes the access line (when `linkgate::access` is enabled).
pub fn log(line: &AccessLine<'_>) {
    if !enabled() {
        return;
    }
    match logging::access_format() {
        Some(format) => write_line(line, format),
        None => emit_tracing(line),
    }
}

/// The line as a `tracing` event: what tracing-subscriber formats itself (the fallback, and
/// the reference the tests compare [`format_line`] with).
pub fn emit_tracing(line: &AccessLine<'_>) {
    tracing::info!(
        target: "linkgate::access",
        method = %line.method,
        path = %line.path,
        status = line.status,
        duration_ms = line.duration_ms,
        upstream = line.upstream,
        decision = line.decision,
        peer = ?line.peer,
        error = line.error.map(|e| e.to_string()),
    );
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

fn write_line(line: &AccessLine<'_>, format: AccessFormat) {
    let now = time::OffsetDateTime::now_utc();
    BUF.with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return emit_tracing(line);
        };
        buf.clear();
        format_line(&mut buf, line, format, now);
        // One write, as tracing-subscriber's stderr writer does; a failed write to stderr
        // is dropped like it drops it.
        let _ = std::io::stderr().write_all(&buf);
        if buf.capacity() > 4096 {
            *buf = Vec::with_capacity(256);
        }
    });
}

const DIM: &[u8] = b"\x1b[2m";
const ITALIC: &[u8] = b"\x1b[3m";
const RESET: &[u8] = b"\x1b[0m";

/// The line, newline included, as tracing-subscriber's `fmt` layer formats the event of
/// [`emit_tracing`] at time `now`.
pub fn format_line(
    buf: &mut Vec<u8>,
    line: &AccessLine<'_>,
    format: AccessFormat,
    now: time::OffsetDateTime,
) {
    if format.json {
        return format_json(buf, line, now);
    }
    let ansi = format.ansi;
    if ansi {
        buf.extend_from_slice(DIM);
    }
    timestamp(buf, now);
    if ansi {
        buf.extend_from_slice(RESET);
        buf.extend_from_slice(b" \x1b[32m INFO\x1b[0m ");
        buf.extend_from_slice(DIM);
        buf.extend_from_slice(TARGET.as_bytes());
        buf.extend_from_slice(RESET);
        buf.extend_from_slice(DIM);
        buf.push(b':');
        buf.extend_from_slice(RESET);
        buf.push(b' ');
    } else {
        buf.extend_from_slice(b"  INFO ");
        buf.extend_from_slice(TARGET.as_bytes());
        buf.extend_from_slice(b": ");
    }
    let name = |buf: &mut Vec<u8>, first: bool, name: &str| {
        if !first {
            buf.push(b' ');
        }
        if ansi {
            buf.extend_from_slice(ITALIC);
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(RESET);
            buf.extend_from_slice(DIM);
            buf.push(b'=');
            buf.extend_from_slice(RESET);
        } else {
            buf.extend_from_slice(name.as_bytes());
            buf.push(b'=');
        }
    };
    name(buf, true, "method");
    buf.extend_from_slice(line.method.as_bytes());
    name(buf, false, "path");
    buf.extend_from_slice(line.path.as_bytes());
    name(buf, false, "status");
    decimal(buf, u64::from(line.status));
    name(buf, false, "duration_ms");
    let _ = write!(buf, "{:?}", line.duration_ms);
    name(buf, false, "upstream");
    debug_str(buf, line.upstream);
    name(buf, false, "decision");
    debug_str(buf, line.decision);
    name(buf, false, "peer");
    match line.peer {
        Some(ip) => {
            buf.extend_from_slice(b"Some(");
            ip_text(buf, ip);
            buf.push(b')');
        }
        None => buf.extend_from_slice(b"None"),
    }
    if let Some(e) = line.error {
        name(buf, false, "error");
        let _ = write!(buf, "{:?}", e.to_string());
    }
    buf.push(b'\n');
}

/// tracing-subscriber's JSON with `flatten_event(true)`: timestamp, level, the fields, the
/// target; strings and floats through serde_json, as it does.
fn format_json(buf: &mut Vec<u8>, line: &AccessLine<'_>, now: time::OffsetDateTime) {
    buf.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(buf, now);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"method\":");
    json_str(buf, line.method);
    buf.extend_from_slice(b",\"path\":");
    json_str(buf, line.path);
    buf.extend_from_slice(b",\"status\":");
    decimal(buf, u64::from(line.status));
    buf.extend_from_slice(b",\"duration_ms\":");
    let _ = serde_json::to_writer(&mut *buf, &line.duration_ms);
    buf.extend_from_slice(b",\"upstream\":");
    json_str(buf, line.upstream);
    buf.extend_from_slice(b",\"decision\":");
    json_str(buf, line.decision);
    buf.extend_from_slice(b",\"peer\":\"");
    match line.peer {
        Some(ip) => {
            buf.extend_from_slice(b"Some(");
            ip_text(buf, ip);
            buf.push(b')');
        }
        None => buf.extend_from_slice(b"None"),
    }
    buf.push(b'"');
    if let Some(e) = line.error {
        buf.extend_from_slice(b",\"error\":");
        json_str(buf, &e.to_string());
    }
    buf.extend_from_slice(b",\"target\":\"");
    buf.extend_from_slice(TARGET.as_bytes());
    buf.extend_from_slice(b"\"}\n");
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(plain) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

/// Bytes that `{:?}` of a `str` and JSON both write as they are.
fn plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' '
}

/// `{:?}` of a `str`: the common case (a label, an upstream name) without the formatter.
fn debug_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(plain) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

fn decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// `{:02}`-style fixed width.
fn padded(buf: &mut Vec<u8>, n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut n = n;
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&digits[..width]);
}

/// tracing-subscriber's `SystemTime` format: `2026-11-29T17:55:50.123456Z`.
fn timestamp(buf: &mut Vec<u8>, now: time::OffsetDateTime) {
    let year = now.year();
    if (0..=9999).contains(&year) {
        padded(buf, year as u32, 4);
    } else {
        let _ = write!(buf, "{year}");
    }
    buf.push(b'-');
    padded(buf, u32::from(u8::from(now.month())), 2);
    buf.push(b'-');
    padded(buf, u32::from(now.day()), 2);
    buf.push(b'T');
    padded(buf, u32::from(now.hour()), 2);
    buf.push(b':');
    padded(buf, u32::from(now.minute()), 2);
    buf.push(b':');
    padded(buf, u32::from(now.second()), 2);
    buf.push(b'.');
    padded(buf, now.microsecond(), 6);
    buf.push(b'Z');
}

fn ip_text(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                decimal(buf, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What tracing-subscriber, set up as `logging::init` sets it up, writes for the event.
    fn reference(line: &AccessLine<'_>, format: AccessFormat, builder_ansi: bool) -> String {
        let out = Captured::default();
        let builder = logging::builder(tracing_subscriber::EnvFilter::new("info"), builder_ansi)
            .with_writer(out.clone());
        let emit = || emit_tracing(line);
        if format.json {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// The reference's timestamp, read back (they differ by the microseconds between).
    fn stamp_of(text: &str) -> time::OffsetDateTime {
        let start = text.find("20").unwrap();
        let end = start + text[start..].find('Z').unwrap() + 1;
        time::OffsetDateTime::parse(
            &text[start..end],
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    }

    fn lines() -> Vec<AccessLine<'static>> {
        let error: &'static pingora::Error = Box::leak(pingora::Error::explain(
            pingora::ErrorType::ConnectRefused,
            "upstream \"app\" refused\n\ttab \\ \u{1b}[31m",
        ));
        let base = AccessLine {
            method: "GET",
            path: "/a/b.html",
            status: 200,
            duration_ms: 1.234567,
            upstream: "app",
            decision: "skip_auth",
            peer: Some("127.0.0.1".parse().unwrap()),
            error: None,
        };
        let mut out = vec![base];
        for ms in [0.0, 0.000_01, 0.05, 12.5, 1_234.000_001, 1e17, 3.0] {
            out.push(AccessLine {
                duration_ms: ms,
                ..base
            });
        }
        out.push(AccessLine {
            method: "PROPFIND",
            path: "/%22quoted%22/x;y=1/\u{e9}\"'\\",
            status: 0,
            upstream: "-",
            decision: "refused",
            peer: None,
            error: Some(error),
            ..base
        });
        out.push(AccessLine {
            peer: Some("2001:db8::1".parse().unwrap()),
            status: 502,
            upstream: "up \"stream\"\t\u{7f}",
            decision: "session",
            ..base
        });
        out.push(AccessLine {
            peer: Some("255.0.10.9".parse().unwrap()),
            status: 65535,
            ..base
        });
        out
    }

    #[test]
    fn the_line_is_tracing_subscribers_in_every_format() {
        // (format, whether the subscriber was built with ANSI): `init` builds the JSON
        // subscriber with ANSI on unless NO_COLOR, and JSON has no colours either way.
        for (format, builder_ansi) in [
            (
                AccessFormat {
                    json: false,
                    ansi: true,
                },
                true,
            ),
            (
                AccessFormat {
                    json: false,
                    ansi: false,
                },
                false,
            ),
            (
                AccessFormat {
                    json: true,
                    ansi: false,
                },
                false,
            ),
            (
                AccessFormat {
                    json: true,
                    ansi: false,
                },
                true,
            ),
        ] {
            for line in lines() {
                let want = reference(&line, format, builder_ansi);
                let mut got = Vec::new();
                format_line(&mut got, &line, format, stamp_of(&want));
                assert_eq!(String::from_utf8(got).unwrap(), want, "{format:?} {line:?}");
            }
        }
    }

    #[test]
    fn timestamps_are_padded() {
        let mut buf = Vec::new();
        timestamp(
            &mut buf,
            time::macros::datetime!(0987-01-02 03:04:05.000_006 UTC),
        );
        assert_eq!(buf, b"0987-01-02T03:04:05.000006Z");
    }
}
