//! `linkgate links` as an operator uses it, against a real redis-server: links seeded the way
//! the gate writes them (the library `Registry` over the Redis backend), then listed, shown,
//! unlinked (which also ends the sessions built on the link), exported and imported back.
//! Every assertion is on what the operator sees (stdout, stderr, exit status) or on the keys
//! left in Redis.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use linkgate::config::Config;
use linkgate::link::{LinkOutcome, LinkRecord, Registry};
use linkgate::metrics::Metrics;
use linkgate::oidc::Identity;
use linkgate::session::Sessions;
use linkgate::store::redis::RedisBackend;
use linkgate::store::Store;
use support::{linkgate_cli, COOKIE_SECRET};

const ACCOUNTS: &str = "https://accounts.example.test";
const SSO: &str = "https://sso.example.test";

/// A redis-server, a config file pointing at it, and the library's view of the same store.
struct Rig {
    redis: support::Redis,
    dir: tempfile::TempDir,
    config: PathBuf,
    registry: Registry,
    sessions: Sessions,
}

impl Rig {
    fn new() -> Self {
        let redis = support::Redis::start();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let text = format!(
            "[[upstreams]]\nname = \"app\"\nurl = \"http://127.0.0.1:8080\"\n\n\
             [session]\nstore = \"redis\"\ncookie_secret = \"{COOKIE_SECRET}\"\n\n\
             [redis]\nurl = \"{}\"\n",
            redis.url()
        );
        std::fs::write(&config, &text).unwrap();
        let parsed = Config::parse(&text, "config.toml", &|_| None).unwrap();
        let redis_config = parsed.redis.as_ref().unwrap();
        let store = Store::new(
            Arc::new(RedisBackend::new(redis_config).unwrap()),
            &redis_config.key_prefix,
            Duration::from_secs(3),
            Arc::new(Metrics::new().unwrap()),
        );
        let secret = parsed.session.cookie_secret.as_ref().unwrap().expose();
        let sessions = Sessions::new(secret, store.clone(), parsed.session.clone());
        Rig {
            redis,
            dir,
            config,
            registry: Registry::new(store),
            sessions,
        }
    }

    /// Runs `linkgate links -c CONFIG ARGS...`: (exit code, stdout, stderr).
    fn links(&self, args: &[&str]) -> (i32, String, String) {
        let config = self.config.display().to_string();
        let mut all = vec!["links", "-c", config.as_str()];
        all.extend_from_slice(args);
        linkgate_cli(&all, &[])
    }

