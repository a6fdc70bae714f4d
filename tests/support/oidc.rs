//! Test rig: a real OpenID provider (panva's `oidc-provider` from npm, run by
//! `tests/support/oidc/provider.mjs`) on a free loopback port, plus a browser-less login walker.
//!
//! Prerequisites: Node.js 20+ with npm, and `npm ci --prefix tests/support/oidc` (or
//! `scripts/test`, which does both). A missing prerequisite panics with that instruction.
//!
//! The provider accepts ANY login name with any password: sub = login name, email = the login if
//! it contains `@`, else `<login>@example.test`, email_verified = true, plus what
//! [`ProviderOptions::account`] sets. PKCE (S256) is required, consent is never asked, refresh
//! tokens are issued to every client allowed the `refresh_token` grant, and the id_token carries
//! the scope claims (`email`, `name`, `preferred_username`, `groups`).
//!
//! [`OidcProvider::start`] is synchronous (it blocks for the ~0.3 s the provider takes to come
//! up), so it works from `#[tokio::test]`, from plain `#[test]` and from a lazily built static.
//! The process is killed when the [`OidcProvider`] is dropped, and exits by itself when the test
//! process dies (its stdin closes).
//!
//! Depends only on std, tokio, reqwest 0.12 (json + cookies), serde_json and url.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use url::Url;

/// Folder of `package.json`, `package-lock.json`, `provider.mjs` (and `node_modules`).
pub const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/oidc");
/// Bound on the wait for the provider's `READY` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Environment: path of the `node` binary (default: `node` on PATH).
pub const NODE_ENV: &str = "LINKGATE_TEST_NODE";
/// Environment: `1` makes every provider log each request to stderr (`[oidc:name] ...`).
pub const VERBOSE_ENV: &str = "LINKGATE_TEST_OIDC_VERBOSE";

const HOW_TO_FIX: &str = "install Node.js 20+ and npm (Debian: `apt-get install nodejs npm`), \
then run `npm ci --prefix tests/support/oidc` from the crate root; or run `scripts/test`, which does both";

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// One registered client (relying party).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub client_id: String,
    /// `None` for a public client (`token_endpoint_auth_method = "none"`).
    pub client_secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// `client_secret_basic` (default for confidential clients), `client_secret_post`, `none`.
    pub token_endpoint_auth_method: String,
    /// Default `["authorization_code", "refresh_token"]`.
    pub grant_types: Vec<String>,
}

impl ClientConfig {
    /// A confidential client (`client_secret_basic`) with both grants.
    pub fn confidential(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        ClientConfig {
            client_id: client_id.to_owned(),
            client_secret: Some(client_secret.to_owned()),
            redirect_uris: vec![redirect_uri.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            token_endpoint_auth_method: "client_secret_basic".to_owned(),
            grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
        }
    }

    /// A public client (`none`, PKCE only) with both grants.
    pub fn public(client_id: &str, redirect_uri: &str) -> Self {
        ClientConfig {
            client_secret: None,
            token_endpoint_auth_method: "none".to_owned(),
            ..Self::confidential(client_id, "", redirect_uri)
        }
    }

    /// Adds a redirect URI (compared exactly by the provider: 127.0.0.1 is not localhost).
    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.to_owned());
        self
    }

    pub fn post_logout_redirect_uri(mut self, uri: &str) -> Self {
        self.post_logout_redirect_uris.push(uri.to_owned());
        self
    }

    pub fn auth_method(mut self, method: &str) -> Self {
        self.token_endpoint_auth_method = method.to_owned();
        self
    }

    pub fn grant_types(mut self, grants: &[&str]) -> Self {
        self.grant_types = grants.iter().map(|g| (*g).to_owned()).collect();
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "client_id": self.client_id,
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": self.grant_types,
        });
        if let Some(secret) = &self.client_secret {
            v["client_secret"] = json!(secret);
        }
        v
    }
}

/// Claims of one login name; unset fields take the defaults described in the module docs.
#[derive(Clone, Debug, Default)]
pub struct Account {
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Vec<String>,
}

