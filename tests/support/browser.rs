//! A real browser for tests: Debian's headless Chromium, driven through `chromedriver` with
//! the `fantoccini` WebDriver client.
//!
//! ```ignore
//! let browser = Browser::start().await;
//! browser.goto(&gate.url("/projects")).await;
//! browser.fill("#login", "ann@magento.test").await;
//! browser.click("#submit").await;
//! assert_eq!(browser.text("h1").await, "Account Settings");
//! browser.screenshot("account-page").await;
//! ```
//!
//! Every browser is its own world: its own `chromedriver` on a free port, its own Chromium
//! profile in a temporary folder (so no cookie, cache or provider session leaks between
//! tests), and name resolution limited to 127.0.0.1 so that nothing leaves the machine.
//! Waiting is bounded polling for something a person would see, never a fixed sleep.
//! Dropping the [`Browser`] ends the WebDriver session and kills `chromedriver` and the
//! Chromium it started. A missing `chromium` or `chromedriver` fails the test with the
//! command that installs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// The Chromium binary (Debian's `chromium` package).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server (Debian's `chromium-driver` package).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any wait in this module may last: for `chromedriver` to answer, for an element
/// to appear, for a page to load.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(25);

const HOW_TO_INSTALL: &str = "apt-get install chromium chromium-driver (or run scripts/test)";

/// Chromium's command line: headless, no sandbox (tests run as root in containers), no
/// background traffic, a fixed window size for comparable screenshots, and every host name
/// except 127.0.0.1 unresolvable.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
];

