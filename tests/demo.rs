//! `linkgate demo`, the binary, as a newcomer meets it: started on free ports, it prints the
//! URL to open; Method 1 works end to end over HTTP through both development providers
//! (including "Create account" at Magento.com); sign-out ends the Magento.com session too;
//! Ctrl-C stops it. A taken port is a clear error, and the development providers are honest
//! OpenID providers: PKCE S256 is enforced, codes are single-use, clients authenticate.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod support;

use support::free_port;
use support::sso::{location, navigate, user};

// === the rig: the demo process and a browser-less user ===

/// Five distinct free ports.
fn free_ports() -> [u16; 5] {
    let mut ports = Vec::new();
    while ports.len() < 5 {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    [ports[0], ports[1], ports[2], ports[3], ports[4]]
}

fn demo_command(ports: [u16; 5]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_linkgate"));
    cmd.arg("demo");
    for (flag, port) in [
        "--port",
        "--sso-port",
        "--accounts-port",
        "--app-port",
        "--admin-port",
    ]
    .iter()
    .zip(ports)
    {
        cmd.arg(flag).arg(port.to_string());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Collects a child's output stream in the background; each line also goes to `lines`.
fn collect(
    stream: impl std::io::Read + Send + 'static,
    label: &'static str,
    lines: Option<mpsc::Sender<String>>,
) -> Arc<Mutex<String>> {
    let all = Arc::new(Mutex::new(String::new()));
    let sink = all.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if std::env::var_os("LINKGATE_TEST_LOG").is_some() {
                eprintln!("[demo {label}] {line}");
            }
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
    all
}

/// Waits (bounded) for a child to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `linkgate demo`; killed when dropped, so it never outlives its test.
struct Demo {
    child: Child,
    port: u16,
    sso_port: u16,
    accounts_port: u16,
    app_port: u16,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    /// Starts the demo on free ports and returns once it printed the URL to open.
    fn start() -> Demo {
        let ports = free_ports();
        let mut child = demo_command(ports).spawn().expect("start linkgate demo");
        let (tx, rx) = mpsc::channel();
        let stdout = collect(child.stdout.take().expect("stdout"), "out", Some(tx));
        let stderr = collect(child.stderr.take().expect("stderr"), "err", None);
        let mut demo = Demo {
            child,
            port: ports[0],
            sso_port: ports[1],
            accounts_port: ports[2],
            app_port: ports[3],
            stdout,
            stderr,
        };
        let open = format!("Open http://127.0.0.1:{}/welcome", demo.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.contains(&open) => return demo,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(status) = demo.child.try_wait().expect("try_wait") {
                panic!(
                    "linkgate demo exited with {status} before printing {open:?}:\n{}",
                    demo.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "linkgate demo did not print {open:?} within 30 s:\n{}",
                demo.output()
            );
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// linkgate's URL for `path`.
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The development Magento.com provider (its issuer, then `path`).
    fn sso(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.sso_port)
    }

    /// The development accounts.magento.cloud provider.
    fn accounts(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.accounts_port)
    }

    /// Ctrl-C: SIGINT, then the exit status (bounded).
    fn interrupt(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        wait_exit(&mut self.child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the demo did not stop on SIGINT:\n{}", self.output()))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open(http: &reqwest::Client, url: &str) -> reqwest::Response {
    navigate(http.get(url)).send().await.expect(url)
}

/// Opens `url` and expects a redirect; returns where it points.
async fn redirected(http: &reqwest::Client, url: &str) -> String {
    let resp = open(http, url).await;
    assert!(
        resp.status().is_redirection(),
        "{url} answered {}: {:?}",
        resp.status(),
        resp.text().await
    );
    location(&resp)
}

/// Opens `url` and expects a page; returns its HTML.
async fn page(http: &reqwest::Client, url: &str) -> String {
    let resp = open(http, url).await;
    assert_eq!(resp.status(), 200, "{url}");
    resp.text().await.expect("page")
}

/// Submits a form the way a browser does from a page at `origin`.
async fn submit(
    http: &reqwest::Client,
    origin: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    http.post(action)
        .header("accept", "text/html")
        .header("origin", origin)
        .header("sec-fetch-site", "same-origin")
        .form(fields)
        .send()
        .await
        .expect(action)
}

/// The value of the hidden field `name` in a form.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in:\n{html}"))
        + marker.len();
    let len = html[start..].find('"').expect("end of value");
    html[start..start + len].to_string()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// === Method 1, end to end ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_1_end_to_end_with_a_new_magento_account_then_sign_out_and_ctrl_c() {
    let mut demo = Demo::start();
    let http = user();

    // The guide is public and lists the demo users.
    let guide = page(&http, &demo.url("/welcome")).await;
    assert!(guide.contains("<title>Welcome · linkgate demo</title>"));
    assert!(
        guide.contains("alice (not linked yet), carol, dave"),
        "{guide}"
    );

    // Sign in to accounts.magento.cloud as alice.
    let authorize = redirected(&http, &demo.url("/oauth2/account/start?rd=%2F")).await;
    assert!(
        authorize.starts_with(&demo.accounts("/auth/authorize?")),
        "{authorize}"
    );
    let form = page(&http, &authorize).await;
    assert!(
        form.contains("<title>Sign in · accounts.magento.cloud (development)</title>"),
        "{form}"
    );
    assert!(form.contains("Development provider."));
    assert!(form.contains("<label for=\"login\">Username</label>"));
    assert!(form.contains("<td>carol</td>"), "the demo users are listed");
    let request = hidden(&form, "request");
    let origin = demo.accounts("");
    let login = demo.accounts("/auth/login");

    // A wrong password shows the form again, with the error.
    let resp = submit(
        &http,
        &origin,
        &login,
        &[
            ("request", &request),
            ("login", "alice"),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let again = resp.text().await.unwrap();
    assert!(
        again.contains("role=\"alert\" id=\"error\">Wrong username or password."),
        "{again}"
    );
    assert_eq!(hidden(&again, "request"), request);

    let resp = submit(
        &http,
        &origin,
        &login,
        &[
            ("request", &request),
            ("login", "alice"),
            ("password", "demo"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let callback = location(&resp);
    assert!(
        callback.starts_with(&demo.url("/oauth2/account/callback?code=")),
        "{callback}"
    );
    assert_eq!(query(&callback)["iss"], demo.accounts(""), "RFC 9207");
    assert_eq!(redirected(&http, &callback).await, demo.url("/"));

    // alice is not linked: linkgate sends her to Magento.com to connect.
    let start = redirected(&http, &demo.url("/")).await;
    assert!(
        start.contains("/oauth2/start?rd=%2F&intent=connect"),
        "{start}"
    );
    let authorize = redirected(&http, &start).await;
    assert!(
        authorize.starts_with(&demo.sso("/auth/authorize?")),
        "{authorize}"
    );
    let form = page(&http, &authorize).await;
    assert!(
        form.contains("<title>Sign in · Magento.com (development)</title>"),
        "{form}"
    );
    assert!(form.contains("<td>alice@example.com</td>"));
    let request = hidden(&form, "request");
    assert!(
        form.contains(&format!(
            "<a href=\"/auth/register?request={request}\">Create account</a>"
        )),
        "{form}"
    );

    // Create a Magento.com account on the way (Method 1 of the KB allows it).
    let register = page(
        &http,
        &demo.sso(&format!("/auth/register?request={request}")),
    )
    .await;
    assert!(
        register.contains("<title>Create account · Magento.com (development)</title>"),
        "{register}"
    );
    assert!(register.contains("<label for=\"password\">"));
    let resp = submit(
        &http,
        &demo.sso(""),
        &demo.sso("/auth/register"),
        &[
            ("request", &request),
            ("login", "dana@example.com"),
            ("name", "Dana Newcomer"),
            ("password", "s3cret"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 303, "{:?}", resp.text().await);
    let callback = location(&resp);
    assert!(
        callback.starts_with(&demo.url("/oauth2/callback?code=")),
        "{callback}"
    );
    assert_eq!(redirected(&http, &callback).await, demo.url("/"));

    // Back on the sample application, linked.
    let app = page(&http, &demo.url("/")).await;
    assert!(
        app.contains("<title>Sample application · linkgate demo</title>"),
        "{app}"
    );
    assert!(
        app.contains("<strong id=\"link-status\">linked</strong>"),
        "{app}"
    );
    assert!(app.contains("<code>X-Linkgate-Link-Status</code>"), "{app}");
    assert!(app.contains("dana@example.com"));
    let seen: Value = http
        .get(demo.url("/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["link_status"], "linked", "{seen}");
    let headers = &seen["headers"];
    assert_eq!(headers["x-linkgate-link-status"], "linked");
    assert_eq!(headers["x-forwarded-email"], "dana@example.com");
    assert_eq!(headers["x-linkgate-account-id"], "cloud-0001", "alice");
    assert_eq!(
        headers["x-linkgate-sso-subject"], "mage-0003",
        "the account created in this run"
    );

    // Sign out (the sample application's link, then linkgate's confirmation button):
    // linkgate, then the providers, then the guide.
    let app_page = page(&http, &demo.url("/")).await;
    assert!(
        app_page.contains("href=\"/oauth2/sign_out?rd=%2Fwelcome\""),
        "{app_page}"
    );
    let confirm = page(&http, &demo.url("/oauth2/sign_out?rd=%2Fwelcome")).await;
    let resp = submit(
        &http,
        &demo.url(""),
        &demo.url("/oauth2/sign_out?rd=%2Fwelcome"),
        &[("csrf", &hidden(&confirm, "csrf"))],
    )
    .await;
    assert_eq!(resp.status(), 302);
    // Each provider's logout (with its id_token as hint the development providers end the
    // session at once) returns to signed_out with the sealed chain as state; Magento.com's
    // comes last, then the guide.
    let mut next = location(&resp);
    let mut ended = Vec::new();
    while let Some(provider) = [demo.accounts(""), demo.sso("")]
        .into_iter()
        .find(|p| next.starts_with(&format!("{p}/auth/logout?")))
    {
        assert!(next.contains("id_token_hint="), "{next}");
        let signed_out = redirected(&http, &next).await;
        assert!(
            signed_out.starts_with(&demo.url("/oauth2/signed_out?state=")),
            "post_logout_redirect_uri with state: {signed_out}"
        );
        ended.push(provider);
        next = redirected(&http, &signed_out).await;
    }
    // alice signed in at accounts.magento.cloud in this browser (Method 1): that session
    // ends too, before Magento.com's.
    assert_eq!(ended, [demo.accounts(""), demo.sso("")]);
    assert_eq!(next, demo.url("/welcome"));

    // Signed out for real: the application asks for sign-in, and Magento.com for a password.
    let start = redirected(&http, &demo.url("/")).await;
    assert!(start.contains("/oauth2/start?rd=%2F"), "{start}");
    let authorize = redirected(&http, &start).await;
    let form = page(&http, &authorize).await;
    assert!(form.contains("<label for=\"password\">Password</label>"));

    // Ctrl-C stops the whole demo, cleanly.
    let status = demo.interrupt();
    assert!(status.success(), "{status}:\n{}", demo.output());
}

// === a taken port ===

#[test]
fn a_taken_port_is_a_clear_error_naming_its_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let mut ports = free_ports();
    while ports.contains(&port) {
        ports = free_ports();
    }
    ports[1] = port;
    let mut child = demo_command(ports).spawn().expect("start linkgate demo");
    let stdout = collect(child.stdout.take().unwrap(), "out", None);
    let stderr = collect(child.stderr.take().unwrap(), "err", None);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let status = status.expect("the demo should stop at once on a taken port");
    // The readers finish once the pipes close.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stderr.lock().unwrap().contains('\n') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = stderr.lock().unwrap().clone();
    assert!(!status.success(), "{status}");
    assert!(err.contains(&format!("port {port}")), "{err}");
    assert!(err.contains("--sso-port"), "{err}");
    assert!(err.contains("Magento.com (development)"), "{err}");
    assert!(
        !stdout.lock().unwrap().contains("Open http"),
        "no URL is offered"
    );
    drop(taken);
}

// === the development providers are honest OpenID providers ===

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// The query parameters of a URL.
fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .expect("URL")
        .query_pairs()
        .into_owned()
        .collect()
}

/// The public client `demo-public` (registered for trying the providers by hand).
struct PublicClient {
    issuer: String,
    redirect_uri: String,
}

impl PublicClient {
    fn authorize_url(&self, extra: &str) -> String {
        format!(
            "{}/auth/authorize?response_type=code&client_id=demo-public&redirect_uri={}&scope=openid%20email&state=st-1{extra}",
            self.issuer,
            encode(&self.redirect_uri)
        )
    }

    /// An authorization as `login` (signing in when the provider asks); returns the code and
    /// whether a password was asked.
    async fn code(
        &self,
        http: &reqwest::Client,
        pkce: &Pkce,
        nonce: &str,
        login: &str,
    ) -> (String, bool) {
        let url = self.authorize_url(&format!(
            "&code_challenge={}&code_challenge_method=S256&nonce={nonce}",
            pkce.challenge
        ));
        let resp = open(http, &url).await;
        let (back, prompted) = if resp.status() == 200 {
            let form = resp.text().await.unwrap();
            let resp = submit(
                http,
                &self.issuer,
                &format!("{}/auth/login", self.issuer),
                &[
                    ("request", &hidden(&form, "request")),
                    ("login", login),
                    ("password", "demo"),
                ],
            )
            .await;
            assert_eq!(resp.status(), 303);
            (location(&resp), true)
        } else {
            assert_eq!(resp.status(), 303);
            (location(&resp), false)
        };
        assert!(back.starts_with(&self.redirect_uri), "{back}");
        let q = query(&back);
        assert_eq!(q.get("state").map(String::as_str), Some("st-1"));
        assert_eq!(q.get("iss"), Some(&self.issuer));
        (q["code"].clone(), prompted)
    }

    async fn token(
        &self,
        http: &reqwest::Client,
        code: &str,
        verifier: Option<&str>,
    ) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("client_id", "demo-public"),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        let resp = http
            .post(format!("{}/token", self.issuer))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_enforce_pkce_single_use_codes_and_client_authentication() {
    let demo = Demo::start();
    for (issuer, login) in [
        (demo.sso(""), "alice@example.com"),
        (demo.accounts(""), "alice"),
    ] {
        let http = user();
        let client = PublicClient {
            issuer: issuer.clone(),
            redirect_uri: format!("http://127.0.0.1:{}/callback", demo.app_port),
        };

        // No code_challenge, or the `plain` method: refused at the authorization endpoint.
        let back = redirected(&http, &client.authorize_url("")).await;
        let q = query(&back);
        assert_eq!(q["error"], "invalid_request", "{back}");
        assert_eq!(q["state"], "st-1");
        let p = pkce();
        let back = redirected(
            &http,
            &client.authorize_url(&format!(
                "&code_challenge={}&code_challenge_method=plain",
                p.verifier
            )),
        )
        .await;
        assert_eq!(query(&back)["error"], "invalid_request", "{back}");

        // A code, then a token request without the verifier: refused.
        let (code, prompted) = client.code(&http, &p, "n-1", login).await;
        assert!(prompted);
        let (status, body) = client.token(&http, &code, None).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("code_verifier"),
            "{body}"
        );
        // The code was spent by that attempt: the right verifier is too late.
        let (status, body) = client.token(&http, &code, Some(&p.verifier)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );

        // A wrong verifier is refused. The provider session answers without a password.
        let p = pkce();
        let (code, prompted) = client.code(&http, &p, "n-2", login).await;
        assert!(!prompted, "the provider session makes it password-less");
        let (status, body) = client.token(&http, &code, Some(&pkce().verifier)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );

        // The right verifier: an id_token signed with the published key, nonce echoed.
        let p = pkce();
        let (code, _) = client.code(&http, &p, "n-3", login).await;
        let (status, body) = client.token(&http, &code, Some(&p.verifier)).await;
        assert_eq!(status, 200, "{body}");
        let jwks: JwkSet = http
            .get(format!("{issuer}/jwks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id_token = body["id_token"].as_str().unwrap();
        let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
        let key = DecodingKey::from_jwk(jwks.find(&kid).expect("kid in the JWKS")).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&["demo-public"]);
        let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
            .expect("a valid id_token")
            .claims;
        assert_eq!(claims["nonce"], "n-3");
        let access = body["access_token"].as_str().unwrap();
        let info: Value = http
            .get(format!("{issuer}/userinfo"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["sub"], claims["sub"]);

        // Replaying that code revokes the token it gave.
        let (status, _) = client.token(&http, &code, Some(&p.verifier)).await;
        assert_eq!(status, 400);
        let resp = http
            .get(format!("{issuer}/userinfo"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);

        // linkgate's own client must authenticate, as it registered: a wrong secret fails
        // either way.
        let form = [
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", "http://127.0.0.1/"),
        ];
        let basic = http
            .post(format!("{issuer}/token"))
            .basic_auth("linkgate-demo", Some("wrong"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 401);
        let post = http
            .post(format!("{issuer}/token"))
            .form(
                &[
                    &form[..],
                    &[("client_id", "linkgate-demo"), ("client_secret", "wrong")],
                ]
                .concat(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 401);
        let body: Value = post.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }
}