impl Account {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn email(mut self, email: &str) -> Self {
        self.email = Some(email.to_owned());
        self
    }
    pub fn email_verified(mut self, verified: bool) -> Self {
        self.email_verified = Some(verified);
        self
    }
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }
    pub fn preferred_username(mut self, username: &str) -> Self {
        self.preferred_username = Some(username.to_owned());
        self
    }
    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "groups": self.groups });
        if let Some(x) = &self.email {
            v["email"] = json!(x);
        }
        if let Some(x) = self.email_verified {
            v["email_verified"] = json!(x);
        }
        if let Some(x) = &self.name {
            v["name"] = json!(x);
        }
        if let Some(x) = &self.preferred_username {
            v["preferred_username"] = json!(x);
        }
        v
    }
}

/// How to start one provider. Builder style: `ProviderOptions::new("sso").client(..).account(..)`.
#[derive(Clone, Debug)]
pub struct ProviderOptions {
    /// Label: log prefix `[oidc:name]`, cookie-name suffix, shown on the login page.
    pub name: String,
    pub clients: Vec<ClientConfig>,
    pub accounts: BTreeMap<String, Account>,
    /// oidc-provider TTL names (`AccessToken`, `IdToken`, `RefreshToken`, `Session`, ...), seconds.
    pub ttl: BTreeMap<String, u64>,
    /// Private JWKS (`{"keys": [..]}`); `None`: the provider generates a fresh RS256 key.
    pub jwks: Option<Value>,
    /// Fixed port; `None`: a free loopback port.
    pub port: Option<u16>,
    /// Log every request to stderr (also on with `LINKGATE_TEST_OIDC_VERBOSE=1`).
    pub verbose: bool,
    /// The `node` binary; `None`: `$LINKGATE_TEST_NODE`, else `node` on PATH.
    pub node_binary: Option<String>,
    /// Every refresh answers with a new refresh token and spends the old one (reusing a
    /// spent one is `invalid_grant` and revokes the grant, as oidc-provider does).
    pub rotate_refresh_tokens: bool,
    /// Behave like Adobe IMS (see provider.mjs): implies rotation.
    pub ims: bool,
}

impl ProviderOptions {
    pub fn new(name: &str) -> Self {
        ProviderOptions {
            name: name.to_owned(),
            clients: Vec::new(),
            accounts: BTreeMap::new(),
            ttl: BTreeMap::new(),
            jwks: None,
            port: None,
            verbose: false,
            node_binary: None,
            rotate_refresh_tokens: false,
            ims: false,
        }
    }
    /// Single-use refresh tokens (see [`ProviderOptions::rotate_refresh_tokens`]).
    pub fn rotate_refresh_tokens(mut self, on: bool) -> Self {
        self.rotate_refresh_tokens = on;
        self
    }
    /// An Adobe IMS look-alike (see [`ProviderOptions::ims`]).
    pub fn ims(mut self, on: bool) -> Self {
        self.ims = on;
        self
    }
    pub fn client(mut self, client: ClientConfig) -> Self {
        self.clients.push(client);
        self
    }
    pub fn account(mut self, login: &str, account: Account) -> Self {
        self.accounts.insert(login.to_owned(), account);
        self
    }
    /// Any oidc-provider TTL by name, e.g. `ttl("Session", Duration::from_secs(60))`.
    pub fn ttl(mut self, kind: &str, ttl: Duration) -> Self {
        self.ttl.insert(kind.to_owned(), ttl.as_secs().max(1));
        self
    }
    pub fn access_token_ttl(self, ttl: Duration) -> Self {
        self.ttl("AccessToken", ttl)
    }
    pub fn id_token_ttl(self, ttl: Duration) -> Self {
        self.ttl("IdToken", ttl)
    }
    pub fn refresh_token_ttl(self, ttl: Duration) -> Self {
        self.ttl("RefreshToken", ttl)
    }
    /// Private signing keys, `{"keys": [jwk, ..]}`; the first RS256 key signs.
    pub fn jwks(mut self, jwks: Value) -> Self {
        self.jwks = Some(jwks);
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }
    pub fn node_binary(mut self, node: &str) -> Self {
        self.node_binary = Some(node.to_owned());
        self
    }

