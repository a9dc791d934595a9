//! A small W3C WebDriver client for the dashboard's browser tests: it starts Debian's
//! `chromedriver`, opens a headless Chromium session, and drives it over HTTP on loopback.
//! Screenshots go under `target/dashboard/`; the axe-core accessibility engine is installed
//! from the npm registry into `target/axe-core/` the first time it is needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The axe-core release the accessibility check runs.
const AXE_VERSION: &str = "4.10.3";

/// Where the tests write what people may want to look at.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .to_path_buf()
}

/// Whether this machine can run the browser tests; with `CIVIC_SKIP_BROWSER=1` and no
/// browser, a test returns early saying so; without either it fails, saying what to install.
pub fn available() -> bool {
    let found = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .all(|p| Path::new(p).exists());
    if !found {
        if std::env::var("CIVIC_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("CIVIC_SKIP_BROWSER=1: the dashboard was not tried in a browser");
            return false;
        }
        panic!(
            "the dashboard's browser tests need Debian's chromium and chromium-driver \
             (`apt-get install -y chromium chromium-driver`), or CIVIC_SKIP_BROWSER=1 to skip them"
        );
    }
    true
}

/// A browser session.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session; screenshots go to
    /// `target/dashboard/<name>/`.
    pub async fn start(name: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(res) = http.get(format!("{base}/status")).send().await
                && res.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        } } });
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("a WebDriver session")
            .json()
            .await
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_string();
        let shots = target_dir().join("dashboard").join(name);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            http,
            session: format!("{base}/session/{session}"),
            driver,
            shots,
            _profile: profile,
        }
    }

    /// One WebDriver command: its `value`, or its error (`{"error": …, "message": …}`).
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if method != reqwest::Method::GET {
            req = req.json(&body.unwrap_or(json!({})));
        }
        let res: Value = req
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match res["value"].get("error") {
            Some(e) => Err(format!(
                "WebDriver {method} {path}: {e}: {}",
                res["value"]["message"]
            )),
            None => Ok(res["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.get("/url").await.as_str().unwrap().to_string()
    }

    /// The element `css` selects, waiting up to 5 s for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find_now(css).await {
                return e;
            }
            if started.elapsed() > Duration::from_secs(5) {
                let text = self.text_of_page().await;
                panic!("no element {css} on {}: {text}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An element's rendered text.
    pub async fn text(&self, e: &Element) -> String {
        self.get(&format!("/element/{}/text", e.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// An element's text, or `None` if it has gone (the page changed).
    async fn try_text(&self, e: &Element) -> Option<String> {
        let v = self
            .command(
                reqwest::Method::GET,
                &format!("/element/{}/text", e.0),
                None,
            )
            .await
            .ok()?;
        v.as_str().map(str::to_string)
    }

    /// The rendered text of the whole page.
    pub async fn text_of_page(&self) -> String {
        let body = self.find_now("body").await;
        match body {
            Some(b) => self.text(&b).await,
            None => String::new(),
        }
    }

    async fn find_now(&self, css: &str) -> Option<Element> {
        let v = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .ok()?;
        v[ELEMENT].as_str().map(|id| Element(id.to_string()))
    }

    /// An element's property (`value` of a form field, `checked`, …).
    pub async fn property(&self, e: &Element, name: &str) -> Value {
        self.get(&format!("/element/{}/property/{name}", e.0)).await
    }

    /// Clicks an element.
    pub async fn click(&self, e: &Element) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            None,
        )
        .await;
    }

    /// Clears a form field and types `text` into it (for a file input: the file's path).
    pub async fn fill(&self, e: &Element, text: &str) {
        if self.property(e, "type").await != "file" {
            self.call(
                reqwest::Method::POST,
                &format!("/element/{}/clear", e.0),
                None,
            )
            .await;
        }
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Presses Tab on the page, as a keyboard user moves the focus.
    pub async fn press_tab(&self) {
        self.press("\u{E004}").await;
    }

    /// Presses Enter on the focused element.
    pub async fn press_enter(&self) {
        self.press("\u{E007}").await;
    }

    async fn press(&self, key: &str) {
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
            { "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }
        ] }] });
        self.call(reqwest::Method::POST, "/actions", Some(actions))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The browser's cookies for the current page.
    pub async fn cookies(&self) -> Vec<Value> {
        self.get("/cookie").await.as_array().unwrap().clone()
    }

    /// Forgets every cookie (a new visitor).
    pub async fn clear_cookies(&self) {
        self.http
            .delete(format!("{}/cookie", self.session))
            .send()
            .await
            .unwrap();
    }

    /// Saves a screenshot of the page as `<step>.png`, for people to look at.
    pub async fn screenshot(&self, step: &str) {
        let png = self.get("/screenshot").await;
        let bytes = base64_decode(png.as_str().unwrap());
        std::fs::write(self.shots.join(format!("{step}.png")), bytes).unwrap();
    }

    /// Waits until `css` selects an element whose text contains `needle`; returns the text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            // The page may change under a found element (a redirect): look again.
            let found = match self.find_now(css).await {
                Some(e) => self.try_text(&e).await,
                None => None,
            };
            if let Some(text) = found {
                if text.contains(needle) {
                    return text;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    panic!(
                        "{css} on {} never said {needle:?}; it says: {text}",
                        self.url().await
                    );
                }
            } else if started.elapsed() > Duration::from_secs(10) {
                let source = self.get("/source").await;
                panic!("no {css} on {}: {source}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs axe-core on the current page; returns its violations of serious or critical
    /// impact as `id: help (selectors)` lines.
    pub async fn serious_accessibility_violations(&self) -> Vec<String> {
        self.execute(&axe_source(), json!([])).await;
        let script = r#"
            const done = arguments[arguments.length - 1];
            axe.run(document, { resultTypes: ["violations"] })
               .then(r => done(JSON.stringify(r.violations)))
               .catch(e => done("ERROR " + e));"#;
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/async",
                Some(json!({ "script": script, "args": [] })),
            )
            .await;
        let text = v.as_str().unwrap();
        assert!(!text.starts_with("ERROR"), "axe-core failed: {text}");
        let violations: Vec<Value> = serde_json::from_str(text).unwrap();
        violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| {
                let nodes: Vec<String> = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(3)
                    .map(|n| n["target"].to_string())
                    .collect();
                format!("{}: {} ({})", v["id"], v["help"], nodes.join(", "))
            })
            .collect()
    }

    /// Ends the session and chromedriver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// axe-core's script, installed with npm under `target/axe-core` the first time (or read
/// from `CIVIC_AXE_JS` if set).
fn axe_source() -> String {
    if let Ok(path) = std::env::var("CIVIC_AXE_JS") {
        return std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let dir = target_dir().join("axe-core");
    let file = dir.join("node_modules/axe-core/axe.min.js");
    if !file.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(format!("axe-core@{AXE_VERSION}"))
            .status()
            .expect(
                "the accessibility check installs axe-core with npm: install Node.js and npm, \
                 or set CIVIC_AXE_JS to a copy of axe.min.js",
            );
        assert!(
            status.success(),
            "npm install axe-core@{AXE_VERSION} failed"
        );
    }
    std::fs::read_to_string(&file).unwrap()
}

/// Standard base64 (the screenshot), without a dependency.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