/// Where screenshots go: `target/screenshots/` of this crate.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// A headless Chromium with its own `chromedriver` and profile.
pub struct Browser {
    client: Client,
    session_id: String,
    driver_port: u16,
    driver: Child,
    /// The test's name, the prefix of its screenshots.
    test: String,
    shots: AtomicU32,
    /// Chromium's `--user-data-dir`; removed after Chromium is gone (fields drop after
    /// [`Drop::drop`] ran).
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` and a Chromium session. Screenshots are named after the
    /// current test (the test thread's name); earlier screenshots of that test are removed.
    pub async fn start() -> Self {
        Self::start_with_languages(None).await
    }

    /// [`Browser::start`] with the browser's languages set, as a person sets them in the
    /// browser's settings (`Accept-Language`, e.g. `"sv-SE,sv"`).
    pub async fn start_in(languages: &str) -> Self {
        Self::start_with_languages(Some(languages)).await
    }

    async fn start_with_languages(languages: Option<&str>) -> Self {
        for (program, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(program).is_file(),
                "`{program}` (Debian package {package}) is not installed: {HOW_TO_INSTALL}"
            );
        }
        let test = std::thread::current()
            .name()
            .map_or("browser", |n| n.rsplit("::").next().unwrap_or(n))
            .to_string();
        remove_old_screenshots(&test);

        let driver_port = super::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={driver_port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that Chromium (its child) is ended with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {CHROMEDRIVER}: {e}: {HOW_TO_INSTALL}"));
        let mut driver = DriverGuard(Some(driver));
        super::wait_until("chromedriver to answer /status", WAIT_LIMIT, || {
            if let Some(status) = driver.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("chromedriver exited with {status} before it answered /status");
            }
            http_status(driver_port, "GET", "/status") == Some(200)
        });

        let profile = tempfile::Builder::new()
            .prefix("linkgate-chromium-")
            .tempdir()
            .expect("a temporary Chromium profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut options = json!({ "binary": CHROMIUM, "args": args });
        if let Some(languages) = languages {
            let first = languages.split(',').next().unwrap_or(languages);
            options["args"]
                .as_array_mut()
                .expect("args")
                .push(format!("--lang={first}").into());
            options["prefs"] = json!({ "intl": { "accept_languages": languages } });
        }
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            // Console messages (CSP violations among them) for [`Browser::console`].
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": options,
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .unwrap_or_else(|e| panic!("Chromium did not start through chromedriver: {e}"));
        let session_id = client
            .session_id()
            .await
            .expect("session id")
            .expect("a WebDriver session");
        Self {
            client,
            session_id,
            driver_port,
            driver: driver.0.take().expect("chromedriver"),
            test,
            shots: AtomicU32::new(0),
            _profile: profile,
        }
    }

    /// The WebDriver client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits until the page (after any redirects) has loaded.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
        self.wait_loaded().await;
    }

    /// Waits (bounded) for an element matching `css` and returns it.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.wait_for_locator(Locator::Css(css), css).await
    }

    async fn wait_for_locator(&self, locator: Locator<'_>, what: &str) -> Element {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            if let Ok(element) = self.client.find(locator).await {
                return element;
            }
            if Instant::now() > deadline {
                let url = self.url_text().await;
                let body = self.body_text().await;
                panic!("no {what} within {WAIT_LIMIT:?} on {url}:\n{body}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether an element matching `css` is on the page now (no waiting).
    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Types `text` into the field `css` (emptied first).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Clicks `css` (a button or link that leads to another page) and waits until the next
    /// page, after any redirects, has loaded.
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        self.click_and_wait(element, css).await;
    }

    /// Clicks the button or link whose visible text is `label`, as a person picks it, and
    /// waits until the next page has loaded.
    pub async fn click_text(&self, label: &str) {
        assert!(!label.contains('\''), "a label without quotes: {label}");
        let xpath = format!("//*[self::button or self::a][normalize-space(.)='{label}']");
        let what = format!("button or link \"{label}\"");
        let element = self.wait_for_locator(Locator::XPath(&xpath), &what).await;
        self.click_and_wait(element, &what).await;
    }

    async fn click_and_wait(&self, element: Element, what: &str) {
        // A mark on the current document: it is gone once another document has replaced it.
        self.client
            .execute("window.__linkgate_old_page = true;", vec![])
            .await
            .expect("mark the page");
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {what}: {e}"));
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut console = Vec::new();
        loop {
            let replaced = self
                .client
                .execute(
                    "return window.__linkgate_old_page !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            // An error here is a document in the middle of being replaced: look again.
            if let Ok(serde_json::Value::Bool(true)) = replaced {
                return;
            }
            // A navigation the page's own Content-Security-Policy blocked never comes: say so
            // at once, with the browser's words.
            console.extend(self.console().await);
            let blocked = console
                .iter()
                .any(|line| line.contains("Content Security Policy") && line.contains("blocked"));
            if blocked || Instant::now() > deadline {
                let url = self.url_text().await;
                panic!(
                    "clicking {what} led to no new page (still on {url}); the browser console \
                     says:\n{}",
                    console.join("\n")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The visible text of the element `css` (waiting for it), trimmed.
    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
            .trim()
            .to_string()
    }

    /// An attribute of the element `css` (waiting for it).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.wait_for(css).await;
        element
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("attribute {name} of {css}: {e}"))
    }

    /// The page's `<title>`.
    pub async fn title(&self) -> String {
        self.client.title().await.expect("page title")
    }

    /// The address in the location bar.
    pub async fn current_url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    /// The path of the address in the location bar.
    pub async fn path(&self) -> String {
        self.current_url().await.path().to_string()
    }

    /// The whole visible text of the page.
    pub async fn body_text(&self) -> String {
        match self
            .client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
        {
            Ok(serde_json::Value::String(text)) => text,
            other => format!("(no page text: {other:?})"),
        }
    }

    /// A JSON document the browser shows (an API answer opened as a page).
    pub async fn json(&self) -> serde_json::Value {
        let text = match self
            .client
            .execute(
                "const pre = document.querySelector('pre'); \
                 return pre ? pre.textContent : document.body.innerText;",
                vec![],
            )
            .await
        {
            Ok(serde_json::Value::String(text)) => text,
            other => panic!("no document text: {other:?}"),
        };
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Saves a PNG of the window as `target/screenshots/<test>-<nn>-<name>.png` and returns
    /// its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let n = self.shots.fetch_add(1, Ordering::Relaxed) + 1;
        let path = dir.join(format!("{}-{n:02}-{name}.png", self.test));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// The browser console's messages since the last call (Chromium reports blocked
    /// requests and Content-Security-Policy violations there), one line each.
    pub async fn console(&self) -> Vec<String> {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/se/log",
            self.driver_port, self.session_id
        );
        let answer: serde_json::Value = super::client()
            .post(url)
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .expect("chromedriver log")
            .json()
            .await
            .expect("chromedriver log JSON");
        answer["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (bounded) until the document has loaded completely.
    async fn wait_loaded(&self) {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let state = self
                .client
                .execute("return document.readyState;", vec![])
                .await;
            if matches!(state, Ok(serde_json::Value::String(ref s)) if s == "complete") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not finish loading within {WAIT_LIMIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn url_text(&self) -> String {
        self.client
            .current_url()
            .await
            .map_or_else(|e| format!("(unknown: {e})"), |u| u.to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session the WebDriver way (Chromium exits and cleans up), written by hand
        // because a destructor cannot await; then whatever is left of the process group goes.
        let _ = http_status(
            self.driver_port,
            "DELETE",
            &format!("/session/{}", self.session_id),
        );
        kill_group(&mut self.driver);
    }
}

/// Kills a half-started `chromedriver` when starting the session fails.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            kill_group(child);
        }
    }
}

/// Kills the process group led by `child` (chromedriver and the Chromium it started).
fn kill_group(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

fn remove_old_screenshots(test: &str) {
    let Ok(entries) = std::fs::read_dir(screenshot_dir()) else {
        return;
    };
    let prefix = format!("{test}-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".png") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A bodiless request to chromedriver, by hand (usable where nothing may await); its
/// status, or `None` when it does not answer in time.
fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