    fn config_json(&self, port: u16) -> Value {
        let mut v = json!({
            "port": port,
            "issuer": format!("http://127.0.0.1:{port}"),
            "name": self.name,
            "clients": self.clients.iter().map(ClientConfig::to_json).collect::<Vec<_>>(),
            "accounts": self.accounts.iter().map(|(k, a)| (k.clone(), a.to_json())).collect::<serde_json::Map<_, _>>(),
            "ttl": self.ttl,
            "verbose": self.verbose || std::env::var(VERBOSE_ENV).is_ok_and(|v| v == "1"),
            "rotate_refresh_tokens": self.rotate_refresh_tokens,
            "ims": self.ims,
        });
        if let Some(jwks) = &self.jwks {
            v["jwks"] = jwks.clone();
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Provider process
// ---------------------------------------------------------------------------------------------

/// Counters kept by the provider since start (or the last [`OidcProvider::reset_counts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Token-endpoint requests with `grant_type=authorization_code`, whatever their outcome.
    pub authorization_code: u64,
    /// Token-endpoint requests with `grant_type=refresh_token`, whatever their outcome.
    pub refresh_token: u64,
    /// Token-endpoint requests with any other or no grant_type.
    pub other_grant: u64,
    /// Successful / failed token-endpoint requests (all grant types).
    pub token_success: u64,
    pub token_error: u64,
    /// Token-endpoint requests received, counted on arrival (before `token_delay_ms`); the
    /// others count once answered.
    pub token_received: u64,
    /// Authorization requests (`/auth`, not counting the resumes after a login).
    pub authorize: u64,
    /// Login forms posted (password prompts answered).
    pub login_forms_posted: u64,
    /// Userinfo requests.
    pub userinfo: u64,
    /// Revocation requests.
    pub revocation: u64,
    /// End-session (RP-initiated logout) requests.
    pub end_session: u64,
    /// JWKS downloads.
    pub jwks: u64,
    /// IMS-style logouts (`/ims/logout/v1`, with `ims`).
    pub ims_logout: u64,
    /// Refresh-token requests answered by the `token_status` switch (not by the provider).
    pub refresh_refused_on_purpose: u64,
    /// Code exchanges answered by the `token_status` switch.
    pub code_refused_on_purpose: u64,
}

impl Counts {
    fn from_json(v: &Value) -> Self {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Counts {
            authorization_code: n("authorization_code"),
            refresh_token: n("refresh_token"),
            other_grant: n("other_grant"),
            token_success: n("token_success"),
            token_error: n("token_error"),
            token_received: n("token_received"),
            jwks: n("jwks"),
            authorize: n("authorize"),
            login_forms_posted: n("login_forms_posted"),
            userinfo: n("userinfo"),
            revocation: n("revocation"),
            end_session: n("end_session"),
            ims_logout: n("ims_logout"),
            refresh_refused_on_purpose: n("refresh_refused_on_purpose"),
            code_refused_on_purpose: n("code_refused_on_purpose"),
        }
    }
}

/// A fresh RS256 key made by `node provider.mjs --genkey`.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    /// Private JWK with `kid`, `alg: RS256`, `use: sig`.
    pub jwk: Value,
    /// PKCS#8 PEM of the private key.
    pub pem: String,
    /// SPKI PEM of the public key.
    pub public_pem: String,
}

/// A running provider. Dropping it kills the process.
pub struct OidcProvider {
    name: String,
    port: u16,
    issuer: String,
    opts: ProviderOptions,
    child: Child,
    stdin: Option<ChildStdin>,
    config_path: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn default_node() -> String {
    std::env::var(NODE_ENV).unwrap_or_else(|_| "node".to_owned())
}

fn check_prerequisites(custom_node: bool) {
    let dir = Path::new(NODE_DIR);
    assert!(
        dir.join("provider.mjs").is_file(),
        "oidc test rig: {}/provider.mjs is missing (the rig's files are not in place)",
        NODE_DIR
    );
    if !custom_node
        && !dir
            .join("node_modules/oidc-provider/package.json")
            .is_file()
    {
        panic!(
            "oidc test rig: {NODE_DIR}/node_modules is missing (npm package oidc-provider not \
             installed). To fix: {HOW_TO_FIX}."
        );
    }
}

enum StartError {
    /// The port was taken (only retried when the port was picked by us).
    AddrInUse,
}

impl OidcProvider {
    /// Starts a provider and waits (at most [`READY_TIMEOUT`]) until it listens. Synchronous.
    /// Panics, saying how to fix it, when `node` or `node_modules` is missing.
    pub fn start(opts: ProviderOptions) -> OidcProvider {
        check_prerequisites(opts.node_binary.is_some());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = opts.port.unwrap_or_else(super::free_port);
            match Self::spawn(&opts, port) {
                Ok(p) => return p,
                Err(StartError::AddrInUse) if opts.port.is_none() && attempts < 5 => continue,
                Err(StartError::AddrInUse) => {
                    panic!("oidc test rig [{}]: port {port} is in use", opts.name)
                }
            }
        }
    }

