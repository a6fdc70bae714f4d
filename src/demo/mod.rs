//! `linkgate demo`: the whole story on one machine, in one process, on loopback only.
//!
//! Four services run side by side in one Pingora server:
//! - linkgate itself, from a configuration written here as TOML text and validated by the same
//!   [`Config::parse`] as an operator's file (in-memory store, linking enforced);
//! - "Magento.com (development)", a development OpenID provider ([`provider`]) standing in for
//!   the Magento.com single sign-on;
//! - "accounts.magento.cloud (development)", the same provider type with other users, standing
//!   in for the cloud accounts;
//! - a sample application ([`upstream`]) behind linkgate that shows what it receives.
//!
//! This module owns the ports (each is checked before anything starts, so a taken one is a
//! clear error naming the flag that changes it), the configuration text, the wiring, and the
//! banner, which is printed once every listener accepts connections.
//!
//! The development providers exist only here: nothing in `linkgate run` or its configuration
//! can construct them, and they only ever listen on 127.0.0.1.

pub mod provider;
pub mod upstream;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use pingora::services::ServiceWithDependents;

use crate::config::Config;
use crate::pages::escape;
use crate::secret::Secret;
use crate::server::{self, RunOptions};
use provider::{Client, ClientAuth, DemoUser, DevProvider, LoginKind, ProviderSpec};
use upstream::SampleApp;

/// The name of the development SSO provider, on its pages and on linkgate's.
pub const SSO_LABEL: &str = "Magento.com (development)";
/// The name of the development accounts provider, on its pages and on linkgate's.
pub const ACCOUNTS_LABEL: &str = "accounts.magento.cloud (development)";
/// linkgate's endpoint prefix in the demo.
pub const PREFIX: &str = "/oauth2";
/// The password of every demo user.
pub const DEMO_PASSWORD: &str = "demo";
/// The OAuth2 client linkgate is registered as, at both providers.
pub const CLIENT_ID: &str = "linkgate-demo";
/// A public client (PKCE only, no secret) registered at both providers, for trying them by
/// hand; its code comes back to the sample application, which shows it.
pub const PUBLIC_CLIENT_ID: &str = "demo-public";
/// The public client's redirect path on the sample application.
pub const PUBLIC_CLIENT_CALLBACK: &str = "/callback";

/// The ports of `linkgate demo`, one per listener; all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    /// linkgate (`--port`, default 4180): the URL to open.
    pub port: u16,
    /// The development Magento.com provider (`--sso-port`, default 4181).
    pub sso_port: u16,
    /// The development accounts.magento.cloud provider (`--accounts-port`, default 4182).
    pub accounts_port: u16,
    /// The sample application (`--app-port`, default 4183).
    pub app_port: u16,
    /// linkgate's admin listener (`--admin-port`, default 4190).
    pub admin_port: u16,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            port: 4180,
            sso_port: 4181,
            accounts_port: 4182,
            app_port: 4183,
            admin_port: 4190,
        }
    }
}

impl DemoOptions {
    /// Each port with the flag that sets it and what listens there.
    fn ports(&self) -> [(u16, &'static str, &'static str); 5] {
        [
            (self.port, "--port", "linkgate"),
            (self.sso_port, "--sso-port", SSO_LABEL),
            (self.accounts_port, "--accounts-port", ACCOUNTS_LABEL),
            (self.app_port, "--app-port", "the sample application"),
            (self.admin_port, "--admin-port", "linkgate's admin listener"),
        ]
    }

    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }
}

/// Why the demo could not take its ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Port 0 was given (the URL to open must be known before start).
    #[error("{flag} 0: choose a port from 1 to 65535")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
    /// Two listeners were given the same port.
    #[error("{first} and {second} are both {port}: give each a different port")]
    Twice {
        /// The port.
        port: u16,
        /// The first flag naming it.
        first: &'static str,
        /// The second flag naming it.
        second: &'static str,
    },
    /// Something else listens there already (or the port may not be bound).
    #[error(
        "port {port} (for {what}) is not free on 127.0.0.1: {reason}; \
         stop what uses it or choose another port with {flag} <PORT>"
    )]
    Taken {
        /// The port.
        port: u16,
        /// The flag that changes it.
        flag: &'static str,
        /// What was to listen there.
        what: &'static str,
        /// The operating system's reason.
        reason: String,
    },
}

