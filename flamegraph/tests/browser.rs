//! The report in a real browser: headless Chromium opens the HTML (and the diff page) from disk,
//! and through the DevTools protocol the test checks that scripts ran without a console error or
//! exception, that the flamegraph and tables are there, that inferno's search and zoom and the
//! table sorting work, and saves full-page screenshots under target/ffiprof-flamegraph/.
//!
//! Needs Debian's chromium: run `scripts/setup-chromium` first (it installs it when missing).
//! FFIPROF_CHROMIUM overrides the browser path.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
];

fn chromium() -> PathBuf {
    let path = std::env::var_os("FFIPROF_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !path.exists() {
        panic!(
            "Chromium not found at {}: run scripts/setup-chromium (it installs Debian's chromium package), \
             or point FFIPROF_CHROMIUM at a Chromium binary",
            path.display()
        );
    }
    path
}

/// A headless Chromium with a fresh profile directory, killed on drop.
struct Browser {
    child: Child,
    _profile_dir: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    /// Console errors, exceptions and error log entries seen so far.
    errors: Vec<String>,
    /// Every URL the page asked for that is not the page itself or inline data.
    requests: Vec<String>,
    load_fired: bool,
}

impl Browser {
    fn launch() -> Browser {
        Browser::launch_with(&[])
    }

