//! The web page (`GET /`) in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, fantoccini) against a real `muster-master --http` on real etcd, with real
//! `muster-worker` processes.
//!
//! Why a browser and not an HTML parser: what can break is the script (EventSource, the
//! resume after a snapshot, the filter) and the Content-Security-Policy, which only a
//! browser enforces. Every assertion waits for a DOM condition with a deadline, checked
//! by running a JavaScript expression in the page every 50 ms.
//!
//! It needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`; `cargo xtask test` installs them, and passes their paths as
//! `MUSTER_CHROMIUM` and `MUSTER_CHROMEDRIVER`). Without them it fails saying so; it never
//! skips. Screenshots go to `$CARGO_TARGET_TMPDIR/page/`; with `MUSTER_UPDATE_SCREENSHOT=1`
//! the laptop-width one is also copied to `docs/page.png`, the README's picture.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use muster_testkit::etcd::Etcd;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::master::serving;
use crate::support::{args, free_port, Proc, DEADLINE, TTL};

/// What to tell someone whose machine has no browser for this test.
const HOW_TO_GET_THEM: &str = "run `cargo xtask test` (it installs Debian's chromium and \
     chromium-driver when run as root), or `apt-get install chromium chromium-driver`, or \
     set MUSTER_CHROMIUM and MUSTER_CHROMEDRIVER to a Chromium and its matching chromedriver";

/// `var`'s path if set, else `program` on `PATH`; panics with how to get it.
fn find(var: &str, program: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var}={} is not a file; the web page test needs it: {HOW_TO_GET_THEM}",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "the web page test drives a real browser, but there is no `{program}` on PATH \
                 (nor {var}); {HOW_TO_GET_THEM}"
            )
        })
}

/// chromedriver as a child process on a loopback port, killed (with the browsers it
/// started, its process group) when dropped.
struct Chromedriver {
    child: std::process::Child,
    url: String,
}