    /// Links `account` to `sso` as the gate does, at a fixed time.
    async fn seed(&self, account: &str, sso: &str, created_at: i64) -> LinkRecord {
        let record = LinkRecord {
            account: identity(ACCOUNTS, account),
            sso: identity(SSO, sso),
            created_at,
        };
        let outcome = self.registry.insert(record.clone()).await.unwrap();
        assert!(matches!(outcome, LinkOutcome::Created(_)), "{outcome:?}");
        record
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn identity(issuer: &str, subject: &str) -> Identity {
    Identity {
        issuer: issuer.to_string(),
        subject: subject.to_string(),
        email: Some(format!("{subject}@example.test")),
        email_verified: true,
        name: None,
        preferred_username: None,
        groups: vec![],
    }
}

fn account_key(subject: &str) -> String {
    format!("{ACCOUNTS}|{subject}")
}

fn sso_key(subject: &str) -> String {
    format!("{SSO}|{subject}")
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_one_tab_separated_line_per_link_sorted_by_account() {
    let rig = Rig::new();
    rig.seed("bob", "b-sso", 1_585_699_200).await;
    rig.seed("alice", "a-sso", 1_600_000_000).await;

    let (code, out, err) = rig.links(&["list"]);

    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        out,
        format!(
            "{}\t{}\talice@example.test\ta-sso@example.test\t2020-09-13T12:26:40Z\n\
             {}\t{}\tbob@example.test\tb-sso@example.test\t2020-04-01T00:00:00Z\n",
            account_key("alice"),
            sso_key("a-sso"),
            account_key("bob"),
            sso_key("b-sso"),
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_finds_a_link_by_its_account_key_or_its_sso_key() {
    let rig = Rig::new();
    let link = rig.seed("alice", "a-sso", 1_600_000_000).await;

    for id in [account_key("alice"), sso_key("a-sso")] {
        let (code, out, err) = rig.links(&["show", &id]);
        assert_eq!(code, 0, "show {id}: {err}");
        let shown: LinkRecord = serde_json::from_str(&out).unwrap();
        assert_eq!(shown, link, "show {id}");
        assert!(
            out.contains("\n  \"account\": {\n"),
            "pretty JSON for a person to read:\n{out}"
        );
    }

    let (code, out, err) = rig.links(&["show", &account_key("nobody")]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("no link found for `{}`", account_key("nobody"))),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_removes_both_directions_and_ends_the_sessions_that_relied_on_it() {
    let rig = Rig::new();
    let alice = rig.seed("alice", "a-sso", 1_600_000_000).await;
    rig.seed("bob", "b-sso", 1_600_000_000).await;
    rig.sessions
        .create(Some(alice.sso.clone()), Some(alice.account.clone()), None)
        .await
        .unwrap();
    assert_eq!(rig.redis.keys("linkgate:session:*").len(), 1);
    assert_eq!(rig.redis.keys("linkgate:link:*").len(), 4);

    let (code, out, err) = rig.links(&["unlink", &account_key("alice")]);

    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        out,
        format!(
            "unlinked account {} (alice@example.test) from SSO identity {} (a-sso@example.test)\n\
             ended 1 session of {}\n",
            account_key("alice"),
            sso_key("a-sso"),
            sso_key("a-sso"),
        )
    );
    assert_eq!(
        sorted(rig.redis.keys("linkgate:link:*")),
        [
            format!("linkgate:link:account:{{links}}:{}", account_key("bob")),
            format!("linkgate:link:sso:{{links}}:{}", sso_key("b-sso")),
        ],
        "both directions of alice's link are gone, bob's stays"
    );
    assert!(
        rig.redis.keys("linkgate:session:*").is_empty(),
        "the session built on the link ended"
    );
    let (_, listed, _) = rig.links(&["list"]);
    assert!(!listed.contains("alice"), "{listed}");

    let (code, _, err) = rig.links(&["unlink", &sso_key("a-sso")]);
    assert_eq!(code, 1, "unlinking twice: nothing to remove");
    assert!(err.contains("no link found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_wipe_import_export_is_byte_identical_and_importing_twice_changes_nothing() {
    let rig = Rig::new();
    rig.seed("carol", "c-sso", 1_700_000_000).await;
    rig.seed("alice", "a-sso", 1_600_000_000).await;
    rig.seed("bob", "b-sso", 1_585_699_200).await;
    let file = rig.path("links.jsonl");

    let (code, before, err) = rig.links(&["export"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(before.lines().count(), 3);
    let order: Vec<String> = before
        .lines()
        .map(|l| {
            serde_json::from_str::<LinkRecord>(l)
                .unwrap()
                .account
                .subject
        })
        .collect();
    assert_eq!(order, ["alice", "bob", "carol"], "sorted by account key");

    let (code, out, err) = rig.links(&["export", "--output", &file]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("exported 3 links to {file}")),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);

    rig.redis.cli(&["FLUSHDB"]);
    let (_, empty, _) = rig.links(&["list"]);
    assert!(empty.is_empty(), "wiped: {empty}");

    let (code, out, err) = rig.links(&["import", &file]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "created 3, unchanged 0, conflicts 0, invalid 0\n");

    let (code, after, _) = rig.links(&["export"]);
    assert_eq!(code, 0);
    assert_eq!(after, before, "the round trip is byte-identical");

    let (code, out, err) = rig.links(&["import", &file]);
    assert_eq!(code, 0, "importing twice is fine: {err}");
    assert_eq!(out, "created 0, unchanged 3, conflicts 0, invalid 0\n");
    let (_, again, _) = rig.links(&["export"]);
    assert_eq!(again, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reads_stdin_too() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let rig = Rig::new();
    let record = LinkRecord {
        account: identity(ACCOUNTS, "dave"),
        sso: identity(SSO, "d-sso"),
        created_at: 1_600_000_000,
    };
    let mut child = Command::new(support::linkgate_bin())
        .args([
            "links",
            "-c",
            &rig.config.display().to_string(),
            "import",
            "-",
        ])
        .env_remove("LINKGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = serde_json::to_string(&record).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{line}").unwrap();
    drop(stdin);
    let done = child.wait_with_output().unwrap();

    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "created 1, unchanged 0, conflicts 0, invalid 0\n"
    );
    assert_eq!(
        rig.registry.by_sso(&sso_key("d-sso")).await.unwrap(),
        Some(record)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_malformed_lines_are_reported_by_line_and_change_nothing() {
    let rig = Rig::new();
    rig.seed("alice", "a-sso", 1_600_000_000).await;
    let (_, before, _) = rig.links(&["export"]);
    let snapshot = |rig: &Rig| {
        let keys = sorted(rig.redis.keys("linkgate:link*"));
        let values: Vec<String> = keys.iter().map(|k| rig.redis.cli(&["DUMP", k])).collect();
        (keys, values)
    };
    let untouched = snapshot(&rig);

    // The same SSO identity, claimed by another account (a project ownership transfer).
    let conflicting = LinkRecord {
        account: identity(ACCOUNTS, "mallory"),
        sso: identity(SSO, "a-sso"),
        created_at: 1_700_000_000,
    };
    let file = rig.path("conflict.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{{\"account\": \"not a record\"\n",
            serde_json::to_string(&conflicting).unwrap()
        ),
    )
    .unwrap();

    let (code, out, err) = rig.links(&["import", &file]);

    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0],
        format!(
            "line 1: conflict, not imported: SSO identity {} is already linked to account {} (record links it to account {})",
            sso_key("a-sso"),
            account_key("alice"),
            account_key("mallory"),
        )
    );
    assert!(
        lines[1].starts_with("line 2: invalid, skipped: not a link record: "),
        "the malformed line is named: {out}"
    );
    assert_eq!(lines[2], "created 0, unchanged 0, conflicts 1, invalid 1");
    assert_eq!(snapshot(&rig), untouched, "the registry is unchanged");
    let (_, after, _) = rig.links(&["export"]);
    assert_eq!(after, before);
    let (code, _, _) = rig.links(&["show", &account_key("mallory")]);
    assert_eq!(code, 1, "mallory was not linked");

    // The same account, already linked elsewhere (an email change): a conflict too, while a
    // good record in the same file is still imported.
    let moved = LinkRecord {
        account: identity(ACCOUNTS, "alice"),
        sso: identity(SSO, "a-new-sso"),
        created_at: 1_700_000_000,
    };
    let fresh = LinkRecord {
        account: identity(ACCOUNTS, "bob"),
        sso: identity(SSO, "b-sso"),
        created_at: 1_700_000_000,
    };
    std::fs::write(
        &file,
        format!(
            "{}\n\n{}\n",
            serde_json::to_string(&fresh).unwrap(),
            serde_json::to_string(&moved).unwrap()
        ),
    )
    .unwrap();
    let (code, out, _) = rig.links(&["import", &file]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "line 3: conflict, not imported: account {} is already linked to SSO identity {} (record links it to SSO identity {})\n\
             created 1, unchanged 0, conflicts 1, invalid 0\n",
            account_key("alice"),
            sso_key("a-sso"),
            sso_key("a-new-sso"),
        )
    );
    assert_eq!(
        rig.registry.by_account(&account_key("bob")).await.unwrap(),
        Some(fresh)
    );
    assert_eq!(
        rig.registry.by_sso(&sso_key("a-new-sso")).await.unwrap(),
        None
    );
}

#[test]
fn the_memory_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nname = \"app\"\nurl = \"http://127.0.0.1:8080\"\n\n\
             [session]\nstore = \"memory\"\ncookie_secret = \"{COOKIE_SECRET}\"\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();

    for action in [
        &["list"][..],
        &["export"],
        &["show", "x|y"],
        &["unlink", "x|y"],
    ] {
        let mut args = vec!["links", "-c", &config];
        args.extend_from_slice(action);
        let (code, out, err) = linkgate_cli(&args, &[]);
        assert_eq!(code, 2, "{action:?}: {err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("the links tools need session.store = \"redis\""),
            "{action:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_is_a_clear_error() {
    let mut rig = Rig::new();
    rig.redis.stop();

    let (code, out, err) = rig.links(&["list"]);

    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!(
            "cannot reach the link store at {}",
            rig.redis.url()
        )),
        "{err}"
    );
}

#[test]
fn the_config_comes_from_linkgate_config_like_the_other_commands() {
    let (code, _, err) = linkgate_cli(
        &["links", "list"],
        &[("LINKGATE_CONFIG", "/nonexistent/linkgate.toml")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/linkgate.toml"), "{err}");
}
