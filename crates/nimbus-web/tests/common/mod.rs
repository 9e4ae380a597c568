//! Shared by the browser tests: headless Chromium over WebDriver
//! (chromedriver + fantoccini), a rendezvous server, phones.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use nimbus_media::TestSourceConfig;
use nimbus_phone::driver::{self, DriverConfig, PhoneHandle, SinkSpec, SourceSpec};
use nimbus_phone::phone::{PhoneConfig, PhoneEvent};
use nimbus_server::{Server, ServerConfig};
use nimbus_web::{WebConfig, WebPhone};
use serde_json::{json, Value};

/// Longest wait of one step (generous: a loaded 2-core machine).
pub const T: Duration = Duration::from_secs(30);

/// One browser test at a time in this process (each runs Chromium).
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    BROWSERS.lock().await
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` after printing `SKIPPED:`.
pub fn chromium(test: &str) -> Option<(PathBuf, PathBuf)> {
    let browser = std::env::var_os("NIMBUS_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            find(&[
                // Debian's /usr/bin/chromium is a shell wrapper; the binary
                "/usr/lib/chromium/chromium",
                "/usr/bin/chromium",
                "/usr/bin/chromium-browser",
                "/usr/bin/google-chrome",
            ])
        });
    let driver = std::env::var_os("NIMBUS_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]));
    match (browser, driver) {
        (Some(b), Some(d)) => Some((b, d)),
        _ => {
            println!("SKIPPED: {test}: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
            None
        }
    }
}

/// A chromedriver process (killed when dropped).
pub struct Driver {
    child: tokio::process::Child,
    port: u16,
    browser: PathBuf,
}

impl Driver {
    pub async fn start(browser: PathBuf, chromedriver: PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver {
            child,
            port,
            browser,
        }
    }

    /// A new headless browser with its own profile.
    pub async fn browser(&self) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.browser,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--disable-sync",
                    "--use-fake-device-for-media-stream=fps=30",
                    "--use-fake-ui-for-media-stream",
                    "--autoplay-policy=no-user-gesture-required",
                    // a sandbox with only the loopback interface gathers no
                    // ICE candidates without it
                    "--allow-loopback-in-peer-connection",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let mut last = None;
        for _ in 0..3 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        _profile: profile,
                    }
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        panic!("no browser session: {last:?}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A browser (one WebDriver session).
pub struct Browser {
    pub client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}: {script}"))
    }

    /// `window.nimbusPhone.state()`.
    pub async fn state(&self) -> Value {
        self.js("return window.nimbusPhone ? window.nimbusPhone.state() : null;")
            .await
    }

    pub async fn click(&self, id: &str) {
        let e = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"));
        e.click()
            .await
            .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    }

    pub async fn type_into(&self, id: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"));
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn text(&self, id: &str) -> String {
        self.js(&format!(
            "return document.getElementById('{id}').textContent;"
        ))
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    pub async fn enabled(&self, id: &str) -> bool {
        self.js(&format!(
            "const e = document.getElementById('{id}'); return !!e && !e.disabled && !e.closest('[hidden]');"
        ))
        .await
        .as_bool()
        .unwrap_or(false)
    }

    /// Waits until `f(state)` holds (polling), or panics with `what`.
    pub async fn wait_state(&self, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
        let end = tokio::time::Instant::now() + T;
        loop {
            let s = self.state().await;
            if f(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}: state {s}\nlog: {}",
                self.text("log").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the element's text contains `needle`.
    pub async fn wait_text(&self, id: &str, needle: &str) -> String {
        let end = tokio::time::Instant::now() + T;
        loop {
            let t = self.text(id).await;
            if t.contains(needle) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {needle:?} in #{id}: {t}\nlog: {}",
                self.text("log").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_enabled(&self, id: &str) {
        let end = tokio::time::Instant::now() + T;
        while !self.enabled(id).await {
            assert!(
                tokio::time::Instant::now() < end,
                "#{id} never enabled; log: {}",
                self.text("log").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Logs in from the page.
    pub async fn login(&self, user: &str) {
        self.wait_state("the page", |s| !s.is_null()).await;
        self.type_into("user", user).await;
        self.click("login").await;
        self.wait_state("logged in", |s| s["loggedIn"] == true)
            .await;
        // logged in, the name is fixed until Log out
        let fixed = self
            .js("return document.getElementById('login').hidden \
                 && document.getElementById('user').readOnly \
                 && !document.getElementById('logout').hidden;")
            .await;
        assert_eq!(fixed, Value::Bool(true), "the login row after logging in");
    }

    /// Pictures shown in `#remote`.
    pub async fn remote_frames(&self) -> u64 {
        self.js("return window.nimbusPhone.remoteFrames();")
            .await
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until `#remote` shows pictures, then counts them over
    /// `secs` seconds; returns pictures per second.
    pub async fn remote_fps(&self, secs: u64) -> f64 {
        let end = tokio::time::Instant::now() + T;
        while self.remote_frames().await < 5 {
            assert!(
                tokio::time::Instant::now() < end,
                "no remote video; state {} log {}",
                self.state().await,
                self.text("log").await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // the first second is the encoder's start (its rate control
        // settles); then `secs` seconds are counted
        tokio::time::sleep(Duration::from_secs(1)).await;
        let a = self.remote_frames().await;
        let t0 = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let b = self.remote_frames().await;
        let fps = b.saturating_sub(a) as f64 / t0.elapsed().as_secs_f64();
        println!(
            "remote video: {fps:.1} pictures/s over {secs} s; playback {}",
            self.js("const q = document.getElementById('remote').getVideoPlaybackQuality(); \
                     const v = document.getElementById('remote'); \
                     return {total: q.totalVideoFrames, dropped: q.droppedVideoFrames, w: v.videoWidth, h: v.videoHeight};")
                .await
        );
        fps
    }

    /// The remote audio's level.
    pub async fn audio_level(&self) -> Value {
        self.js("return window.nimbusPhone.audioLevel();").await
    }

    /// Writes a screenshot.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Where screenshots go: the workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A rendezvous server on loopback (open policy: `?user=` names).
pub async fn server() -> Server {
    let c = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 1,
        dh_groups: vec![14, 2],
        ..ServerConfig::default()
    };
    Server::start(c).await.unwrap()
}

pub fn server_url(s: &Server) -> (String, Vec<std::net::SocketAddr>) {
    let a = s.local_addrs()[0];
    (format!("rtmfp://{a}/phone"), vec![a])
}

/// A web phone on loopback for `srv`.
pub async fn web_phone(srv: &Server, seed: u64, tweak: impl FnOnce(&mut WebConfig)) -> WebPhone {
    let (url, servers) = server_url(srv);
    let mut cfg = WebConfig::new(url, servers);
    cfg.phone_bind = "127.0.0.1:0".parse().unwrap();
    cfg.seed = Some(seed);
    tweak(&mut cfg);
    WebPhone::start(cfg, None).await.unwrap()
}

/// A command-line phone (the test source) for `srv`.
pub fn cli_phone(srv: &Server, user: &str, seed: u64) -> PhoneHandle {
    let (url, servers) = server_url(srv);
    let cfg = PhoneConfig::new(user, url, servers);
    let d = DriverConfig {
        source: SourceSpec::Test(TestSourceConfig::default()),
        sink: SinkSpec::None,
        seed: Some(seed),
        ..DriverConfig::default()
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    driver::spawn(cfg, sock, d).unwrap()
}

pub async fn logged_in(p: &mut PhoneHandle) {
    let e = p
        .wait_for(T, |e| {
            matches!(
                e,
                PhoneEvent::LoggedIn { .. } | PhoneEvent::LoginFailed { .. }
            )
        })
        .await;
    assert!(matches!(e, Some(PhoneEvent::LoggedIn { .. })), "{e:?}");
}