/// Checks that every port is distinct and free by binding each one on 127.0.0.1, then lets
/// them go for Pingora to bind. A taken port is an error that names the flag to change it.
pub fn check_ports(opts: &DemoOptions) -> Result<(), PortError> {
    let ports = opts.ports();
    for (i, (port, flag, _)) in ports.iter().enumerate() {
        if *port == 0 {
            return Err(PortError::Zero { flag });
        }
        if let Some((_, first, _)) = ports[..i].iter().find(|(p, _, _)| p == port) {
            return Err(PortError::Twice {
                port: *port,
                first,
                second: flag,
            });
        }
    }
    let mut held = Vec::new();
    for (port, flag, what) in ports {
        match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
            Ok(listener) => held.push(listener),
            Err(e) => {
                return Err(PortError::Taken {
                    port,
                    flag,
                    what,
                    reason: e.to_string(),
                })
            }
        }
    }
    drop(held);
    Ok(())
}

/// Runs the demo until Ctrl-C (SIGINT) or SIGTERM. Returns only on failure to start.
pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    check_ports(&opts)?;
    let secrets = Secrets::random();
    let config = config(&opts, &secrets)?;
    crate::logging::init(&config.log);

    let sso = DevProvider::new(sso_spec(&opts, &secrets))
        .with_context(|| format!("while preparing {SSO_LABEL}"))?;
    let accounts = DevProvider::new(accounts_spec(&opts, &secrets))
        .with_context(|| format!("while preparing {ACCOUNTS_LABEL}"))?;
    let app = SampleApp::new(
        PREFIX,
        &DemoOptions::url(opts.sso_port),
        &DemoOptions::url(opts.accounts_port),
    );
    let extra = vec![
        service(SSO_LABEL, sso, opts.sso_port),
        service(ACCOUNTS_LABEL, accounts, opts.accounts_port),
        service("sample application", app, opts.app_port),
    ];

    std::thread::Builder::new()
        .name("linkgate-demo-banner".into())
        .spawn(move || announce_when_listening(&opts))
        .context("while starting the banner")?;
    server::run_with(config, RunOptions::default(), extra)
}

/// One loopback HTTP service for the server.
fn service<A>(name: &str, app: A, port: u16) -> Box<dyn ServiceWithDependents>
where
    A: ServeHttp + Send + Sync + 'static,
{
    let mut service = Service::new(name.to_string(), HttpServer::new_app(app));
    service.add_tcp(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).to_string());
    Box::new(service)
}

// === configuration ===

/// The secrets of one demo run: random at every start, never printed.
struct Secrets {
    sso_client: Secret<String>,
    accounts_client: Secret<String>,
    cookie: Secret<String>,
}

impl Secrets {
    fn random() -> Self {
        let token = || {
            Secret::new(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
            )
        };
        Self {
            sso_client: token(),
            accounts_client: token(),
            cookie: token(),
        }
    }
}

