//! Property tests of the configuration reader against hostile text: whatever the file
//! holds, reading it never panics, and every problem is one line that starts with
//! `file:line:col:` inside the file.

use proptest::prelude::*;

use super::*;

/// Pieces that configuration files are made of, and pieces that break them.
fn piece() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "[server]\n",
        "[sso]\n",
        "[account]\n",
        "[session]\n",
        "[redis]\n",
        "[authz]\n",
        "[headers]\n",
        "[pages]\n",
        "[log]\n",
        "[link]\n",
        "[[upstreams]]\n",
        "[server.tls]\n",
        "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
        "listen = ",
        "admin_listen = ",
        "public_url = ",
        "proxy_prefix = ",
        "threads = ",
        "max_header_size = ",
        "header_read_timeout = ",
        "keepalive_timeout = ",
        "send_timeout = ",
        "trusted_proxies = ",
        "issuer = ",
        "client_id = ",
        "client_secret = ",
        "client_secret_file = ",
        "cookie_secret = ",
        "ttl = ",
        "refresh_before = ",
        "skip_auth_routes = ",
        "required_from = ",
        "mode = ",
        "url = ",
        "hosts = ",
        "path_prefix = ",
        "source = ",
        "store = ",
        "cookie_samesite = ",
        "groups_claim = ",
        "\"8h\"",
        "\"0s\"",
        "\"-1s\"",
        "\"1.5h\"",
        "\"99999999999999999999h\"",
        "\"\"",
        "\"http://127.0.0.1:8080\"",
        "\"https://[::1\"",
        "\"0.0.0.0:4180\"",
        "\"/oauth2\"",
        "\"${HOME}\"",
        "\"${NOPE}\"",
        "\"${\"",
        "\"$${x}\"",
        "\"${1A}\"",
        "\"é🔒\u{301}\"",
        "[\"^/\", \"(\"]",
        "[]",
        "[[]]",
        "{}",
        "{ a = 1 }",
        "1",
        "-1",
        "0",
        "1e999",
        "9223372036854775807",
        "true",
        "2020-04-01T00:00:00Z",
        "1979-05-27",
        "'''x'''",
        "\"\"\"\nmulti\n\"\"\"",
        "\n",
        "\r\n",
        " ",
        "\t",
        "=",
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        ",",
        ".",
        "#",
        "# comment\n",
        "\\",
        "\\u0000",
        "\u{0}",
        "\u{feff}",
        "\u{2028}",
        "ü",
        "日本",
        "a.b.c = 1\n",
        "key",
        "\"quoted key\" = 1\n",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        8 => fixed,
        1 => ".{0,12}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..40).prop_map(|pieces| pieces.concat())
}

fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/fuzz".into()),
        "MULTI" => Some("a\nb".into()),
        _ => None,
    }
}

/// Checks one error line against the text it is about.
fn located(line: &str, text: &str) {
    let rest = line
        .strip_prefix("fuzz.toml:")
        .unwrap_or_else(|| panic!("no file in {line:?}"));
    let mut parts = rest.splitn(3, ':');
    let l: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let c: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let lines = text.split('\n').count();
    assert!(l >= 1 && l <= lines, "line {l} of {lines} in {line:?}");
    assert!(c >= 1, "column {c} in {line:?}");
    assert!(!line.contains('\n'), "one line: {line:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_is_read_without_panic_and_errors_are_located(text in text()) {
        match Config::parse(&text, "fuzz.toml", &env) {
            Ok(config) => {
                for w in &config.warnings {
                    located(w, &text);
                }
            }
            Err(errors) => {
                prop_assert!(!errors.errors.is_empty());
                for e in &errors.errors {
                    located(&e.to_string(), &text);
                }
                for w in &errors.warnings {
                    located(w, &text);
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(text in "\\PC{0,300}") {
        if let Err(errors) = Config::parse(&text, "fuzz.toml", &env) {
            for e in &errors.errors {
                located(&e.to_string(), &text);
            }
        }
    }
}