    fn launch_with(extra_flags: &[&str]) -> Browser {
        let exe = chromium();
        let profile_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args(FLAGS)
            .args(extra_flags)
            .arg(format!("--user-data-dir={}", profile_dir.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run scripts/setup-chromium)",
                    exe.display()
                )
            });
        // Chromium prints the browser endpoint on stderr; read it on a thread so a silent browser
        // times out instead of hanging the test.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split_whitespace().find(|w| w.starts_with("ws://")) {
                    let _ = tx.send(Ok(url.to_string()));
                }
                log.push(line);
            }
            let _ = tx.send(Err(log.join("\n")));
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(url)) => url,
            Ok(Err(log)) => {
                let _ = child.kill();
                panic!("Chromium exited without a DevTools endpoint:\n{log}")
            }
            Err(_) => {
                let _ = child.kill();
                panic!("Chromium printed no DevTools endpoint within 60 s")
            }
        };
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connect to the DevTools endpoint");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(250)))
                .unwrap();
        }
        Browser {
            child,
            _profile_dir: profile_dir,
            ws,
            next_id: 0,
            session: None,
            errors: Vec::new(),
            requests: Vec::new(),
            load_fired: false,
        }
    }

    fn note_event(&mut self, msg: &Value) {
        let params = &msg["params"];
        match msg["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled"
                if matches!(params["type"].as_str(), Some("error" | "assert")) =>
            {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.errors.push(format!(
                    "console.{}: {}",
                    params["type"].as_str().unwrap(),
                    args.join(" ")
                ));
            }
            "Runtime.exceptionThrown" => {
                let d = &params["exceptionDetails"];
                self.errors.push(format!(
                    "exception: {} {}",
                    d["text"], d["exception"]["description"]
                ));
            }
            "Log.entryAdded" if params["entry"]["level"] == "error" => {
                self.errors.push(format!(
                    "log: {} ({})",
                    params["entry"]["text"], params["entry"]["url"]
                ));
            }
            "Page.loadEventFired" => self.load_fired = true,
            // A dialog blocks the page's scripts (and every evaluate after it): fail with its text.
            "Page.javascriptDialogOpening" => panic!(
                "the page opened a {} dialog: {}",
                params["type"], params["message"]
            ),
            "Network.requestWillBeSent" => {
                let url = params["request"]["url"].as_str().unwrap_or_default();
                if !url.starts_with("file://")
                    && !url.starts_with("data:")
                    && !url.starts_with("about:")
                {
                    self.requests.push(url.to_string());
                }
            }
            _ => {}
        }
    }

    /// Reads one message if one arrives within the socket's read timeout.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => {
                Some(serde_json::from_str(t.as_str()).expect("DevTools sends JSON"))
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection failed: {e}"),
        }
    }

    /// Sends a command (to the page session once attached) and waits for its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            if !method.starts_with("Target.") {
                msg["sessionId"] = json!(s);
            }
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to DevTools");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(v) = self.read() {
                if v["id"].as_u64() == Some(id) {
                    if let Some(err) = v.get("error") {
                        panic!("{method} failed: {err}");
                    }
                    return v["result"].clone();
                }
                self.note_event(&v);
            }
        }
        panic!("no answer to {method} within 60 s");
    }

    /// Evaluates JavaScript in the page and returns its (JSON) value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("evaluating {expr:?} threw: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Opens a page in a new tab with console, exceptions and the log watched from the start.
    fn open(&mut self, path: &Path) {
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        for domain in [
            "Runtime.enable",
            "Log.enable",
            "Page.enable",
            "Network.enable",
        ] {
            self.call(domain, json!({}));
        }
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        self.load_fired = false;
        let url = format!("file://{}", path.display());
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for("the load event", |b| b.load_fired);
        self.wait_for("the report's ready marker", |b| {
            b.eval("document.documentElement.getAttribute('data-ffiprof-ready')") == json!("1")
        });
    }

    fn wait_for(&mut self, what: &str, mut done: impl FnMut(&mut Browser) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            if let Some(v) = self.read() {
                self.note_event(&v);
            }
        }
        panic!(
            "timed out waiting for {what}; errors so far: {:?}",
            self.errors
        );
    }

    /// Lets late events (errors from timers) arrive before they are checked.
    fn drain(&mut self, time: Duration) {
        let end = Instant::now() + time;
        while Instant::now() < end {
            if let Some(v) = self.read() {
                self.note_event(&v);
            }
        }
    }

    /// Saves a PNG of one element, at twice the pixels so text can be read.
    fn screenshot_element(&mut self, selector: &str, out: &Path) {
        let r = self.eval(&format!(
            "(function () {{ var r = document.querySelector('{selector}').getBoundingClientRect(); \
             return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; }})()"
        ));
        let v: Vec<f64> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let clip = json!({ "x": v[0], "y": v[1], "width": v[2], "height": v[3], "scale": 1 });
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(out, png).unwrap();
    }

    /// Saves a full-page PNG screenshot (height capped so giant pages stay viewable).
    fn screenshot(&mut self, out: &Path) {
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .as_f64()
            .unwrap_or(900.0)
            .min(7000.0);
        self.call("Emulation.setDeviceMetricsOverride", json!({ "width": 1400, "height": height as u64, "deviceScaleFactor": 1, "mobile": false }));
        self.drain(Duration::from_millis(300));
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(out, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.send(Message::text(
            json!({ "id": 999_999, "method": "Browser.close" }).to_string(),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn report_works_in_headless_chromium() {
    let p = common::demo_profile();
    let report = ffiprof_analyzer::summarize(&p, &Default::default());
    let dir = common::artifact_dir();
    let page_path = dir.join("report.html");
    std::fs::write(
        &page_path,
        ffiprof_flamegraph::html::render(&p, &report, &Default::default()),
    )
    .unwrap();

    let mut b = Browser::launch();
    b.open(&page_path.canonicalize().unwrap());

    // The flamegraph is drawn and inferno's script initialised it.
    let frames = b
        .eval("document.querySelectorAll('#frames > g').length")
        .as_u64()
        .unwrap();
    assert!(frames >= 10, "flamegraph frames: {frames}");
    assert_eq!(
        b.eval("typeof known_font_width"),
        json!("number"),
        "inferno's init() ran"
    );
    assert_eq!(
        b.eval(
            "document.querySelector('.flame > svg') === document.getElementsByTagName('svg')[0]"
        ),
        json!(true)
    );
    let width = b
        .eval("document.querySelector('.flame > svg').getBoundingClientRect().width")
        .as_f64()
        .unwrap();
    assert!(
        width > 1000.0,
        "the fluid flamegraph fills the page: {width}px"
    );
    let rows = b.eval("document.querySelectorAll('#functions-table tbody tr').length");
    assert_eq!(rows, json!(p.functions.len()));
    assert!(
        b.eval("document.querySelectorAll('#latency svg rect.b').length")
            .as_u64()
            .unwrap()
            > 0
    );

    // inferno's search, through the page's search box.
    let matched = b.eval(
        "document.getElementById('fg-search').value = 'marshal'; document.getElementById('fg-go').click(); \
         document.getElementById('matched').textContent",
    );
    let matched = matched.as_str().unwrap_or_default().to_string();
    assert!(
        matched.starts_with("Matched: "),
        "search shows the matched share: {matched:?}"
    );
    let highlighted = b
        .eval("document.querySelectorAll('#frames rect[fill=\"rgb(230,0,230)\"]').length")
        .as_u64()
        .unwrap();
    assert!(
        highlighted >= 3,
        "matching frames are highlighted: {highlighted}"
    );
    b.eval("document.getElementById('fg-reset').click(); true");

    // inferno's zoom: clicking a frame zooms to it and shows "Reset Zoom".
    let zoomed = b.eval(
        "(function () { var g = Array.prototype.find.call(document.querySelectorAll('#frames > g'), function (g) { \
           return g.querySelector('title').textContent.indexOf('libm.so.6!cos') === 0; }); \
         g.dispatchEvent(new MouseEvent('click', { bubbles: true })); \
         return [document.getElementById('unzoom').classList.contains('hide'), document.querySelectorAll('#frames > g.hide').length]; })()",
    );
    assert_eq!(
        zoomed[0],
        json!(false),
        "Reset Zoom is visible after zooming"
    );
    assert!(
        zoomed[1].as_u64().unwrap() > 0,
        "frames outside the zoomed one are hidden"
    );
    b.eval("unzoom(); true");

    // Sorting: by calls (descending on first click), then by function name.
    let by_calls = b.eval(
        "(function () { var th = Array.prototype.find.call(document.querySelectorAll('#functions-table th'), function (t) { return t.textContent === 'calls'; }); \
         th.click(); return document.querySelector('#functions-table tbody tr td').textContent; })()",
    );
    assert_eq!(by_calls, json!("cos"));
    let by_name = b.eval(
        "(function () { document.querySelector('#functions-table th').click(); \
         return Array.prototype.map.call(document.querySelectorAll('#functions-table tbody tr'), function (r) { return r.cells[0].textContent; }); })()",
    );
    assert_eq!(by_name, json!(["cos", "fx_init", "fx_sum_doubles"]));

    b.drain(Duration::from_millis(500));
    assert!(
        b.requests.is_empty(),
        "the report must not fetch anything: {:#?}",
        b.requests
    );
    assert!(
        b.errors.is_empty(),
        "the report logged errors in the browser: {:#?}",
        b.errors
    );
    // Back to the costliest-first order for the pictures; one close-up of the flamegraph with a search on.
    b.eval("document.querySelector('#functions-table th:nth-child(6)').click(); window.scrollTo(0, 0); true");
    b.eval("document.getElementById('fg-search').value = 'native'; document.getElementById('fg-go').click(); true");
    b.screenshot_element(".flame", &dir.join("report-flamegraph.png"));
    b.eval("document.getElementById('fg-reset').click(); true");
    b.screenshot(&dir.join("report.png"));
    assert!(
        b.errors.is_empty(),
        "errors while taking the screenshot: {:#?}",
        b.errors
    );
}

#[test]
fn diff_page_works_in_headless_chromium() {
    let before = common::demo_profile();
    let mut after = before.clone();
    after.functions[0].calls = 10;
    after.functions[0].time.marshal_in = 4_000;
    after.functions[0].sites[0].time.marshal_in = 4_000;
    for s in &mut after.functions[0].sites[0].stacks {
        s.time.marshal_in /= 50;
    }
    let dir = common::artifact_dir();
    let page_path = dir.join("diff.html");
    let opts = ffiprof_flamegraph::diff::DiffHtmlOptions {
        before_name: "before.json".into(),
        after_name: "after.json".into(),
        ..Default::default()
    };
    std::fs::write(
        &page_path,
        ffiprof_flamegraph::diff::render_html(&before, &after, &opts),
    )
    .unwrap();

    let mut b = Browser::launch();
    b.open(&page_path.canonicalize().unwrap());
    assert!(
        b.eval("document.querySelectorAll('#frames > g').length")
            .as_u64()
            .unwrap()
            >= 10
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#diff-table tbody tr').length"),
        json!(3)
    );
    b.drain(Duration::from_millis(300));
    assert!(
        b.errors.is_empty(),
        "the diff page logged errors in the browser: {:#?}",
        b.errors
    );
    b.screenshot(&dir.join("diff.png"));
}

#[test]
fn large_report_loads_in_headless_chromium() {
    let p = common::large_profile(20_000);
    let report = ffiprof_analyzer::summarize(&p, &Default::default());
    let dir = common::artifact_dir();
    let page_path = dir.join("large-report.html");
    std::fs::write(
        &page_path,
        ffiprof_flamegraph::html::render(&p, &report, &Default::default()),
    )
    .unwrap();

    let mut b = Browser::launch();
    let started = Instant::now();
    b.open(&page_path.canonicalize().unwrap());
    let ready_after = started.elapsed();
    let frames = b
        .eval("document.querySelectorAll('#frames > g').length")
        .as_u64()
        .unwrap();
    assert!(frames > 100, "flamegraph frames: {frames}");
    let matched = b.eval(
        "document.getElementById('fg-search').value = '^handler_1'; document.getElementById('fg-go').click(); \
         document.getElementById('matched').textContent",
    );
    assert!(
        matched
            .as_str()
            .unwrap_or_default()
            .starts_with("Matched: "),
        "{matched}"
    );
    b.drain(Duration::from_millis(300));
    assert!(
        b.errors.is_empty(),
        "the large report logged errors: {:#?}",
        b.errors
    );
    assert!(
        b.requests.is_empty(),
        "the report must not fetch anything: {:#?}",
        b.requests
    );
    assert!(
        ready_after < Duration::from_secs(30),
        "the page took {ready_after:?} to become ready"
    );
    b.screenshot(&dir.join("large-report.png"));
}

/// Opens our speedscope export in speedscope itself: the app of the npm package, which
/// `scripts/setup-speedscope` unpacks (scripts/test runs it and sets `FFIPROF_SPEEDSCOPE_DIR`).
#[test]
fn speedscope_opens_the_export() {
    let app = std::env::var_os("FFIPROF_SPEEDSCOPE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/speedscope/1.25.0/package/dist/release")
        });
    assert!(
        app.join("index.html").is_file(),
        "speedscope's app is not at {}: run scripts/setup-speedscope (scripts/test does), or set \
         FFIPROF_SPEEDSCOPE_DIR to the npm package's dist/release",
        app.display()
    );
    let dir = common::artifact_dir();
    let file = dir.join("demo.speedscope.json");
    let doc =
        ffiprof_flamegraph::speedscope::export_string(&common::demo_profile(), &Default::default());
    std::fs::write(&file, doc).unwrap();
    let mut b = Browser::launch();
    let page = app.join("index.html").canonicalize().unwrap();
    let target = b.call("Target.createTarget", json!({ "url": "about:blank" }));
    let attached = b.call(
        "Target.attachToTarget",
        json!({ "targetId": target["targetId"], "flatten": true }),
    );
    b.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    for domain in ["Runtime.enable", "Log.enable", "Page.enable", "DOM.enable"] {
        b.call(domain, json!({}));
    }
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1400, "height": 700, "deviceScaleFactor": 1, "mobile": false }),
    );
    // speedscope won't fetch a profile URL from a file: page, so hand it the file the way its
    // "Browse" button would.
    b.load_fired = false;
    b.call(
        "Page.navigate",
        json!({ "url": format!("file://{}", page.display()) }),
    );
    b.wait_for("speedscope to load", |b| b.load_fired);
    b.wait_for("speedscope's file input", |b| {
        b.eval("!!document.querySelector('input[type=file]')") == json!(true)
    });
    let root = b.call("DOM.getDocument", json!({}));
    let input = b.call(
        "DOM.querySelector",
        json!({ "nodeId": root["root"]["nodeId"], "selector": "input[type=file]" }),
    );
    b.call(
        "DOM.setFileInputFiles",
        json!({ "nodeId": input["nodeId"], "files": [file.canonicalize().unwrap().display().to_string()] }),
    );
    b.wait_for("speedscope to show the profile", |b| {
        b.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .contains("boundary time")
    });
    b.drain(Duration::from_millis(1500));
    b.screenshot(&dir.join("speedscope.png"));
    assert!(
        b.errors.is_empty(),
        "speedscope reported errors: {:#?}",
        b.errors
    );
}
