//! A real browser for the web portal's tests: headless Chromium driven over
//! WebDriver by chromedriver, both Debian's (`chromium`, `chromium-driver`;
//! scripts/lib.sh installs them).
//!
//! A test file brings it in with `mod browser;` and starts it with
//! [`Browser::start_or_skip`]: without Chromium or chromedriver on the
//! machine the test is skipped with a loud message, unless
//! `TRUSTLAUNCH_REQUIRE_BROWSER=1`, which makes their absence a failure.
//! `TRUSTLAUNCH_CHROMEDRIVER` and `TRUSTLAUNCH_CHROMIUM` name other binaries
//! than /usr/bin/chromedriver and /usr/bin/chromium.
//!
//! The helpers panic with the selector and the page's URL when the browser
//! does not do what they ask: a test's failure says where it happened.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long chromedriver has to listen on its port.
const DRIVER_START: Duration = Duration::from_secs(20);

/// How long Chromium has to start and open the session.
const SESSION_START: Duration = Duration::from_secs(60);

/// How often [`Browser::wait_for_text`] reads the element again.
const POLL: Duration = Duration::from_millis(200);

/// Chromium's command line. Headless, and quiet on the network: without
/// the background-networking, component-update and sync switches Chromium
/// reaches out to Google's services at start, which a closed network
/// refuses. No `--ignore-certificate-errors`: the session's
/// `acceptInsecureCerts` lets a test serve HTTPS with a CA of its own.
/// `--disable-dev-shm-usage`: /dev/shm is small in containers.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// Headless Chromium and the chromedriver that drives it, for one test.
pub struct Browser {
    /// The WebDriver session, for what the helpers do not cover.
    pub client: Client,
    /// chromedriver, leader of its own process group (Chromium's too).
    child: Child,
    /// Chromium's profile (`--user-data-dir`) and chromedriver's log.
    dir: tempfile::TempDir,
}

/// Why [`Browser::start`] failed, which decides whether a test may skip.
enum StartError {
    /// Chromium or chromedriver is not on this machine.
    Missing(String),
    /// They are there but do not start or connect: always a failure.
    Failed(String),
}

impl StartError {
    fn message(self) -> String {
        match self {
            StartError::Missing(m) | StartError::Failed(m) => m,
        }
    }
}

/// The binary named by the environment variable `var`, else `default`;
/// an error naming both when it is not a file.
fn binary(var: &str, default: &str, package: &str) -> Result<PathBuf, StartError> {
    let (path, from) = match std::env::var_os(var) {
        Some(p) if !p.is_empty() => (PathBuf::from(p), format!("${var}")),
        _ => (
            PathBuf::from(default),
            format!("the default (set {var} for another)"),
        ),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(StartError::Missing(format!(
            "{} ({from}) is missing: install the Debian package {package} \
             (scripts/lib.sh install_packages does)",
            path.display()
        )))
    }
}

/// A port on 127.0.0.1 nothing listens on now.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// The last lines of chromedriver's log, for errors.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        "(chromedriver wrote nothing)".to_string()
    } else {
        format!("chromedriver's log ({}):\n{tail}", path.display())
    }
}