    /// Stops this provider and starts a new one from `opts` on the SAME port (so the issuer is
    /// unchanged), e.g. with rotated keys. All provider state (sessions, codes, refresh tokens)
    /// is lost, as with a real restart of an in-memory provider. `opts.port` is ignored.
    pub fn restart_with(&mut self, opts: ProviderOptions) {
        let port = self.port;
        self.stop();
        let fresh = Self::start(opts.port(port));
        // Replace self; the old value is already stopped, its Drop is harmless.
        let old = std::mem::replace(self, fresh);
        drop(old);
    }

    fn spawn(opts: &ProviderOptions, port: u16) -> Result<OidcProvider, StartError> {
        let name = opts.name.clone();
        let config = opts.config_json(port);
        let config_path = std::env::temp_dir().join(format!(
            "linkgate-oidc-{}-{}-{}.json",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        ));
        {
            let mut f = std::fs::File::create(&config_path)
                .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
            f.write_all(config.to_string().as_bytes())
                .expect("write provider config");
        }

        let node = opts.node_binary.clone().unwrap_or_else(default_node);
        let mut child = match Command::new(&node)
            .arg("provider.mjs")
            .arg(&config_path)
            .current_dir(NODE_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&config_path);
                panic!("oidc test rig: `{node}` (Node.js) was not found. To fix: {HOW_TO_FIX}.")
            }
            Err(e) => panic!("oidc test rig: cannot start `{node} provider.mjs`: {e}"),
        };

        // stderr -> test stderr with a prefix; the last lines are kept for panic messages.
        // std::thread::spawn inherits libtest's output capture, so this shows on failure only
        // (or always with --nocapture).
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        {
            let stderr = child.stderr.take().expect("piped stderr");
            let tail = Arc::clone(&tail);
            let prefix = format!("[oidc:{name}]");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("{prefix} {line}");
                    let mut t = tail.lock().unwrap();
                    if t.len() == 20 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }

        // stdout: the first line must be `READY <issuer>`; anything after is forwarded.
        let (tx, rx) = mpsc::channel::<Option<String>>();
        {
            let stdout = child.stdout.take().expect("piped stdout");
            let prefix = format!("[oidc:{name}]");
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                match lines.next() {
                    Some(Ok(line)) => {
                        let _ = tx.send(Some(line));
                    }
                    _ => {
                        let _ = tx.send(None);
                        return;
                    }
                }
                for line in lines.map_while(Result::ok) {
                    eprintln!("{prefix} (stdout) {line}");
                }
            });
        }

        let issuer = format!("http://127.0.0.1:{port}");
        let fail = |child: &mut Child, why: String| -> ! {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&config_path);
            // Give the stderr thread a moment to drain what the process wrote last.
            std::thread::sleep(Duration::from_millis(50));
            let tail = tail
                .lock()
                .unwrap()
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ");
            panic!("oidc test rig [{name}]: {why}\n  provider stderr (last lines):\n  {tail}");
        };

        let started = Instant::now();
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(line)) if line == format!("READY {issuer}") => {}
            Ok(Some(line)) => fail(&mut child, format!("unexpected first stdout line {line:?}")),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().ok();
                if status.and_then(|s| s.code()) == Some(3) {
                    let _ = std::fs::remove_file(&config_path);
                    return Err(StartError::AddrInUse);
                }
                fail(
                    &mut child,
                    format!("provider exited before READY ({status:?})"),
                )
            }
            Err(mpsc::RecvTimeoutError::Timeout) => fail(
                &mut child,
                format!("no READY line within {:?}", started.elapsed()),
            ),
        }

        let stdin = child.stdin.take();
        Ok(OidcProvider {
            name,
            port,
            issuer,
            opts: opts.clone(),
            child,
            stdin,
            config_path,
        })
    }

    /// Closes the provider's stdin, as the death of the test process would (the provider then
    /// exits by itself). For the rig's own tests; see [`OidcProvider::wait_exit`].
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Process id of the node process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The options this provider was started with (port filled in).
    pub fn options(&self) -> ProviderOptions {
        self.opts.clone().port(self.port)
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }
    pub fn userinfo_endpoint(&self) -> String {
        format!("{}/me", self.issuer)
    }
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }
    pub fn end_session_endpoint(&self) -> String {
        format!("{}/session/end", self.issuer)
    }
    pub fn revocation_endpoint(&self) -> String {
        format!("{}/token/revocation", self.issuer)
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<String>) -> String {
        let url = format!("{}/__test/{path}", self.issuer);
        let mut req = http_client().request(method, &url);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("oidc test rig [{}]: {url}: {e}", self.name));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "oidc test rig [{}]: {url}: {status}: {text}",
            self.name
        );
        text
    }

    /// Counters from `GET /__test/counts`.
    pub async fn counts(&self) -> Counts {
        let text = self.control(reqwest::Method::GET, "counts", None).await;
        Counts::from_json(&serde_json::from_str(&text).expect("counts JSON"))
    }

    /// Zeroes the counters.
    pub async fn reset_counts(&self) {
        self.control(reqwest::Method::POST, "reset", None).await;
    }

    /// The private JWKS in use (pass it to [`ProviderOptions::jwks`] to restart with the same keys).
    pub async fn private_jwks(&self) -> Value {
        let text = self
            .control(reqwest::Method::GET, "private-jwks", None)
            .await;
        serde_json::from_str(&text).expect("JWKS JSON")
    }

    /// Makes the provider misbehave (the switches of `/__test/misbehave` in provider.mjs;
    /// `{}` makes it behave again).
    pub async fn misbehave(&self, switches: &Value) {
        self.control(
            reqwest::Method::POST,
            "misbehave",
            Some(switches.to_string()),
        )
        .await;
    }

    /// A compact RS256 JWS over `claims`, signed with the provider's signing key (its `kid` is in
    /// the provider's JWKS): for "account JWT" tests. Nothing is added to the claims.
    pub async fn sign_jwt(&self, claims: &Value) -> String {
        self.control(reqwest::Method::POST, "sign", Some(claims.to_string()))
            .await
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh RS256 key (`node provider.mjs --genkey`), e.g. to rotate keys across a restart:
/// `opts.jwks(json!({"keys": [new.jwk, old_jwk]}))` signs with the new key, publishes both.
pub fn generate_key(kid: &str) -> GeneratedKey {
    let node = default_node();
    let out = Command::new(&node)
        .args(["provider.mjs", "--genkey", kid])
        .current_dir(NODE_DIR)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("oidc test rig: cannot run `{node}` ({e}). To fix: {HOW_TO_FIX}.")
        });
    assert!(
        out.status.success(),
        "oidc test rig: `node provider.mjs --genkey` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("genkey JSON");
    GeneratedKey {
        jwk: v["jwk"].clone(),
        pem: v["pem"].as_str().expect("pem").to_owned(),
        public_pem: v["public_pem"].as_str().expect("public_pem").to_owned(),
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// A client fit for [`login`] and [`logout`]: cookie jar on, redirects off, no proxy.
pub fn browserless_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------------------------
// Browser-less login / logout
// ---------------------------------------------------------------------------------------------

/// What [`login`] saw.
#[derive(Clone, Debug)]
pub struct LoginOutcome {
    /// The first `Location` outside the provider: the relying party's redirect_uri with `code`
    /// and `state` (or `error`, e.g. `login_required` after `prompt=none` without a session).
    pub callback_url: String,
    /// Whether the login form was posted (false: the provider session made it password-less).
    pub prompted: bool,
}

impl LoginOutcome {
    /// A query parameter of the callback URL.
    pub fn param(&self, name: &str) -> Option<String> {
        Url::parse(&self.callback_url)
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

fn origin_of(u: &Url) -> String {
    u.origin().ascii_serialization()
}

/// Walks the provider's pages the way a browser would: GET `authorize_url`, follow redirects
/// inside the provider, post the login form (login name `login`, any password) if one is shown,
/// and stop at the first redirect that leaves the provider's origin, WITHOUT requesting it.
///
/// `client` must keep cookies and must not follow redirects (see [`browserless_client`]); the
/// provider session it holds is what makes a second call password-less (Method 2).
/// Panics on anything unexpected (error page, 4xx/5xx, more than 20 hops).
pub async fn login(client: &reqwest::Client, authorize_url: &str, login: &str) -> LoginOutcome {
    let start = Url::parse(authorize_url).expect("authorize_url is not a URL");
    let provider_origin = origin_of(&start);
    let mut prompted = false;
    let mut next = Step::Get(start);
    for _hop in 0..20 {
        let (resp, requested) = match next {
            Step::Get(url) => (send(client.get(url.clone()), &url).await, url),
            Step::Post(url, body) => (
                send(
                    client
                        .post(url.clone())
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body),
                    &url,
                )
                .await,
                url,
            ),
        };
        assert_eq!(
            resp.url().as_str(),
            requested.as_str(),
            "oidc login walker: the reqwest client followed a redirect; build it with \
             redirect::Policy::none() (see oidc::browserless_client())"
        );
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| {
                    panic!("oidc login walker: {status} without Location at {requested}")
                });
            let target = requested.join(location).expect("bad Location");
            if origin_of(&target) != provider_origin {
                return LoginOutcome {
                    callback_url: target.to_string(),
                    prompted,
                };
            }
            next = Step::Get(target);
            continue;
        }
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            if let Some(form) = find_form(&body, |f| f.has_input("login")) {
                assert!(
                    !prompted,
                    "oidc login walker: login form shown again after posting it:\n{body}"
                );
                prompted = true;
                let fields = form.fields(&[("login", login), ("password", "any-password")]);
                let action = requested.join(&form.action).expect("bad form action");
                next = Step::Post(action, fields);
                continue;
            }
            // A self-submitting form, as a browser with JavaScript would post it: oidc-provider
            // shows one to end the previous session when another account signs in
            // (prompt=login with a different login name).
            if body.contains(".submit()") {
                if let Some(form) = find_form(&body, |_| true) {
                    let action = requested.join(&form.action).expect("bad form action");
                    next = Step::Post(action, form.fields(&[]));
                    continue;
                }
            }
        }
        panic!(
            "oidc login walker: unexpected {status} at {requested}:\n{}",
            snippet(&body)
        );
    }
    panic!("oidc login walker: more than 20 hops from {authorize_url}");
}