impl Chromedriver {
    /// Starts chromedriver and waits (with [`DEADLINE`]) until it says it is ready.
    async fn start(program: &Path, log: &Path) -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let child = std::process::Command::new(program)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop takes the browser down too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HOW_TO_GET_THEM}", program.display()));
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        crate::support::deadline(
            &format!("chromedriver never became ready at {status}"),
            || format!("its log: {}", log.display()),
            async {
                loop {
                    if let Ok(response) = reqwest::get(&status).await {
                        let body = response.text().await.unwrap_or_default();
                        let ready = serde_json::from_str::<Value>(&body)
                            .map(|v| v["value"]["ready"] == json!(true))
                            .unwrap_or(false);
                        if ready {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The browser session on the master's page.
struct Page {
    client: Client,
}

impl Page {
    /// A headless Chromium session through `driver`.
    async fn open(driver: &Chromedriver, chromium: &Path) -> Page {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // Root in a container: no sandbox (the browser only ever loads the test's own
                // master on loopback), and /dev/shm is often too small.
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1200,860",
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver at {} cannot start Chromium: {e}; {HOW_TO_GET_THEM}",
                    driver.url
                )
            });
        Page { client }
    }

    /// The value of the JavaScript expression `expr` in the page.
    async fn eval(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("running {expr:?} in the page: {e}"))
    }

    /// Waits (with [`DEADLINE`]) until `expr` is true in the page. Never reloads it.
    async fn until(&self, what: &str, expr: &str) {
        let poll = async {
            while self.eval(expr).await != json!(true) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(DEADLINE, poll).await.is_err() {
            let state = self
                .eval(
                    "'health: ' + document.getElementById('health').innerText + \
                     '\\nstream: ' + document.getElementById('stream').dataset.state + \
                     '\\nrows: ' + document.getElementById('rows').outerHTML",
                )
                .await;
            panic!(
                "the page never showed {what} within {DEADLINE:?} ({expr}); it shows\n{}",
                state.as_str().unwrap_or_default()
            );
        }
    }

    /// Waits until an element matching the CSS selector `css` exists.
    async fn until_css(&self, what: &str, css: &str) {
        let expr = format!("document.querySelector({}) !== null", json!(css));
        self.until(what, &expr).await;
    }

    /// Whether the element matching `css` is shown (WebDriver's own rendering check).
    async fn displayed(&self, css: &str) -> bool {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
        element.is_displayed().await.expect("is_displayed")
    }

    /// A PNG of the window, saved as `path`.
    async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

fn row(name: &str, state: &str) -> String {
    format!(r#"tr[data-name="{name}"][data-state="{state}"]"#)
}

#[tokio::test]
async fn the_page_follows_the_group_live_in_a_real_browser() {
    let chromium = find("MUSTER_CHROMIUM", "chromium");
    let chromedriver = find("MUSTER_CHROMEDRIVER", "chromedriver");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page");
    std::fs::create_dir_all(&out).expect("the test's output folder");

    // An etcd of its own: the test stops it.
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let prefix = "/programs/page/";
    let group = args(&["--endpoints", &etcd.endpoint(), "--prefix", prefix]);
    let worker = |name: &str, port: u16, cpus: &str, labels: &[&str]| {
        let mut flags = group.clone();
        flags.extend(args(&["--name", name, "--ttl", TTL, "--cpus", cpus]));
        flags.extend(args(&["--addr", &format!("127.0.0.1:{port}")]));
        for label in labels {
            flags.extend(args(&["--label", label]));
        }
        Proc::worker(&flags)
    };
    // One member before the master starts (the page's snapshot), the others after the page
    // is open (its event stream).
    let mut api1 = worker("api-1", 9101, "8", &["zone=a", "tier=web"]);
    let mut master_flags = group.clone();
    master_flags.extend(args(&[
        "--http",
        "127.0.0.1:0",
        "--json",
        "--reap-after",
        "3s",
    ]));
    let (_master, url) = serving(Proc::master(&master_flags)).await;

    let driver = Chromedriver::start(&chromedriver, &out.join("chromedriver.log")).await;
    let page = Page::open(&driver, &chromium).await;
    page.client
        .goto(&format!("{url}/"))
        .await
        .expect("open the page");
    // Set once: a reload would lose it, so its survival shows the page never reloaded.
    page.eval("window.loadedOnce = true").await;
    page.until_css("api-1 alive (the snapshot)", &row("api-1", "alive"))
        .await;
    page.until_css("the event stream open", r#"#stream[data-state="live"]"#)
        .await;
    page.until_css("a healthy master", r#"#health[data-healthy="true"]"#)
        .await;
    assert_eq!(
        page.eval("document.getElementById('prefix').textContent")
            .await,
        json!(prefix)
    );

    // Joins arrive on the stream.
    let _api2 = worker("api-2", 9102, "4", &["zone=b", "tier=web"]);
    let _batch1 = worker("batch-1", 9103, "16", &["zone=a", "queue=images"]);
    let _batch2 = worker("batch-2", 9104, "16", &["zone=b", "queue=images"]);
    for name in ["api-2", "batch-1", "batch-2"] {
        page.until_css(&format!("{name} alive"), &row(name, "alive"))
            .await;
        page.until_css(
            &format!("{name} joined in the feed"),
            &format!(r#"#feed li[data-kind="joined"][data-name="{name}"]"#),
        )
        .await;
    }
    page.until(
        "4 alive in the counts",
        "document.getElementById('count-alive').textContent === '4'",
    )
    .await;
    let cells = page
        .eval(r#"[...document.querySelectorAll('tr[data-name="batch-1"] td')].map(td => td.textContent)"#)
        .await;
    let cells: Vec<String> = serde_json::from_value(cells).expect("cell texts");
    assert_eq!(cells[0], "batch-1");
    assert!(cells[1].contains("alive"), "{cells:?}");
    assert_eq!(cells[2], "127.0.0.1:9103");
    assert_eq!(cells[3], "16");
    assert!(
        cells[4].contains("queue=images") && cells[4].contains("zone=a"),
        "{cells:?}"
    );
    assert_eq!(cells[5].len(), 16, "the incarnation: {cells:?}");
    assert!(cells[6].starts_with("rev "), "{cells:?}");

    // The label filter hides what does not match, and only that.
    let filter = page
        .client
        .find(Locator::Id("filter"))
        .await
        .expect("#filter");
    filter.send_keys("zone=a").await.expect("type the filter");
    page.until_css("api-2 hidden by zone=a", r#"tr[data-name="api-2"][hidden]"#)
        .await;
    page.until_css(
        "batch-2 hidden by zone=a",
        r#"tr[data-name="batch-2"][hidden]"#,
    )
    .await;
    assert!(!page.displayed(r#"tr[data-name="api-2"]"#).await);
    assert!(page.displayed(r#"tr[data-name="api-1"]"#).await);
    assert!(page.displayed(r#"tr[data-name="batch-1"]"#).await);
    assert_eq!(
        page.eval("document.getElementById('count-alive').textContent")
            .await,
        json!("2")
    );
    // Two rules: both must match.
    filter
        .send_keys(" tier=web")
        .await
        .expect("type the filter");
    page.until_css(
        "batch-1 hidden by zone=a tier=web",
        r#"tr[data-name="batch-1"][hidden]"#,
    )
    .await;
    assert!(page.displayed(r#"tr[data-name="api-1"]"#).await);
    // Cleared key by key, as a person would: every row again.
    let backspaces = "\u{e003}".repeat(32);
    filter
        .send_keys(&backspaces)
        .await
        .expect("clear the filter");
    page.until(
        "no row hidden",
        "document.querySelector('#rows tr[hidden]') === null",
    )
    .await;

    // A crash: suspect once the lease expires, failed once reaped, without a reload.
    api1.signal(Signal::SIGKILL);
    api1.exit().await;
    page.until_css("api-1 suspect", &row("api-1", "suspect"))
        .await;
    page.until_css("api-1 failed", &row("api-1", "failed"))
        .await;
    page.until_css(
        "api-1's suspect in the feed",
        r#"#feed li[data-kind="suspect"][data-name="api-1"]"#,
    )
    .await;
    assert_eq!(page.eval("window.loadedOnce === true").await, json!(true));
    page.until(
        "3 alive and 1 gone in the counts",
        "document.getElementById('count-alive').textContent === '3' && \
         document.getElementById('count-gone').textContent === '1'",
    )
    .await;
    let laptop = out.join("page.png");
    page.screenshot(&laptop).await;

    // Phone width: one card per member, no table header.
    page.client
        .set_window_size(400, 860)
        .await
        .expect("a phone-sized window");
    page.until(
        "the phone layout",
        "getComputedStyle(document.querySelector('#members thead')).display === 'none'",
    )
    .await;
    page.screenshot(&out.join("page-phone.png")).await;
    page.client
        .set_window_size(1200, 860)
        .await
        .expect("a laptop-sized window");

    // etcd gone: the banner says so.
    etcd.stop().unwrap_or_else(|err| panic!("stop etcd: {err}"));
    page.until_css("the unhealthy banner", r#"#health[data-healthy="false"]"#)
        .await;
    page.until(
        "the banner saying the watch is down",
        "document.getElementById('health-summary').textContent.includes('not watching etcd')",
    )
    .await;
    assert!(page.displayed("#health").await);
    assert_eq!(page.eval("window.loadedOnce === true").await, json!(true));
    page.screenshot(&out.join("page-unhealthy.png")).await;

    if std::env::var_os("MUSTER_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/page.png");
        std::fs::copy(&laptop, &docs)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", laptop.display(), docs.display()));
    }
    page.client.close().await.expect("end the browser session");
}