/// linkgate's configuration for the demo, as an operator would write it. Secrets are
/// `${...}` references answered from `secrets`, so they are neither in the text nor in the
/// process environment.
fn config_text(opts: &DemoOptions) -> String {
    format!(
        r#"# linkgate demo: everything on 127.0.0.1.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
proxy_prefix = "{PREFIX}"
threads = 2

[[upstreams]]
name = "sample-app"
url = "http://127.0.0.1:{app_port}"

[sso]
display_name = "{SSO_LABEL}"
issuer = "http://127.0.0.1:{sso_port}"
client_id = "{CLIENT_ID}"
client_secret = "${{DEMO_SSO_CLIENT_SECRET}}"
token_auth_method = "client_secret_basic"
http_timeout = "5s"

[account]
display_name = "{ACCOUNTS_LABEL}"
source = "oauth2"
issuer = "http://127.0.0.1:{accounts_port}"
client_id = "{CLIENT_ID}"
client_secret = "${{DEMO_ACCOUNTS_CLIENT_SECRET}}"
token_auth_method = "client_secret_post"
http_timeout = "5s"

[link]
mode = "enforce"
allow_disconnect = true

[session]
store = "memory"
cookie_secret = "${{DEMO_COOKIE_SECRET}}"
# Plain http on loopback: a Secure cookie would never come back.
cookie_secure = false

[authz]
# The demo guide is public; everything else needs a linked session.
skip_auth_routes = ["GET=^/welcome$"]

[log]
# One access line per request; RUST_LOG overrides.
level = "warn,linkgate::access=info"
"#,
        port = opts.port,
        admin_port = opts.admin_port,
        app_port = opts.app_port,
        sso_port = opts.sso_port,
        accounts_port = opts.accounts_port,
    )
}

fn config(opts: &DemoOptions, secrets: &Secrets) -> anyhow::Result<Config> {
    let env: HashMap<&str, &str> = [
        (
            "DEMO_SSO_CLIENT_SECRET",
            secrets.sso_client.expose().as_str(),
        ),
        (
            "DEMO_ACCOUNTS_CLIENT_SECRET",
            secrets.accounts_client.expose().as_str(),
        ),
        ("DEMO_COOKIE_SECRET", secrets.cookie.expose().as_str()),
    ]
    .into_iter()
    .collect();
    let lookup = |name: &str| env.get(name).map(|v| v.to_string());
    Config::parse(&config_text(opts), "linkgate demo (built-in)", &lookup)
        .map_err(|errors| anyhow::anyhow!("the demo configuration is invalid (a bug):\n{errors}"))
}

/// linkgate's callbacks on both loopback spellings, so the demo works whether the browser
/// says `127.0.0.1` or `localhost`.
fn gate_urls(port: u16, path: &str) -> Vec<String> {
    ["127.0.0.1", "localhost"]
        .iter()
        .map(|host| format!("http://{host}:{port}{path}"))
        .collect()
}

fn clients(opts: &DemoOptions, auth: ClientAuth, redirect: &str) -> Vec<Client> {
    vec![
        Client {
            id: CLIENT_ID.to_string(),
            name: "linkgate demo".to_string(),
            auth,
            redirect_uris: gate_urls(opts.port, &format!("{PREFIX}/{redirect}")),
            post_logout_redirect_uris: gate_urls(opts.port, &format!("{PREFIX}/signed_out")),
        },
        Client {
            id: PUBLIC_CLIENT_ID.to_string(),
            name: "Your own experiments (public client)".to_string(),
            auth: ClientAuth::None,
            redirect_uris: vec![format!(
                "{}{PUBLIC_CLIENT_CALLBACK}",
                DemoOptions::url(opts.app_port)
            )],
            post_logout_redirect_uris: Vec::new(),
        },
    ]
}

fn user(login: &str, email: &str, name: &str, hint: &str) -> DemoUser {
    DemoUser {
        login: login.to_string(),
        password: DEMO_PASSWORD.to_string(),
        email: email.to_string(),
        name: name.to_string(),
        hint: hint.to_string(),
    }
}

fn sso_spec(opts: &DemoOptions, secrets: &Secrets) -> ProviderSpec {
    ProviderSpec {
        label: SSO_LABEL.to_string(),
        issuer: DemoOptions::url(opts.sso_port),
        login_kind: LoginKind::Email,
        registration: true,
        cookie_name: "magento_dev_session".to_string(),
        subject_prefix: "mage-".to_string(),
        accent: "#a33a00".to_string(),
        users: vec![
            user(
                "alice@example.com",
                "alice@example.com",
                "Alice Example",
                "not linked yet: connect her to the cloud account alice (Method 1), or create a new account instead",
            ),
            user(
                "bob@example.com",
                "bob@example.com",
                "Bob Example",
                "sign in here first, then connect the cloud account carol without a password (Method 2)",
            ),
        ],
        clients: clients(
            opts,
            ClientAuth::SecretBasic(Secret::new(secrets.sso_client.expose().clone())),
            "callback",
        ),
    }
}