/// Walks an RP-initiated logout: GET `end_session_url` (built by the caller, e.g. with
/// `id_token_hint`, `post_logout_redirect_uri`, `state`), confirm "Yes, sign me out", and return
/// the first URL outside the provider (the post_logout_redirect_uri) or, when the provider ends on
/// its own "signed out" page, that page's URL.
pub async fn logout(client: &reqwest::Client, end_session_url: &str) -> String {
    let start = Url::parse(end_session_url).expect("end_session_url is not a URL");
    let provider_origin = origin_of(&start);
    let mut confirmed = false;
    let mut next = Step::Get(start);
    for _hop in 0..20 {
        let (resp, requested) = match next {
            Step::Get(url) => (send(client.get(url.clone()), &url).await, url),
            Step::Post(url, body) => (
                send(
                    client
                        .post(url.clone())
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body),
                    &url,
                )
                .await,
                url,
            ),
        };
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("oidc logout walker: {status} without Location"));
            let target = requested.join(location).expect("bad Location");
            if origin_of(&target) != provider_origin {
                return target.to_string();
            }
            next = Step::Get(target);
            continue;
        }
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            if let Some(form) = find_form(&body, |f| f.has_input("xsrf")) {
                assert!(!confirmed, "oidc logout walker: logout form shown twice");
                confirmed = true;
                let fields = form.fields(&[("logout", "yes")]);
                let action = requested.join(&form.action).expect("bad form action");
                next = Step::Post(action, fields);
                continue;
            }
            if confirmed {
                return requested.to_string();
            }
        }
        panic!(
            "oidc logout walker: unexpected {status} at {requested}:\n{}",
            snippet(&body)
        );
    }
    panic!("oidc logout walker: more than 20 hops from {end_session_url}");
}

