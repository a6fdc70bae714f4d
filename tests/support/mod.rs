//! The integration-test rig: real parts on free loopback ports, stopped when dropped.
//!
//! ```ignore
//! let upstream = Upstream::start().await;
//! let gate = GateBuilder::new().upstream("app", &upstream).start();
//! let resp = client().get(gate.url("/public/x")).send().await?;
//! ```
//!
//! A missing tool (redis-server, node) fails the test with a message that says how to get it;
//! nothing is skipped silently.

#![allow(dead_code)]

pub mod browser;
pub mod nginx;
pub mod oidc;
pub mod sso;
pub mod tls;
pub mod upstream;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use upstream::Upstream;

/// A fixed cookie secret for tests (32 bytes, base64url).
pub const COOKIE_SECRET: &str = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng";

/// A free TCP port on 127.0.0.1: bound then released, and never handed out twice in one test
/// process. Tests in one binary run side by side; the OS may give a just-released port to the
/// next `bind(0)`, and two rigs racing to bind the same port fail in confusing ways (one
/// answers for the other).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port left that this test process has not handed out already")
}

/// Panics with an install hint when a program is not on `PATH`.
pub fn require(program: &str, hint: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "`{program}` is not installed: {hint} (or run scripts/test, which installs everything)"
    );
}

/// Waits until `probe` returns true, polling every 10 ms, for at most `limit`.
pub fn wait_until(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An HTTP client like a careful test needs: cookies kept, redirects never followed,
/// invalid TLS certificates accepted (tests use self-signed ones), loopback only.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Like [`client`], but with no cookie jar: every cookie is sent by hand.
pub fn client_without_cookies() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

// === Redis ===

/// A `redis-server` on a free loopback port, keeping nothing on disk.
pub struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one and waits until it answers `PING`.
    pub fn start() -> Self {
        require("redis-server", "apt-get install redis-server");
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs a command with `redis-cli` and returns its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        require("redis-cli", "apt-get install redis-tools");
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Keys matching a pattern, sorted (SCAN's order changes whenever Redis rehashes).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let out = self.cli(&["--scan", "--pattern", pattern]);
        let mut keys: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    /// How many times the server ran `command` (from `INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Freezes the server (`SIGSTOP`): connections stay open and nothing answers, as with a
    /// server stuck or unreachable mid-command, until [`Redis::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("a running redis-server").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    }

    /// Stops the server (the port stays reserved for [`Redis::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        wait_until(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || redis_ping(port),
        );
    }
}

fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// === linkgate ===

/// Builds a linkgate configuration around the parts a test started. Its ports are chosen
/// up front, so a provider can register the gate's callback before the gate starts.
pub struct GateBuilder {
    listen: u16,
    admin: u16,
    server_extra: String,
    sections: String,
    upstreams: String,
    env: Vec<(String, String)>,
}

impl Default for GateBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GateBuilder {
    /// A gate with no upstreams yet; `[server]` listen/admin/threads are filled in.
    pub fn new() -> Self {
        Self {
            listen: free_port(),
            admin: free_port(),
            server_extra: String::new(),
            sections: String::new(),
            upstreams: String::new(),
            env: Vec::new(),
        }
    }