fn accounts_spec(opts: &DemoOptions, secrets: &Secrets) -> ProviderSpec {
    ProviderSpec {
        label: ACCOUNTS_LABEL.to_string(),
        issuer: DemoOptions::url(opts.accounts_port),
        login_kind: LoginKind::Username,
        registration: false,
        cookie_name: "accounts_dev_session".to_string(),
        subject_prefix: "cloud-".to_string(),
        accent: "#14548a".to_string(),
        users: vec![
            user(
                "alice",
                "alice@example.com",
                "Alice Example",
                "not linked yet: linkgate sends her to Magento.com to connect (Method 1)",
            ),
            user(
                "carol",
                "carol@example.com",
                "Carol Example",
                "connect her while signed in at Magento.com as bob (Method 2)",
            ),
            user(
                "dave",
                "dave@example.com",
                "Dave Example",
                "connect him after signing in at Magento.com first with a new account",
            ),
        ],
        clients: clients(
            opts,
            ClientAuth::SecretPost(Secret::new(secrets.accounts_client.expose().clone())),
            "account/callback",
        ),
    }
}

// === banner ===

/// Waits until every listener accepts connections, then prints the banner (or, if they never
/// do, says so on stderr).
fn announce_when_listening(opts: &DemoOptions) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let listening = |port: u16| {
        TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_millis(200),
        )
        .is_ok()
    };
    while !opts.ports().iter().all(|(port, _, _)| listening(*port)) {
        if Instant::now() > deadline {
            eprintln!(
                "linkgate demo: the listeners did not come up within 30 s; see the log above"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner(opts).as_bytes());
    let _ = out.flush();
}

/// What the demo prints once it is ready: the URL to open, the demo users, and which user
/// shows which flow.
pub fn banner(opts: &DemoOptions) -> String {
    let gate = DemoOptions::url(opts.port);
    let sso = DemoOptions::url(opts.sso_port);
    let accounts = DemoOptions::url(opts.accounts_port);
    let app = DemoOptions::url(opts.app_port);
    let admin = DemoOptions::url(opts.admin_port);
    // A raw string keeps the indentation exactly as printed.
    format!(
        r#"
linkgate demo: everything runs in this one process, on 127.0.0.1 only.

  Open {gate}/welcome

  linkgate (in-memory store, linking enforced)  {gate}
  {SSO_LABEL}                     {sso}
  {ACCOUNTS_LABEL}          {accounts}
  sample application, behind linkgate           {app}
  linkgate admin (health, metrics)              {admin}/metrics

Demo users, every password is "{DEMO_PASSWORD}":
  {SSO_LABEL}             alice@example.com, bob@example.com,
                                        or "Create account" on its sign-in form
  {ACCOUNTS_LABEL}  alice (not linked yet), carol, dave

Try, in this order:
  1. Method 1: open {gate}{PREFIX}/account/start?rd=/
     and sign in to accounts.magento.cloud as alice. She is not linked yet, so
     linkgate sends you to Magento.com: sign in as alice@example.com, or choose
     "Create account". You land on the sample application, linked.
  2. Primary login: choose "Sign out" there (it ends the Magento.com session too),
     open {gate}/ and sign in at Magento.com alone with the
     account you linked: linkgate finds the link and opens the cloud account too.
  3. Method 2: sign in at Magento.com's own page, {sso}/auth/account,
     as bob@example.com (and sign out of accounts.magento.cloud at
     {accounts}/auth/account if alice is still signed in there);
     then open {gate}{PREFIX}/account/start?rd=/ and sign in as carol:
     linkgate sends you on to Magento.com, which knows you already, so no
     password is asked and you come back linked.
  4. Magento.com first: sign out, open {gate}/ and on Magento.com's form
     choose "Create account" (any new email). No cloud account is connected to
     it, so linkgate shows "Connect your account with {SSO_LABEL}" with
     "Sign in to accounts.magento.cloud": sign in as dave and you come back to
     the page you asked for, linked, without a second Magento.com password.
  5. Disconnect: on Account Settings, {gate}{PREFIX}/link, choose
     "Disconnect from {SSO_LABEL}": the link and the sessions that
     relied on it end.
  6. Sign out: the sample application's "Sign out" ends the linkgate session, the
     accounts.magento.cloud session when you signed in there through linkgate, and
     the Magento.com session (RP-initiated logout), then shows the guide again.

Each request is logged below. Stop with Ctrl-C.

"#
    )
}

// === answers shared by the demo services ===

/// A complete answer of a demo service. Every one carries `Content-Length`,
/// `Cache-Control: no-store` and the security headers, like linkgate's own answers.
#[derive(Debug)]
pub(crate) struct Answer {
    status: StatusCode,
    content_type: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Answer {
    /// An HTML page.
    pub(crate) fn html(status: StatusCode, body: String) -> Self {
        Self::new(status, "text/html; charset=utf-8", body.into_bytes())
    }

    /// A JSON document.
    pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        Self::new(
            status,
            "application/json",
            serde_json::to_vec_pretty(body).unwrap_or_default(),
        )
    }

    /// A `303 See Other` to `location`: the browser follows with a `GET`, whatever the method
    /// that led here.
    pub(crate) fn see_other(location: &str) -> Self {
        Self::new(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            Vec::new(),
        )
        .header(header::LOCATION, location)
    }

    fn new(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header; an invalid value is dropped (and logged), never sent half-formed.
    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(v) => self.headers.push((name, v)),
            Err(_) => tracing::error!(header = %name, "demo: refusing an invalid header value"),
        }
        self
    }

    /// The status it will be sent with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The response for Pingora.
    pub(crate) fn into_response(self) -> Response<Vec<u8>> {
        let len = self.body.len();
        let html = self.content_type.starts_with("text/html");
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Codes and states travel in URLs: never leak them in a Referer.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if html {
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            // No `form-action`: a sign-in form's answer redirects to the application, and
            // browsers check redirects after a form against it.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
        }
        for (name, value) in self.headers {
            h.append(name, value);
        }
        resp
    }
}