enum Step {
    Get(Url),
    Post(Url, String),
}

async fn send(req: reqwest::RequestBuilder, url: &Url) -> reqwest::Response {
    req.send()
        .await
        .unwrap_or_else(|e| panic!("oidc walker: request to {url} failed: {e}"))
}

fn snippet(body: &str) -> String {
    body.chars().take(2000).collect()
}

/// A `<form>` as far as the walkers need it: action and named inputs.
struct Form {
    action: String,
    inputs: Vec<(String, String)>,
}

impl Form {
    fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|(n, _)| n == name)
    }

    /// The inputs' values with `overrides` applied (added when absent), urlencoded.
    fn fields(&self, overrides: &[(&str, &str)]) -> String {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.inputs {
            let value = overrides
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_else(|| value.clone());
            ser.append_pair(name, &value);
        }
        for (name, value) in overrides {
            if !self.has_input(name) {
                ser.append_pair(name, value);
            }
        }
        ser.finish()
    }
}

/// The first form (in document order) that `pick` accepts. Minimal HTML scanning: enough for the
/// provider's own pages (attributes in double quotes).
fn find_form(html: &str, pick: impl Fn(&Form) -> bool) -> Option<Form> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("<form") {
        let start = from + i;
        let tag_end = start + lower[start..].find('>')?;
        let end = lower[tag_end..]
            .find("</form>")
            .map_or(html.len(), |e| tag_end + e);
        let attrs = parse_attrs(&html[start + 5..tag_end]);
        let action = attrs
            .iter()
            .find(|(k, _)| k == "action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut inputs = Vec::new();
        let mut pos = tag_end;
        while let Some(j) = lower[pos..end].find("<input") {
            let s = pos + j;
            let e = s + lower[s..].find('>')?;
            let a = parse_attrs(&html[s + 6..e]);
            let get = |k: &str| a.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if let Some(name) = get("name") {
                inputs.push((name, get("value").unwrap_or_default()));
            }
            pos = e;
        }
        let form = Form { action, inputs };
        if pick(&form) {
            return Some(form);
        }
        from = end;
    }
    None
}

fn parse_attrs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let ns = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if ns == i {
            i += 1;
            continue;
        }
        let name = s[ns..i].to_ascii_lowercase();
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                i += 1;
                let vs = i;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                value = html_unescape(&s[vs..i]);
                i += 1;
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = html_unescape(&s[vs..i]);
            }
        }
        out.push((name, value));
    }
    out
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
