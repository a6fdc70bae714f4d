//! The command line as an operator uses it: `linkgate check` on good and bad configurations
//! (every error names `file:line:col`, the key and the reason, and exits 1), `run` refusing a
//! bad file the same way, and `linkgate secret`.

mod support;

use base64::Engine as _;
use support::linkgate_cli;

const SECRET: &str = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng";

/// A minimal valid configuration; `{extra}` is appended.
fn config_with(extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:4180\"\n\n[[upstreams]]\nname = \"app\"\nurl = \"http://127.0.0.1:8080\"\n{extra}"
    )
}

/// Writes `text` to a config file, runs `linkgate check` on it, and returns (code, stderr,
/// the file's path as linkgate prints it).
fn check(text: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    let (code, _out, err) = linkgate_cli(&["check", "-c", &path], env);
    (code, err, path)
}

/// Asserts `check` fails with a line `file:line:col: key...` containing `reason`.
fn assert_error(text: &str, line: usize, col: usize, key: &str, reason: &str) {
    let (code, err, path) = check(text, &[]);
    assert_eq!(code, 1, "check should fail for:\n{text}\nstderr: {err}");
    let want = format!("{path}:{line}:{col}: {key}");
    let found = err
        .lines()
        .any(|l| l.starts_with(&want) && l.to_lowercase().contains(&reason.to_lowercase()));
    assert!(found, "expected `{want}` with `{reason}` in:\n{err}");
}

#[test]
fn the_shipped_config_passes_check_with_its_env_vars_set() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let (code, out, err) = linkgate_cli(
        &["check", "-c", path],
        &[
            ("LINKGATE_COOKIE_SECRET", SECRET),
            ("LINKGATE_SSO_CLIENT_ID", "linkgate"),
            ("LINKGATE_SSO_CLIENT_SECRET", "sso-secret"),
            ("LINKGATE_ACCOUNT_CLIENT_SECRET", "account-secret"),
            ("LINKGATE_REDIS_PASSWORD", "redis-password"),
        ],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(": ok"), "{out}");
}

#[test]
fn the_shipped_config_names_the_missing_env_var() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let (code, _out, err) = linkgate_cli(&["check", "-c", path], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("LINKGATE_COOKIE_SECRET"), "{err}");
}

#[test]
fn a_valid_minimal_config_passes() {
    let (code, err, _) = check(&config_with(""), &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unknown_keys_are_refused_with_their_position() {
    assert_error(
        &config_with("\n[server2]\nx = 1\n"),
        8,
        2,
        "server2",
        "unknown",
    );
    assert_error(
        "[server]\nlisten = \"127.0.0.1:4180\"\nlistne = \"x\"\n[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
        3,
        1,
        "server.listne",
        "unknown",
    );
    assert_error(
        &config_with("timeout = \"5s\"\n"),
        7,
        1,
        "upstreams[0].timeout",
        "unknown",
    );
}

#[test]
fn bad_values_are_refused_with_their_position() {
    assert_error(
        "[server]\nlisten = \"127.0.0.1:4180\"\n\n[[upstreams]]\nname = \"app\"\nurl = \"not a url\"\n",
        6,
        7,
        "upstreams[0].url",
        "",
    );
    assert_error(
        &config_with("\n[authz]\nskip_auth_routes = [\"^/ok$\", \"GET=^/(unclosed\"]\n"),
        9,
        30,
        "authz.skip_auth_routes[1]",
        "regex",
    );
    assert_error(
        &config_with("\n[session]\ncookie_secret = \"c2hvcnQtc2hvcnQtc2hvcnQ\"\n"),
        9,
        17,
        "session.cookie_secret",
        "32",
    );
    assert_error(
        &config_with("\n[session]\nttl = \"eight hours\"\n"),
        9,
        7,
        "session.ttl",
        "",
    );
    assert_error(&config_with("\n[server]\n"), 8, 2, "server", "duplicate");
}

#[test]
fn a_missing_env_var_is_named_at_its_value() {
    assert_error(
        &config_with("\n[session]\ncookie_secret = \"${LINKGATE_TEST_UNSET_VAR}\"\n"),
        9,
        17,
        "session.cookie_secret",
        "LINKGATE_TEST_UNSET_VAR",
    );
}

#[test]
fn a_syntax_error_has_a_position_too() {
    let (code, err, path) = check("[server]\nlisten = \"127.0.0.1:4180\n", &[]);
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("{path}:2:")), "{err}");
}

#[test]
fn run_refuses_a_bad_config_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_with("bogus = 1\n")).unwrap();
    let path = path.display().to_string();
    let (code, _out, err) = linkgate_cli(&["run", "-c", &path], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{path}:7:1: upstreams[0].bogus")),
        "{err}"
    );
}

#[test]
fn a_missing_config_file_says_so() {
    let (code, _out, err) = linkgate_cli(&["check", "-c", "/nonexistent/linkgate.toml"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/linkgate.toml"), "{err}");
}

#[test]
fn the_config_path_comes_from_linkgate_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elsewhere.toml");
    std::fs::write(&path, config_with("")).unwrap();
    let (code, out, err) = linkgate_cli(&["check"], &[("LINKGATE_CONFIG", path.to_str().unwrap())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("elsewhere.toml"), "{out}");
}

#[test]
fn secret_prints_32_random_bytes_that_check_accepts() {
    let (code, first, _) = linkgate_cli(&["secret"], &[]);
    assert_eq!(code, 0);
    let (_, second, _) = linkgate_cli(&["secret"], &[]);
    assert_ne!(first, second);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first.trim())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    let (code, err, _) = check(
        &config_with(&format!(
            "\n[session]\ncookie_secret = \"{}\"\n",
            first.trim()
        )),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("literal secret"),
        "a literal secret is warned about: {err}"
    );
}

#[test]
fn check_builds_what_run_builds_a_broken_template_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("account.html"), "{% if %}").unwrap();
    let (code, err, path) = check(
        &config_with(&format!(
            "\n[pages]\ntemplates_dir = \"{}\"\n",
            dir.path().display()
        )),
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&path) && err.contains("account.html"), "{err}");
}