/// Query or form parameters, in order; a repeated name is kept so it can be refused
/// (OAuth 2.0 forbids repeating a parameter).
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text (a query string or a form body).
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, when present and not empty.
    pub(crate) fn nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// The first parameter name that appears more than once, if any.
    pub(crate) fn repeated(&self) -> Option<&str> {
        self.0.iter().enumerate().find_map(|(i, (k, _))| {
            self.0[..i]
                .iter()
                .any(|(earlier, _)| earlier == k)
                .then_some(k.as_str())
        })
    }
}

/// The largest request body a demo service reads.
const MAX_BODY: usize = 64 * 1024;

/// Reads the whole request body (bounded); `None` when it is too large or unreadable.
pub(crate) async fn read_body(session: &mut ServerSession) -> Option<Vec<u8>> {
    crate::body::read_bounded(session, MAX_BODY).await.ok()
}

/// Wraps already-escaped `main` HTML in the demo's layout: self-contained (inline CSS, no
/// assets from the internet), readable without JavaScript. `title` and `site` are plain text;
/// the document title reads "{title} · {site}" so a person always knows where they are.
pub(crate) fn page(title: &str, site: &str, accent: &str, main_html: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · {site}</title><style>:root{{--accent:{accent}}}{STYLE}</style></head>\
<body><header class=\"site\"><p>{site}</p></header><main>{main_html}</main></body></html>\n",
        title = escape(title),
        site = escape(site),
        accent = escape(accent),
    )
}

