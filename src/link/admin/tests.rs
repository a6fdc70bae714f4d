use super::*;
use crate::fixtures::Fixture;
use crate::store::memory::Memory;
use std::time::Duration;

fn config(store: &str) -> Config {
    let fixture = Fixture::new().memory_sessions();
    match store {
        "redis" => fixture
            .set("session", "store", "\"redis\"")
            .set("redis", "url", "\"redis://127.0.0.1:1/0\"")
            .set("redis", "connect_timeout", "\"200ms\""),
        _ => fixture,
    }
    .config()
}

fn tools() -> Tools {
    let store = Store::new(
        Arc::new(Memory::new()),
        "t:",
        Duration::from_secs(1),
        Arc::new(Metrics::new().unwrap()),
    );
    Tools::over(store, &config("memory"))
}

fn who(issuer: &str, sub: &str) -> Identity {
    Identity::sample(issuer, sub)
}

fn record(account: &str, sso: &str, created_at: i64) -> LinkRecord {
    LinkRecord {
        account: who("acc", account),
        sso: who("sso", sso),
        created_at,
    }
}

async fn seed(tools: &Tools, records: &[LinkRecord]) {
    for r in records {
        let outcome = tools.registry.insert(r.clone()).await.unwrap();
        assert!(matches!(outcome, LinkOutcome::Created(_)), "{outcome:?}");
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn list_is_one_tab_separated_line_per_link_sorted_by_account() {
    let t = tools();
    seed(&t, &[record("b", "s2", 86_400), record("a", "s1", 0)]).await;
    let mut out = Vec::new();
    assert_eq!(list(&t, &mut out).await.unwrap(), 2);
    assert_eq!(
        text(out),
        "acc|a\tsso|s1\ta@example.test\ts1@example.test\t1970-01-01T00:00:00Z\n\
         acc|b\tsso|s2\tb@example.test\ts2@example.test\t1970-01-02T00:00:00Z\n"
    );
}

#[test]
fn fields_cannot_break_the_columns() {
    assert_eq!(field("a\tb\nc\\"), "a\\tb\\nc\\\\");
}

#[tokio::test]
async fn show_finds_a_link_by_either_key() {
    let t = tools();
    let r = record("a", "s1", 5);
    seed(&t, std::slice::from_ref(&r)).await;
    for id in ["acc|a", "sso|s1"] {
        let mut out = Vec::new();
        assert_eq!(show(&t, id, &mut out).await.unwrap(), r);
        let shown: LinkRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(shown, r);
        assert!(text(out).contains("\n  \"account\": {"), "pretty JSON");
    }
    let err = show(&t, "acc|nobody", &mut Vec::new()).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("no link found for `acc|nobody`"));
}

#[tokio::test]
async fn unlink_removes_both_directions_and_ends_the_sessions() {
    let t = tools();
    let r = record("a", "s1", 5);
    seed(&t, std::slice::from_ref(&r)).await;
    let sessions = t.sessions.clone().unwrap();
    let (id, _) = sessions
        .create(Some(r.sso.clone()), Some(r.account.clone()), None)
        .await
        .unwrap();
    let mut out = Vec::new();
    let done = unlink(&t, "sso|s1", &mut out).await.unwrap();
    assert_eq!(done.sessions_ended, Some(1));
    assert_eq!(
        text(out),
        "unlinked account acc|a (a@example.test) from SSO identity sso|s1 (s1@example.test)\n\
         ended 1 session of sso|s1\n"
    );
    assert!(sessions.load(&id).await.unwrap().is_none());
    assert!(t.registry.by_account("acc|a").await.unwrap().is_none());
    assert!(t.registry.by_sso("sso|s1").await.unwrap().is_none());
    let again = unlink(&t, "sso|s1", &mut Vec::new()).await.unwrap_err();
    assert_eq!(again.exit_code(), 1);
}

#[tokio::test]
async fn import_counts_every_line_and_reports_problems_by_number() {
    let t = tools();
    seed(&t, &[record("a", "s1", 5)]).await;
    let line = |r: &LinkRecord| serde_json::to_string(r).unwrap();
    let input = [
        line(&record("a", "s1", 5)), // 1: already there
        line(&record("b", "s2", 6)), // 2: new
        line(&record("c", "s1", 7)), // 3: s1 taken by a
        "{not json".to_string(),     // 4: malformed
        String::new(),               // 5: blank, ignored
        line(&record("a", "s3", 8)), // 6: a taken (linked to s1)
        line(&record("b", "s2", 6)), // 7: repeated in the file: unchanged
    ]
    .join("\n");
    let mut out = Vec::new();
    let report = import(&t, &mut input.as_bytes(), "input", &mut out)
        .await
        .unwrap();
    assert_eq!(
        report,
        ImportReport {
            created: 1,
            unchanged: 2,
            conflicts: 2,
            invalid: 1
        }
    );
    assert!(!report.is_clean());
    let out = text(out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("line 3: conflict, not imported: SSO identity sso|s1 is already linked to account acc|a (record links it to account acc|c)"), "{out}");
    assert!(lines[1].starts_with("line 4: invalid, skipped: "), "{out}");
    assert!(lines[2].starts_with("line 6: conflict, not imported: account acc|a is already linked to SSO identity sso|s1 (record links it to SSO identity sso|s3)"), "{out}");
    assert_eq!(lines[3], "created 1, unchanged 2, conflicts 2, invalid 1");
    assert!(t.registry.by_account("acc|c").await.unwrap().is_none());
    assert!(t.registry.by_sso("sso|s3").await.unwrap().is_none());
}

#[tokio::test]
async fn export_then_import_elsewhere_reproduces_the_registry() {
    let t = tools();
    seed(&t, &[record("z", "s9", 9), record("a", "s1", 1)]).await;
    let mut exported = Vec::new();
    assert_eq!(export(&t, &mut exported).await.unwrap(), 2);
    let first = text(exported.clone());
    assert!(first.starts_with("{\"account\":{\"issuer\":\"acc\",\"subject\":\"a\""));
    let other = tools();
    let report = import(&other, &mut exported.as_slice(), "x", &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(report.created, 2);
    assert!(report.is_clean());
    let mut again = Vec::new();
    export(&other, &mut again).await.unwrap();
    assert_eq!(text(again), first);
}

#[test]
fn a_bad_line_says_what_is_wrong_without_a_misleading_line_number() {
    assert_eq!(
        parse_record(b"garbage").unwrap_err(),
        "not JSON: expected value (column 1)"
    );
    assert_eq!(
        parse_record(br#"{"account":{"issuer":"a","subject":"b"},"created_at":1}"#).unwrap_err(),
        "not a link record: missing field `sso`"
    );
}

#[test]
fn records_need_both_identities() {
    assert!(parse_record(
        br#"{"account":{"issuer":"","subject":"a"},"sso":{"issuer":"s","subject":"b"},"created_at":1}"#
    )
    .unwrap_err()
    .contains("account"));
}

#[tokio::test]
async fn the_memory_store_is_refused_and_a_dead_store_is_named() {
    let err = Tools::connect(&config("memory")).await.unwrap_err();
    assert!(matches!(err, AdminError::MemoryStore));
    assert_eq!(err.exit_code(), 2);
    let err = Tools::connect(&config("redis")).await.unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .starts_with("cannot reach the link store at redis://127.0.0.1:1/0: "),
        "{err}"
    );
}