    /// `http://127.0.0.1:PORT{path}` of the gate-to-be.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.listen, path)
    }

    /// Adds an `[[upstreams]]` entry for a test upstream; `extra` is more TOML lines for it.
    pub fn upstream_with(mut self, name: &str, url: &str, extra: &str) -> Self {
        let _ = write!(
            self.upstreams,
            "\n[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n"
        );
        self
    }

    /// Adds an `[[upstreams]]` entry for an echo upstream.
    pub fn upstream(self, name: &str, upstream: &Upstream) -> Self {
        let url = upstream.url();
        self.upstream_with(name, &url, "")
    }

    /// Adds lines to `[server]`.
    pub fn server(mut self, lines: &str) -> Self {
        self.server_extra.push_str(lines);
        self.server_extra.push('\n');
        self
    }

    /// Adds whole sections (`[authz]` ...).
    pub fn toml(mut self, text: &str) -> Self {
        self.sections.push_str(text);
        self.sections.push('\n');
        self
    }

    /// Sets an environment variable for the linkgate process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The configuration text, for a given listen/admin port and directory.
    pub fn render(&self, listen: u16, admin: u16, dir: &Path) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             threads = 2\npid_file = \"{dir}/linkgate.pid\"\nupgrade_sock = \"{dir}/upgrade.sock\"\n\
             {server}\n{sections}\n{upstreams}",
            dir = dir.display(),
            server = self.server_extra,
            sections = self.sections,
            upstreams = self.upstreams,
        )
    }

    /// Writes the config and starts the linkgate binary; returns once `/healthz` answers.
    pub fn start(self) -> Gate {
        let dir = tempfile::tempdir().expect("tempdir");
        let (listen, admin) = (self.listen, self.admin);
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, self.render(listen, admin, dir.path())).expect("write config");
        let mut gate = Gate {
            dir,
            config_path,
            listen,
            admin,
            env: self.env,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        };
        gate.spawn(false);
        gate.wait_healthy();
        gate
    }
}

/// A running linkgate process.
pub struct Gate {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    /// The proxy port.
    pub listen: u16,
    /// The admin port.
    pub admin: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

/// The path of the linkgate binary under test.
pub fn linkgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_linkgate")
}

impl Gate {
    fn spawn(&mut self, upgrade: bool) {
        let mut cmd = Command::new(linkgate_bin());
        cmd.arg("run").arg("-c").arg(&self.config_path);
        if upgrade {
            cmd.arg("--upgrade");
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start linkgate");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("LINKGATE_TEST_LOG").is_some() {
                    eprintln!("[linkgate] {line}");
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        self.child = Some(child);
    }

    fn wait_healthy(&mut self) {
        let admin = self.admin;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get_status(admin, "/healthz") == Some(200) && port_open(self.listen) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "linkgate exited with {status} before it was healthy:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!("linkgate not healthy after 20 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the process and starts it again with the same configuration (a restart, as
    /// an operator or an orchestrator would do it).
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(false);
        self.wait_healthy();
    }

    /// `http://127.0.0.1:PORT{path}` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.listen, path)
    }

    /// The proxy listener's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.listen))
    }

    /// `http://127.0.0.1:ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin, path)
    }

    /// `/metrics` as it reads now.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one series of `/metrics`, written as it is printed
    /// (`linkgate_session_cache_total{result="hit"}`); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `/metrics` (bounded, 5 s) until it contains `needle`; returns the text. Metrics
    /// are recorded when a request's log line is written, just after its response.
    pub async fn metrics_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.metrics().await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics never showed {needle}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything linkgate wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal to the running process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("signal linkgate");
    }

    /// Waits (bounded) for the process to exit and returns its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "linkgate did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a second process with `--upgrade` that takes the sockets over from this one,
    /// then tells this one to hand them over (SIGQUIT). Returns the old process, which is
    /// draining.
    pub fn upgrade(&mut self) -> Child {
        let old = self.child.take().expect("running");
        self.spawn(true);
        // The new process waits on the upgrade socket; the old one connects to it on SIGQUIT.
        let sock = self.dir.path().join("upgrade.sock");
        wait_until(
            "the new process to listen on the upgrade socket",
            Duration::from_secs(20),
            || sock.exists(),
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        )
        .expect("SIGQUIT");
        self.wait_healthy();
        old
    }

    /// The temporary directory holding the config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A minimal blocking GET on loopback, for readiness probes (no async runtime needed).
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// Runs `linkgate` with arguments and returns (exit code, stdout, stderr).
pub fn linkgate_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(linkgate_bin())
        .args(args)
        .env_remove("LINKGATE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run linkgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A response read off the wire by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl RawResponse {
    /// The first value of a header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a request exactly as written (no client normalises the path or the header names)
/// and reads the response until the server closes. The request should say
/// `Connection: close`.
pub async fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server did not close the connection within 10 s"
    );
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A `GET` written by hand, with extra header lines (`"Name: value"`).
pub async fn raw_get(addr: SocketAddr, target: &str, headers: &[&str]) -> RawResponse {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    raw_request(addr, &req).await
}