/// The workspace's root, where docs/ is.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Browser {
    /// Starts chromedriver on a free port of 127.0.0.1 and opens a session
    /// of headless Chromium with a fresh profile. The error says what is
    /// missing or what failed, with chromedriver's log.
    pub async fn start() -> Result<Browser, String> {
        Self::start_inner().await.map_err(StartError::message)
    }

    /// [`Browser::start`] for a test: `None` (after saying loudly on stderr
    /// that the test is skipped) when Chromium or chromedriver is not
    /// installed, unless `TRUSTLAUNCH_REQUIRE_BROWSER=1`; a panic when they
    /// are installed but do not start, or when they are required.
    pub async fn start_or_skip() -> Option<Browser> {
        match Self::start_inner().await {
            Ok(browser) => Some(browser),
            Err(StartError::Missing(why)) => {
                if std::env::var("TRUSTLAUNCH_REQUIRE_BROWSER").as_deref() == Ok("1") {
                    panic!("TRUSTLAUNCH_REQUIRE_BROWSER=1 but no browser: {why}");
                }
                eprintln!(
                    "\n*** SKIPPED: this test needs a real browser: {why}\n\
                     *** (set TRUSTLAUNCH_REQUIRE_BROWSER=1 to make this a failure)\n"
                );
                None
            }
            Err(StartError::Failed(why)) => panic!("the browser does not start: {why}"),
        }
    }

    async fn start_inner() -> Result<Browser, StartError> {
        let driver = binary(
            "TRUSTLAUNCH_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromium-driver",
        )?;
        let chromium = binary("TRUSTLAUNCH_CHROMIUM", "/usr/bin/chromium", "chromium")?;
        let failed = StartError::Failed;

        let dir = tempfile::Builder::new()
            .prefix("trustlaunch-browser-")
            .tempdir()
            .map_err(|e| failed(format!("a temporary directory for Chromium: {e}")))?;
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromedriver.log");
        let log_file =
            File::create(&log).map_err(|e| failed(format!("creating {}: {e}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| failed(format!("{}: {e}", log.display())))?;

        let port = free_port().map_err(failed)?;
        // Its own process group, which Chromium joins: `end` stops them all.
        let mut child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| failed(format!("starting {}: {e}", driver.display())))?;
        let client = match Self::connect(&mut child, port, &chromium, &profile).await {
            Ok(client) => client,
            Err(e) => {
                end(&mut child);
                return Err(failed(format!(
                    "{e} ({} --port={port})\n{}",
                    driver.display(),
                    log_tail(&log)
                )));
            }
        };
        let browser = Browser { client, child, dir };
        if let Err(e) = browser.client.set_window_size(1280, 900).await {
            return Err(failed(format!(
                "sizing the window: {e}\n{}",
                log_tail(&log)
            )));
        }
        Ok(browser)
    }

    /// Waits (20 s at most) for chromedriver to listen on `port`, then
    /// opens the session.
    async fn connect(
        child: &mut Child,
        port: u16,
        chromium: &Path,
        profile: &Path,
    ) -> Result<Client, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + DRIVER_START;
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => break,
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("chromedriver exited ({status})"));
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "chromedriver does not listen on {addr} after {DRIVER_START:?}: {e}"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium.to_string_lossy(), "args": args }),
        );
        // The portal's tests serve HTTPS with a CA of their own.
        capabilities.insert("acceptInsecureCerts".into(), json!(true));
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let url = format!("http://{addr}");
        match tokio::time::timeout(SESSION_START, builder.connect(&url)).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(format!(
                "no WebDriver session with {}: {e}",
                chromium.display()
            )),
            Err(_) => Err(format!(
                "no WebDriver session with {} after {SESSION_START:?}",
                chromium.display()
            )),
        }
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver.
    pub async fn close(self) {
        if let Err(e) = self.client.clone().close().await {
            eprintln!("closing the WebDriver session: {e}");
        }
        // Drop ends chromedriver and whatever is left of its group.
    }

    /// The page's URL, for messages ("?" when the browser does not say).
    pub async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("? ({e})"),
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            panic!("opening {url}: {e}");
        }
    }

    /// The element `css` selects on the current page.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Ok(element),
            Err(e) => Err(format!("no element {css:?} on {}: {e}", self.url().await)),
        }
    }

    async fn element(&self, css: &str) -> Element {
        match self.find(css).await {
            Ok(element) => element,
            Err(e) => panic!("{e}"),
        }
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        if let Err(e) = self.element(css).await.click().await {
            panic!("clicking {css:?} on {}: {e}", self.url().await);
        }
    }

    /// Replaces the value of the field `css` selects with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.element(css).await;
        if let Err(e) = field.clear().await {
            panic!("clearing {css:?} on {}: {e}", self.url().await);
        }
        if let Err(e) = field.send_keys(text).await {
            panic!("typing into {css:?} on {}: {e}", self.url().await);
        }
    }

    /// Chooses the option whose value is `value` in the `<select>` `css`
    /// selects.
    pub async fn select(&self, css: &str, value: &str) {
        if let Err(e) = self.element(css).await.select_by_value(value).await {
            panic!(
                "choosing the option {value:?} of {css:?} on {}: {e}",
                self.url().await
            );
        }
    }

    /// The rendered text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        match self.element(css).await.text().await {
            Ok(text) => text,
            Err(e) => panic!("reading the text of {css:?} on {}: {e}", self.url().await),
        }
    }

    /// Reads the text of the element `css` selects every 200 ms until it
    /// contains `needle`, and returns it; after `timeout`, an error with the
    /// last text seen (or why there was none).
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = match self.find(css).await {
                Ok(element) => match element.text().await {
                    Ok(text) if text.contains(needle) => return Ok(text),
                    Ok(text) => format!("its text was {text:?}"),
                    Err(e) => format!("its text could not be read: {e}"),
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "{css:?} on {} did not contain {needle:?} within {timeout:?}: {seen}",
                    self.url().await
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `js` as a function's body in the page; what it returns.
    pub async fn exec(&self, js: &str) -> Value {
        match self.client.execute(js, Vec::new()).await {
            Ok(value) => value,
            Err(e) => panic!("running {js:?} on {}: {e}", self.url().await),
        }
    }

    /// Resizes the window to `width` by `height` (narrow-screen views).
    pub async fn set_width(&self, width: u32, height: u32) {
        if let Err(e) = self.client.set_window_size(width, height).await {
            panic!("resizing the window to {width}x{height}: {e}");
        }
    }

    /// Saves a PNG of the window to `docs/screenshots/<name>.png` in the
    /// workspace.
    pub async fn screenshot(&self, name: &str) {
        let path = workspace_root()
            .join("docs/screenshots")
            .join(format!("{name}.png"));
        self.screenshot_to(&path).await;
    }

    /// Saves a PNG of the window to `path`, creating its directory.
    pub async fn screenshot_to(&self, path: &Path) {
        let png = match self.client.screenshot().await {
            Ok(png) => png,
            Err(e) => panic!("a screenshot of {}: {e}", self.url().await),
        };
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                panic!("creating {}: {e}", dir.display());
            }
        }
        if let Err(e) = std::fs::write(path, png) {
            panic!("writing {}: {e}", path.display());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        end(&mut self.child);
    }
}

/// Ends chromedriver and every process of its group (Chromium's, when the
/// session was not closed), and waits for chromedriver.
fn end(child: &mut Child) {
    let group = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}