const STYLE: &str = "body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;\
color:#1a1a1a;background:#f4f4f4;margin:0}header.site{background:var(--accent);color:#fff;\
padding:.5rem 1rem;font-weight:600}header.site p{margin:0;max-width:44rem;margin:0 auto}\
main{max-width:44rem;margin:2rem auto;padding:2rem;background:#fff;border-radius:8px;\
box-shadow:0 1px 3px rgba(0,0,0,.15)}h1{font-size:1.5rem;margin-top:0}h2{font-size:1.15rem}\
label{display:block;font-weight:600;margin-top:1rem}input{font:inherit;width:100%;\
box-sizing:border-box;padding:.5rem;border:1px solid #767676;border-radius:4px}\
button,.button{font:inherit;background:var(--accent);color:#fff;border:0;border-radius:4px;\
padding:.6rem 1.2rem;cursor:pointer;text-decoration:none;display:inline-block;margin-top:1rem}\
button.secondary{background:#fff;color:var(--accent);border:1px solid var(--accent)}\
button:focus,.button:focus,a:focus,input:focus{outline:3px solid #f0a000;outline-offset:2px}\
a{color:var(--accent)}.dev{background:#fff4d6;border-left:4px solid #f0a000;padding:.5rem .75rem}\
.error{background:#fde7e7;border-left:4px solid #b00020;padding:.5rem .75rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.35rem .5rem;\
border-bottom:1px solid #ddd;vertical-align:top;overflow-wrap:break-word}caption{text-align:left;\
font-weight:600;padding:.25rem 0}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.95em}\
tr.highlight{background:#e6f4ea}.status{font-size:1.2rem;padding:.5rem .75rem;border-radius:4px;\
border:2px solid #767676}.status.linked{border-color:#1e7b34;background:#e6f4ea}\
.status.grace{border-color:#f0a000;background:#fff4d6}.status.none{background:#f4f4f4}\
form.inline{display:inline}li{margin:.4rem 0}\
@media(max-width:40rem){main{margin:0;border-radius:0;padding:1.25rem}}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_configuration_passes_the_operators_validation() {
        let opts = DemoOptions::default();
        let config = config(&opts, &Secrets::random()).expect("valid");
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:4180");
        assert_eq!(config.session.store.as_str(), "memory");
        assert!(!config.session.cookie_secure);
        assert_eq!(config.link.mode.as_str(), "enforce");
        let sso = config.sso.expect("sso");
        assert_eq!(sso.issuer.as_deref(), Some("http://127.0.0.1:4181"));
        assert_eq!(sso.redirect_path, "/oauth2/callback");
    }

    #[test]
    fn the_configuration_text_holds_no_secret() {
        let secrets = Secrets::random();
        let text = config_text(&DemoOptions::default());
        assert!(!text.contains(secrets.cookie.expose().as_str()));
        assert!(text.contains("${DEMO_COOKIE_SECRET}"));
    }

    #[test]
    fn ports_must_differ_and_not_be_zero() {
        let twice = DemoOptions {
            app_port: 4181,
            ..DemoOptions::default()
        };
        assert_eq!(
            check_ports(&twice),
            Err(PortError::Twice {
                port: 4181,
                first: "--sso-port",
                second: "--app-port"
            })
        );
        let zero = DemoOptions {
            admin_port: 0,
            ..DemoOptions::default()
        };
        assert_eq!(
            check_ports(&zero),
            Err(PortError::Zero {
                flag: "--admin-port"
            })
        );
    }

    #[test]
    fn a_taken_port_names_its_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let free = |n: u16| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or(40000 + n)
        };
        let opts = DemoOptions {
            port: free(0),
            sso_port: free(1),
            accounts_port: port,
            app_port: free(3),
            admin_port: free(4),
        };
        let e = check_ports(&opts).expect_err("taken").to_string();
        assert!(e.contains(&format!("port {port}")), "{e}");
        assert!(e.contains("--accounts-port"), "{e}");
    }

    #[test]
    fn params_find_repeats() {
        let p = Params::parse(b"a=1&b=2&a=3");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.repeated(), Some("a"));
        assert_eq!(Params::parse(b"a=1&b=").nonempty("b"), None);
    }
}
