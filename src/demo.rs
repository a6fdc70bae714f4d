//! `linkgate demo`: the whole story on one machine, in one process, on loopback only.
//!
//! Four services run side by side in one Pingora server:
//! - linkgate itself, from a configuration written here as TOML text and validated by the same
//!   [`Config::parse`] as an operator's file (in-memory store, linking enforced);
//! - "Magento.com (development)", a development OpenID provider ([`linkgate_demo::provider`]) standing in for
//!   the Magento.com single sign-on;
//! - "accounts.magento.cloud (development)", the same provider type with other users, standing
//!   in for the cloud accounts;
//! - a sample application ([`linkgate_demo::upstream`]) behind linkgate that shows what it receives.
//!
//! This module owns the ports (each is checked before anything starts, so a taken one is a
//! clear error naming the flag that changes it), the configuration text, the wiring, and the
//! banner, which is printed once every listener accepts connections.
//!
//! The development providers and the sample application are the `linkgate-demo` crate
//! (crates/linkgate-demo), not part of the gate: this module only starts them, on 127.0.0.1,
//! and nothing in `linkgate run` or its configuration can.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use linkgate_demo::provider::{Client, ClientAuth, DemoUser, DevProvider, LoginKind, ProviderSpec};
use linkgate_demo::upstream::SampleApp;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::services::listening::Service;
use pingora::services::ServiceWithDependents;

use crate::config::Config;
use crate::secret::Secret;
use crate::server::{self, RunOptions};

pub use linkgate_demo::{
    ACCOUNTS_LABEL, CLIENT_ID, DEMO_PASSWORD, PREFIX, PUBLIC_CLIENT_CALLBACK, PUBLIC_CLIENT_ID,
    SSO_LABEL,
};

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
            ClientAuth::SecretBasic(secrets.sso_client.expose().clone()),
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
            ClientAuth::SecretPost(secrets.accounts_client.expose().clone()),
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

#[cfg(test)]
mod tests;
