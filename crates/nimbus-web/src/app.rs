//! The web phone: a page in the browser, a bridge, a phone, and the task
//! that joins them.
//!
//! ```text
//!  page (browser) ──WebSocket (JSON)──▶ server ──PageInput──▶ ┐
//!  page ◀══WebRTC (H.264, G.711)══▶ Bridge on its Host        │ the app task
//!                                     │ BridgeEvent / Command ─┤ (this module)
//!  peer ◀══RTMFP══▶ PhoneCore on its Host ◀── driver ─────────┘
//! ```
//!
//! The app task converts, never transcodes:
//!
//! * **page → peer**: an access unit from the bridge (Annex B, 90 kHz) →
//!   [`H264ToFlv`] → AVC sequence header (when the parameter sets change)
//!   and AVC NALU tags; a G.711 frame → [`g711_tag`] (FLV SoundFormat 8 or
//!   7). Timestamps come from the RTP clocks ([`RtpClock`]), anchored on
//!   the call's media clock (milliseconds since the call's media started).
//!   Tags go to the phone through its bounded [`MediaSender`].
//! * **peer → page**: AVC tags → [`FlvToH264`] (SPS/PPS put back in front
//!   of every IDR); audio → [`FlvToG711`] (G.711 passes through, re-companded
//!   if the page chose the other law; linear PCM is resampled to 8 kHz;
//!   other codecs are reported once and not played). RTP times are the FLV
//!   timestamps on the 90 kHz / 8 kHz clocks.
//! * **key frames** cross within one round trip: the page's PLI/FIR →
//!   `nimbusKeyframe` to the peer, whose source (a page's encoder through
//!   its bridge, or the test source) sends an IDR; a picture we cannot use
//!   yet ([`FlvToH264`] waiting, or [`H264ToFlv`] without parameter sets)
//!   asks the sender likewise.
//! * **no page**: while no page is connected in a call, the test source
//!   (if configured) stands in, on the same media clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use nimbus_media::g711::Law;
use nimbus_media::rtc::{g711_tag, FlvToG711, FlvToH264, H264ToFlv, RtpClock, Unconverted};
use nimbus_media::{MediaKind, MediaTag, TestSource, TestSourceConfig};
use nimbus_phone::call::Event as CallEvent;
use nimbus_phone::driver::{
    self, Command, DriverConfig, MediaSender, PhoneHandle, SinkSpec, SourceSpec, SourceThread,
};
use nimbus_phone::phone::{MediaPath, PhoneConfig, PhoneEvent, PhoneStatus};
use rtmfp_tokio::{Host, HostConfig, HostHandle};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::bridge::{
    Bridge, BridgeCommand, BridgeConfig, BridgeEvent, BridgeStats, ConnId, FrameOut,
};
use crate::protocol::{CallView, PageMsg, PhoneMsg, StateView, StatusView};
use crate::server::{self, PageInput, Security};

/// Chat lines and log lines kept for a page that (re)connects.
const HISTORY: usize = 100;
/// The app asks the peer for a key frame at most once per this.
const KEYFRAME_ASK: Duration = Duration::from_millis(200);
/// Events for observers (the terminal, tests) waiting; slow ones miss some.
const OBSERVERS: usize = 256;

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Settings of a web phone.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// `rtmfp://HOST[:PORT]/APP` of the rendezvous server.
    pub server: String,
    /// Its addresses.
    pub servers: Vec<SocketAddr>,
    /// Where the page is served (port 0: any free port).
    pub web: SocketAddr,
    /// The `--web` address as the user wrote it (the server also answers
    /// to that Host).
    pub web_name: Option<String>,
    /// The phone's UDP socket address.
    pub phone_bind: SocketAddr,
    /// The reg.cgi registry.
    pub registry: Option<String>,
    /// The password of a login from the command line.
    pub password: Option<String>,
    /// What stands in while no page is connected in a call (`None`: nothing).
    pub fallback: Option<TestSourceConfig>,
    /// Accept every incoming call.
    pub answer: bool,
    /// Wait this long for a direct path before the server's relay.
    pub direct_timeout: Duration,
    /// Use the server's relay when no direct path opens.
    pub relay_fallback: bool,
    /// Give up on an unanswered call after this.
    pub ring_timeout: Duration,
    /// Identity seed (tests); `None` draws one from the OS.
    pub seed: Option<u64>,
}

impl WebConfig {
    /// Defaults for a phone of the server at `server` / `servers`: the page
    /// on 127.0.0.1 (any port), the test source standing in.
    pub fn new(server: impl Into<String>, servers: Vec<SocketAddr>) -> Self {
        let v6 = servers.first().is_some_and(SocketAddr::is_ipv6);
        WebConfig {
            server: server.into(),
            servers,
            web: SocketAddr::from(([127, 0, 0, 1], 0)),
            web_name: None,
            phone_bind: if v6 {
                SocketAddr::from(([0u16; 8], 0))
            } else {
                SocketAddr::from(([0, 0, 0, 0], 0))
            },
            registry: None,
            password: None,
            fallback: Some(fallback_source()),
            answer: false,
            direct_timeout: Duration::from_secs(4),
            relay_fallback: true,
            ring_timeout: Duration::from_secs(30),
            seed: None,
        }
    }
}

/// The test source that stands in for a missing page: the H.264 test
/// pattern with the time of day, and the tone.
pub fn fallback_source() -> TestSourceConfig {
    TestSourceConfig {
        clock: nimbus_media::source::ClockDisplay::UtcTimeOfDay,
        ..TestSourceConfig::default()
    }
}

/// What a program (the command line, the demo, a test) asks of a web
/// phone, as the page would.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebCommand {
    /// Log in.
    Login {
        /// The name.
        user: String,
        /// The password.
        password: Option<String>,
    },
    /// Call a user.
    Call(String),
    /// Accept the ringing call.
    Accept,
    /// Reject the ringing call.
    Reject,
    /// Hang up.
    Hangup,
    /// A chat line.
    Say(String),
}

/// Counters of the conversions.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MediaStats {
    /// Page video frames sent to the peer (as FLV tags).
    pub up_video: u64,
    /// Page audio frames sent to the peer.
    pub up_audio: u64,
    /// Page frames dropped (before the call's media started, or unusable).
    pub up_dropped: u64,
    /// Peer video frames given to the page.
    pub down_video: u64,
    /// Peer audio frames (20 ms) given to the page.
    pub down_audio: u64,
    /// Peer media not given to the page (no page, waiting for a key frame,
    /// a codec that is not converted, malformed).
    pub down_dropped: u64,
    /// Key frames asked of the peer.
    pub keyframes_asked_of_peer: u64,
    /// Key frames asked of the page's encoder.
    pub keyframes_asked_of_page: u64,
    /// The test source was standing in (calls × starts).
    pub test_source_starts: u64,
}

/// A snapshot of a web phone.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// What the page shows.
    pub state: StateView,
    /// The phone's status, if logged in.
    pub phone: Option<PhoneStatus>,
    /// The bridge's counters.
    pub bridge: BridgeStats,
    /// The conversions' counters.
    pub media: MediaStats,
    /// A page is connected (WebSocket).
    pub page: bool,
    /// The page's WebRTC connection is up.
    pub page_media: bool,
    /// The test source is standing in now.
    pub test_source: bool,
    /// The page says its microphone is on.
    pub page_audio: bool,
    /// The page says its camera (or screen) is on.
    pub page_video: bool,
}

/// What the task is told.
#[derive(Debug)]
enum AppInput {
    Command(WebCommand),
    Snapshot(oneshot::Sender<Snapshot>),
    Quit,
}

/// A running web phone (see the module documentation).
#[derive(Debug)]
pub struct WebPhone {
    url: String,
    addr: SocketAddr,
    token: String,
    tx: mpsc::Sender<AppInput>,
    observe: broadcast::Sender<PhoneMsg>,
    task: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
    bridge: HostHandle<Bridge>,
}

impl WebPhone {
    /// Starts the page's server, the bridge and (with `user`) the phone, on
    /// the current tokio runtime.
    ///
    /// # Errors
    /// When an address cannot be bound.
    pub async fn start(cfg: WebConfig, user: Option<String>) -> anyhow::Result<WebPhone> {
        let listener = tokio::net::TcpListener::bind(cfg.web)
            .await
            .with_context(|| format!("cannot serve the page on {}", cfg.web))?;
        let addr = listener.local_addr()?;
        let security = Security::new(addr, cfg.web_name.as_deref());
        let token = security.token().to_string();
        let shown = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let url = format!("http://{shown}/?token={token}");
        // the bridge: its own host on a loopback socket (the page's browser
        // runs on this machine)
        let ip = if addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            addr.ip()
        };
        let udp = std::net::UdpSocket::bind((ip, 0)).context("cannot bind the WebRTC socket")?;
        let local = udp.local_addr()?;
        let bridge = Bridge::new(local, BridgeConfig::default());
        let hcfg = HostConfig::default()
            .capacity(256, 1024)
            .socket_buffer(Some(1 << 20));
        let (bhost, bevents, _bjoin) = Host::spawn(bridge, vec![udp], hcfg)?;
        let (ptx, prx) = mpsc::channel(64);
        let app = server::router(security, ptx);
        let http = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("the page's server stopped: {e}");
            }
        });
        let (tx, rx) = mpsc::channel(64);
        let (observe, _) = broadcast::channel(OBSERVERS);
        let task = App::new(cfg.clone(), bhost.clone(), observe.clone());
        let task = tokio::spawn(task.run(rx, prx, bevents, user));
        Ok(WebPhone {
            url,
            addr,
            token,
            tx,
            observe,
            task,
            http,
            bridge: bhost,
        })
    }

    /// The page's address (with its secret): what `web:` prints.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the page is served on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The secret in the URL.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Everything the page is sent (state, lines, chat, status), for the
    /// terminal and for tests. Slow receivers miss messages.
    pub fn observe(&self) -> broadcast::Receiver<PhoneMsg> {
        self.observe.subscribe()
    }

    /// Does what the page would.
    pub async fn command(&self, c: WebCommand) {
        let _ = self.tx.send(AppInput::Command(c)).await;
    }

    /// A snapshot (`None` once the phone has stopped).
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(AppInput::Snapshot(tx)).await.ok()?;
        rx.await.ok()
    }

    /// The bridge's host (its counters, its socket address).
    pub fn bridge(&self) -> &HostHandle<Bridge> {
        &self.bridge
    }

    /// Hangs up, logs out, stops serving the page and closes the bridge.
    pub async fn shutdown(self) {
        let _ = self.tx.send(AppInput::Quit).await;
        let _ = self.task.await;
        self.http.abort();
        self.bridge.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.bridge.closed()).await;
    }
}

/// The page's view of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallStage {
    Calling,
    Ringing,
    InCall,
    Ended,
}

impl CallStage {
    fn name(self) -> &'static str {
        match self {
            CallStage::Calling => "calling",
            CallStage::Ringing => "ringing",
            CallStage::InCall => "incall",
            CallStage::Ended => "ended",
        }
    }
}

/// The page's media towards the peer.
#[derive(Debug, Default)]
struct Uplink {
    video: H264ToFlv,
    vclock: Option<RtpClock>,
    aclock: Option<RtpClock>,
}

/// The peer's media towards the page.
#[derive(Debug)]
struct Downlink {
    video: FlvToH264,
    audio: Option<FlvToG711>,
    /// (FLV timestamp, instant) of the first tag: media time → wall clock.
    base: Option<(u32, Instant)>,
    /// Codecs already reported as not converted.
    reported: Vec<&'static str>,
}

impl Default for Downlink {
    fn default() -> Self {
        Downlink {
            video: FlvToH264::new(),
            audio: None,
            base: None,
            reported: Vec::new(),
        }
    }
}

/// The page connection's media clock towards the page: one RTP timeline
/// (in milliseconds) across calls and restarts of the peer's stream.
///
/// The peer's FLV timestamps start again at every call (and may jump back
/// when its stream restarts), but the page's connection — its SSRCs and
/// jitter buffers — lives on. A timeline that went backwards would make the
/// browser drop the new pictures as late; so each new segment continues from
/// the last time sent, advanced by the wall-clock time since.
#[derive(Debug, Default)]
struct PageTimeline {
    /// page ms = FLV ms + offset, for the current segment.
    offset: Option<i64>,
    /// The highest FLV timestamp of the current segment.
    last_flv: u32,
    /// The highest page time sent, and when.
    last: Option<(i64, Instant)>,
}

impl PageTimeline {
    /// How far back a timestamp may go within one segment (audio and
    /// video interleave) before it counts as a restart.
    const BACK: u32 = 1000;

    /// The next tag starts a new segment.
    fn cut(&mut self) {
        self.offset = None;
    }

    /// The page time (ms) of a tag's timestamp `flv`, received `at`.
    fn map(&mut self, flv: u32, at: Instant) -> u64 {
        if self.offset.is_some() && flv.saturating_add(Self::BACK) < self.last_flv {
            self.offset = None;
        }
        let offset = match self.offset {
            Some(o) => o,
            None => {
                self.last_flv = flv;
                let o = match self.last {
                    Some((ms, t)) => {
                        let waited = i64::try_from(at.saturating_duration_since(t).as_millis())
                            .unwrap_or(i64::MAX / 4);
                        ms.saturating_add(waited).saturating_add(1) - i64::from(flv)
                    }
                    None => 0,
                };
                *self.offset.insert(o)
            }
        };
        self.last_flv = self.last_flv.max(flv);
        let ms = (i64::from(flv) + offset).max(0);
        if self.last.is_none_or(|(last, _)| ms > last) {
            self.last = Some((ms, at));
        }
        ms.unsigned_abs()
    }
}

/// The app task's state.
struct App {
    cfg: WebConfig,
    bridge: HostHandle<Bridge>,
    observe: broadcast::Sender<PhoneMsg>,
    phone: Option<PhoneHandle>,
    media: Option<MediaSender>,
    /// The name of the phone's user (the current or last login).
    user: Option<String>,
    logged_in: bool,
    online: bool,
    logging_in: bool,
    password_wanted: bool,
    call: Option<(CallStage, Option<String>, Option<String>)>,
    /// The page (WebSocket) that drives the phone.
    page: Option<(u64, mpsc::Sender<PhoneMsg>)>,
    /// Its WebRTC connection, once up, and the law of its audio.
    page_conn: Option<(ConnId, Option<Law>)>,
    page_audio: bool,
    page_video: bool,
    history: VecDeque<PhoneMsg>,
    /// The call's media started (the peer receives ours) at this instant.
    media_t0: Option<Instant>,
    up: Uplink,
    down: Downlink,
    /// The RTP timeline of the page's connection.
    timeline: PageTimeline,
    test: Option<SourceThread>,
    stats: MediaStats,
    last_peer_keyframe: Option<Instant>,
    /// Phones that are quitting (their tasks end by themselves).
    quitting: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    fn new(
        cfg: WebConfig,
        bridge: HostHandle<Bridge>,
        observe: broadcast::Sender<PhoneMsg>,
    ) -> Self {
        App {
            cfg,
            bridge,
            observe,
            phone: None,
            media: None,
            user: None,
            logged_in: false,
            online: false,
            logging_in: false,
            password_wanted: false,
            call: None,
            page: None,
            page_conn: None,
            page_audio: true,
            page_video: true,
            history: VecDeque::new(),
            media_t0: None,
            up: Uplink::default(),
            down: Downlink::default(),
            timeline: PageTimeline::default(),
            test: None,
            stats: MediaStats::default(),
            last_peer_keyframe: None,
            quitting: Vec::new(),
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<AppInput>,
        mut pages: mpsc::Receiver<PageInput>,
        mut bridge: mpsc::Receiver<BridgeEvent>,
        user: Option<String>,
    ) {
        if let Some(u) = user {
            let pw = self.cfg.password.clone();
            self.login(u, pw);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = commands.recv() => match c {
                    Some(AppInput::Command(c)) => self.on_command(c).await,
                    Some(AppInput::Snapshot(tx)) => {
                        let s = self.snapshot().await;
                        let _ = tx.send(s);
                    }
                    Some(AppInput::Quit) | None => break,
                },
                p = pages.recv() => match p {
                    Some(p) => self.on_page(p).await,
                    None => break,
                },
                e = async { match self.phone.as_mut() {
                    Some(p) => p.events.recv().await,
                    None => std::future::pending().await,
                } } => match e {
                    Some(e) => self.on_phone(e).await,
                    None => self.phone_gone(),
                },
                e = bridge.recv() => match e {
                    Some(e) => self.on_bridge(e).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
        self.test = None;
        if let Some(p) = self.phone.take() {
            let _ = p.quit().await;
        }
        for q in self.quitting.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(3), q).await;
        }
        if let Some((_, tx)) = self.page.take() {
            let _ = tx.try_send(PhoneMsg::Line {
                kind: "error",
                text: "the phone has stopped".into(),
                unix_ms: unix_ms(),
            });
        }
    }

    // ----- to the page ------------------------------------------------------

    /// Sends a message to the page (and observers); a page that does not
    /// read is let go.
    fn send(&mut self, m: PhoneMsg) {
        let _ = self.observe.send(m.clone());
        if let Some((id, tx)) = &self.page {
            if tx.try_send(m).is_err() {
                tracing::warn!(page = id, "the page does not keep up; closing it");
                self.page = None;
            }
        }
    }

    fn remember(&mut self, m: PhoneMsg) {
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(m.clone());
        self.send(m);
    }

    fn line(&mut self, kind: &'static str, text: impl Into<String>) {
        let text = text.into();
        self.remember(PhoneMsg::Line {
            kind,
            text,
            unix_ms: unix_ms(),
        });
    }

    fn state_view(&self) -> StateView {
        StateView {
            logged_in: self.logged_in,
            user: self.user.clone(),
            online: self.online,
            logging_in: self.logging_in,
            password_wanted: self.password_wanted,
            call: self.call.as_ref().map(|(s, peer, path)| CallView {
                state: s.name(),
                peer: peer.clone(),
                path: path.clone(),
            }),
        }
    }

    fn push_state(&mut self) {
        let s = PhoneMsg::State(self.state_view());
        self.send(s);
    }

    // ----- the phone --------------------------------------------------------

    fn login(&mut self, user: String, password: Option<String>) {
        if self.phone.is_some() && self.user.as_deref() == Some(user.as_str()) && self.logged_in {
            self.push_state();
            return;
        }
        self.logout();
        let mut pc = PhoneConfig::new(
            user.clone(),
            self.cfg.server.clone(),
            self.cfg.servers.clone(),
        );
        pc.password = password.filter(|p| !p.is_empty());
        pc.direct_timeout = self.cfg.direct_timeout;
        pc.relay_fallback = self.cfg.relay_fallback;
        pc.call.invite_timeout = self.cfg.ring_timeout;
        let dcfg = DriverConfig {
            registry: self.cfg.registry.clone(),
            source: SourceSpec::External,
            sink: SinkSpec::Events,
            seed: self.cfg.seed,
            ..DriverConfig::default()
        };
        let spawned = std::net::UdpSocket::bind(self.cfg.phone_bind)
            .with_context(|| format!("cannot bind UDP {}", self.cfg.phone_bind))
            .and_then(|s| driver::spawn(pc, s, dcfg));
        self.user = Some(user.clone());
        match spawned {
            Ok(p) => {
                self.media = Some(p.media_sender());
                self.phone = Some(p);
                self.logging_in = true;
                self.line(
                    "info",
                    format!("logging in as {user} to {}…", self.cfg.server),
                );
            }
            Err(e) => self.line("error", format!("cannot start the phone: {e:#}")),
        }
        self.push_state();
    }

    fn logout(&mut self) {
        self.test = None;
        self.media = None;
        if let Some(p) = self.phone.take() {
            self.quitting.retain(|q| !q.is_finished());
            self.quitting.push(tokio::spawn(async move {
                let _ = p.quit().await;
            }));
        }
        self.logged_in = false;
        self.online = false;
        self.logging_in = false;
        if matches!(self.call, Some((s, ..)) if s != CallStage::Ended) {
            self.call = Some((CallStage::Ended, None, None));
        }
        self.media_t0 = None;
    }

    fn phone_gone(&mut self) {
        if let Some(p) = self.phone.take() {
            self.quitting.push(tokio::spawn(async move {
                let _ = p.task.await;
            }));
        }
        self.media = None;
        self.logged_in = false;
        self.online = false;
        self.logging_in = false;
        self.line("error", "the phone stopped");
        self.push_state();
    }

    fn phone_cmd(&mut self, c: Command) {
        match &self.phone {
            Some(p) => p.send(c),
            None => self.line("error", "log in first"),
        }
    }

    /// Calls `peer`; the page shows it at once (the phone looks the name
    /// up first).
    fn dial(&mut self, peer: String) {
        let busy = matches!(
            self.call,
            Some((
                CallStage::Calling | CallStage::Ringing | CallStage::InCall,
                ..
            ))
        );
        if self.logged_in && !busy {
            self.call = Some((CallStage::Calling, Some(peer.clone()), None));
            self.push_state();
        }
        self.phone_cmd(Command::Call(peer));
    }

    async fn on_command(&mut self, c: WebCommand) {
        match c {
            WebCommand::Login { user, password } => self.login(user, password),
            WebCommand::Call(peer) => self.dial(peer),
            WebCommand::Accept => self.phone_cmd(Command::Accept),
            WebCommand::Reject => self.phone_cmd(Command::Reject),
            WebCommand::Hangup => self.phone_cmd(Command::Hangup),
            WebCommand::Say(t) => self.phone_cmd(Command::Say(t)),
        }
    }

    async fn snapshot(&mut self) -> Snapshot {
        let phone = match &self.phone {
            Some(p) => p.status().await,
            None => None,
        };
        let bridge = self.bridge.with(|b, _| b.stats()).await.unwrap_or_default();
        Snapshot {
            state: self.state_view(),
            phone,
            bridge,
            media: self.stats.clone(),
            page: self.page.is_some(),
            page_media: self.page_conn.is_some(),
            test_source: self.test.is_some(),
            page_audio: self.page_audio,
            page_video: self.page_video,
        }
    }

    async fn on_phone(&mut self, e: PhoneEvent) {
        match e {
            PhoneEvent::Media { tag, received } => self.downlink(tag, received).await,
            PhoneEvent::LoggedIn { reconnected, .. } => {
                self.logged_in = true;
                self.online = true;
                self.logging_in = false;
                self.password_wanted = false;
                let u = self.user.clone().unwrap_or_default();
                if reconnected {
                    self.line("call", "reconnected to the server");
                } else {
                    self.line("info", format!("logged in as {u}"));
                }
                self.push_state();
            }
            PhoneEvent::LoginFailed { reason, retry_in } => {
                self.online = false;
                match retry_in {
                    Some(d) => self.line(
                        "error",
                        format!(
                            "cannot reach the server ({reason}); retrying in {:.1} s",
                            d.as_secs_f64()
                        ),
                    ),
                    None => {
                        self.line("error", format!("login refused: {reason}"));
                        // a server that refuses a name alone wants a password
                        self.password_wanted = true;
                        self.logout();
                    }
                }
                self.push_state();
            }
            PhoneEvent::ServerLost { retry_in } => {
                self.online = false;
                self.line(
                    "call",
                    format!(
                        "network lost: the server is gone; a call goes on; reconnecting in {:.1} s",
                        retry_in.as_secs_f64()
                    ),
                );
                self.push_state();
            }
            PhoneEvent::Calling { name, .. } => {
                self.call = Some((CallStage::Calling, Some(name.clone()), None));
                self.down = Downlink::default();
                self.line("call", format!("calling {name}…"));
                self.push_state();
            }
            PhoneEvent::Call(c) => self.on_call(c),
            PhoneEvent::Path(p) => {
                let (path, text) = match p {
                    MediaPath::Connecting => ("connecting", "media path: connecting".to_string()),
                    MediaPath::Direct(a) => ("direct", format!("media path: direct to {a}")),
                    MediaPath::Relay => ("relay", "media path: through the server's relay".into()),
                };
                if let Some(c) = self.call.as_mut() {
                    c.2 = Some(path.to_string());
                }
                self.line("info", text);
                self.push_state();
            }
            PhoneEvent::Chat {
                from,
                text,
                unix_ms,
                local,
            } => self.remember(PhoneMsg::Chat {
                from,
                text,
                unix_ms,
                local,
            }),
            PhoneEvent::Refused { peer_id, stream } => self.line(
                "info",
                format!(
                    "refused {}… (not in the call) asking for {stream}",
                    &peer_id[..peer_id.len().min(16)]
                ),
            ),
            PhoneEvent::Notice(n) => self.line("info", n),
            PhoneEvent::StartSource => self.start_media(),
            PhoneEvent::StopSource { .. } => self.stop_media(),
            PhoneEvent::KeyframeRequested { .. } => self.keyframe_for_peer().await,
            _ => {}
        }
    }

    fn on_call(&mut self, c: CallEvent) {
        let peer = self.call.as_ref().and_then(|c| c.1.clone());
        let who = peer.clone().unwrap_or_else(|| "the peer".into());
        match c {
            CallEvent::Incoming { from_name, .. } => {
                self.call = Some((CallStage::Ringing, Some(from_name.clone()), None));
                self.down = Downlink::default();
                self.line("call", format!("{from_name} is calling"));
                if self.cfg.answer {
                    self.phone_cmd(Command::Accept);
                }
            }
            CallEvent::Accepted => {
                self.call = Some((CallStage::InCall, peer, Some("connecting".into())));
                self.line("call", format!("in a call with {who}"));
            }
            CallEvent::Rejected { by_peer: true } => {
                self.line("call", format!("{who} rejected the call"))
            }
            CallEvent::Rejected { by_peer: false } => self.line("call", "you rejected the call"),
            CallEvent::PeerBusy => self.line("call", format!("{who} is busy in another call")),
            CallEvent::Busy { from_name, .. } => {
                self.line(
                    "call",
                    format!("{from_name} called while you were busy (missed call)"),
                );
            }
            CallEvent::NoAnswer => self.line("call", "no answer"),
            CallEvent::Offline => self.line("call", format!("{who} is offline")),
            CallEvent::Cancelled { by_peer: true } => {
                self.line("call", format!("{who} gave up calling (missed call)"));
            }
            CallEvent::Cancelled { by_peer: false } => self.line("call", "call cancelled"),
            CallEvent::HungUp { by_peer: true } => self.line("call", format!("{who} hung up")),
            CallEvent::HungUp { by_peer: false } => self.line("call", "you hung up"),
            CallEvent::Ended => {
                if let Some(c) = self.call.as_mut() {
                    c.0 = CallStage::Ended;
                }
                self.line("info", "call ended");
            }
        }
        self.push_state();
    }

    // ----- media ------------------------------------------------------------

    /// The call's media starts: the peer receives ours.
    fn start_media(&mut self) {
        self.media_t0 = Some(rtmfp_tokio::now());
        self.up = Uplink::default();
        if self.page_conn.is_some() {
            self.ask_page_keyframe();
        } else {
            self.start_test_source();
        }
    }

    fn stop_media(&mut self) {
        self.media_t0 = None;
        self.test = None;
    }

    /// Milliseconds on the call's media clock at `at`.
    fn media_ms(&self, at: Instant) -> Option<u64> {
        let t0 = self.media_t0?;
        Some(at.saturating_duration_since(t0).as_millis() as u64)
    }

    fn start_test_source(&mut self) {
        let (Some(cfg), Some(media), Some(now_ms)) = (
            self.cfg.fallback.clone(),
            self.media.clone(),
            self.media_ms(rtmfp_tokio::now()),
        ) else {
            return;
        };
        if self.test.is_some() {
            return;
        }
        let src = match TestSource::new(cfg) {
            Ok(s) => s,
            Err(e) => {
                self.line("error", format!("test source: {e}"));
                return;
            }
        };
        let offset = u32::try_from(now_ms).unwrap_or(u32::MAX);
        match driver::spawn_source(Box::new(src), media, offset, "web-test-source") {
            Ok(t) => {
                self.test = Some(t);
                self.stats.test_source_starts += 1;
            }
            Err(e) => self.line("error", format!("test source: {e}")),
        }
    }

    fn ask_page_keyframe(&mut self) {
        if self.bridge.try_send(BridgeCommand::RequestKeyframe).is_ok() {
            self.stats.keyframes_asked_of_page += 1;
        }
    }

    /// The peer (or our phone) wants a key frame of what we send.
    async fn keyframe_for_peer(&mut self) {
        if let Some(t) = &self.test {
            t.request_keyframe();
        } else if self.page_conn.is_some() {
            self.ask_page_keyframe();
        }
    }

    /// Our page cannot use what the peer sends until a key frame comes.
    fn ask_peer_keyframe(&mut self, now: Instant) {
        if self
            .last_peer_keyframe
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_ASK)
        {
            return;
        }
        self.last_peer_keyframe = Some(now);
        if let Some(p) = &self.phone {
            p.send(Command::RequestKeyframe);
            self.stats.keyframes_asked_of_peer += 1;
        }
    }

    /// A tag from the peer, for the page.
    async fn downlink(&mut self, tag: MediaTag, received: Instant) {
        let Some((_, law)) = self.page_conn else {
            // no page: the video converter still follows the sequence
            // headers, so that a page opened later in the call gets
            // pictures from the next key frame on
            if tag.kind == MediaKind::Video {
                let _ = self.down.video.push(&tag);
            }
            self.stats.down_dropped += 1;
            return;
        };
        if self.down.base.is_none() {
            self.timeline.cut();
        }
        let (base_ts, base_at) = *self.down.base.get_or_insert((tag.timestamp, received));
        let wallclock =
            base_at + Duration::from_millis(u64::from(tag.timestamp.saturating_sub(base_ts)));
        match tag.kind {
            MediaKind::Video => match self.down.video.push(&tag) {
                Ok(Some(frame)) => {
                    let f = FrameOut {
                        rtp_time: self.timeline.map(frame.timestamp, received) * 90,
                        wallclock,
                        received,
                        data: frame.data,
                    };
                    self.stats.down_video += 1;
                    let _ = self.bridge.send(BridgeCommand::Video(f)).await;
                }
                Ok(None) => {}
                Err(Unconverted::WaitingForKeyframe) => {
                    self.stats.down_dropped += 1;
                    self.ask_peer_keyframe(received);
                }
                Err(Unconverted::Codec(c)) => {
                    self.stats.down_dropped += 1;
                    self.report_codec(c);
                }
                Err(_) => {
                    self.stats.down_dropped += 1;
                    self.down.video.restart();
                    self.ask_peer_keyframe(received);
                }
            },
            MediaKind::Audio => {
                let Some(law) = law else {
                    self.stats.down_dropped += 1;
                    return;
                };
                let conv = self.down.audio.get_or_insert_with(|| FlvToG711::new(law));
                let mut frames = Vec::new();
                match conv.push(&tag, &mut frames) {
                    Ok(()) => {}
                    Err(Unconverted::Codec(c)) => {
                        self.stats.down_dropped += 1;
                        self.report_codec(c);
                    }
                    Err(_) => self.stats.down_dropped += 1,
                }
                for fr in frames {
                    let at = base_at
                        + Duration::from_millis(u64::from(fr.timestamp.saturating_sub(base_ts)));
                    let f = FrameOut {
                        rtp_time: self.timeline.map(fr.timestamp, received) * 8,
                        wallclock: at,
                        received,
                        data: fr.data,
                    };
                    self.stats.down_audio += 1;
                    let _ = self.bridge.send(BridgeCommand::Audio(f)).await;
                }
            }
            MediaKind::Data => {}
        }
    }

    fn report_codec(&mut self, codec: &'static str) {
        if !self.down.reported.contains(&codec) {
            self.down.reported.push(codec);
            self.line(
                "error",
                format!("the peer sends {codec}, which the browser cannot play (not converted)"),
            );
        }
    }

    async fn on_bridge(&mut self, e: BridgeEvent) {
        match e {
            BridgeEvent::Answer { request, sdp, .. } => {
                self.send(PhoneMsg::Answer { id: request, sdp });
            }
            BridgeEvent::OfferRefused { request, reason } => {
                self.send(PhoneMsg::OfferError {
                    id: request,
                    message: reason,
                });
            }
            BridgeEvent::Connected { conn, video, audio } => {
                self.page_conn = Some((conn, audio));
                self.timeline = PageTimeline::default();
                if !video {
                    self.line("error", "this browser offers no H.264 (Constrained Baseline): the camera cannot be sent");
                }
                if audio.is_none() {
                    self.line(
                        "error",
                        "this browser offers no G.711 (PCMU/PCMA): the microphone cannot be sent",
                    );
                }
                // the page takes over from the test source; both pictures
                // start with a key frame
                self.test = None;
                self.up = Uplink::default();
                // the new page's decoder starts at the next key frame; the
                // peer's parameter sets (sent once, at the start of its
                // stream) are kept
                self.down.video.restart();
                self.down.audio = None;
                self.down.base = None;
                if self.media_t0.is_some() {
                    self.ask_page_keyframe();
                    self.ask_peer_keyframe(rtmfp_tokio::now());
                }
            }
            BridgeEvent::Closed { conn, .. } => {
                if self.page_conn.is_some_and(|(c, _)| c == conn) {
                    self.page_conn = None;
                    if self.media_t0.is_some() {
                        self.start_test_source();
                    }
                }
            }
            BridgeEvent::Video { conn, frame } => {
                let ok = self.page_conn.is_some_and(|(c, _)| c == conn);
                let (Some(ms), true, Some(media)) =
                    (self.media_ms(frame.arrived), ok, self.media.clone())
                else {
                    self.stats.up_dropped += 1;
                    return;
                };
                if !frame.contiguous {
                    self.ask_page_keyframe();
                }
                let clock = self.up.vclock.get_or_insert_with(|| RtpClock::new(90_000));
                let ts = clock.to_ms(frame.rtp_time, ms);
                let out = self.up.video.push(ts, &frame.data);
                if out.need_keyframe {
                    self.ask_page_keyframe();
                }
                if out.tags.is_empty() {
                    self.stats.up_dropped += 1;
                }
                for t in out.tags {
                    if !t.is_sequence_header() {
                        self.stats.up_video += 1;
                    }
                    let _ = media.send(t, frame.arrived).await;
                }
            }
            BridgeEvent::Audio { conn, law, frame } => {
                let ok = self.page_conn.is_some_and(|(c, _)| c == conn);
                let (Some(ms), true, Some(media)) =
                    (self.media_ms(frame.arrived), ok, self.media.clone())
                else {
                    self.stats.up_dropped += 1;
                    return;
                };
                let clock = self.up.aclock.get_or_insert_with(|| RtpClock::new(8000));
                let ts = clock.to_ms(frame.rtp_time, ms);
                self.stats.up_audio += 1;
                let _ = media
                    .send(g711_tag(law, ts, &frame.data), frame.arrived)
                    .await;
            }
            BridgeEvent::KeyframeRequested { .. } => {
                self.ask_peer_keyframe(rtmfp_tokio::now());
            }
        }
    }

    // ----- pages ------------------------------------------------------------

    async fn on_page(&mut self, p: PageInput) {
        match p {
            PageInput::Opened { page, tx } => {
                if let Some((_, old)) = self.page.replace((page, tx)) {
                    let _ = old.try_send(PhoneMsg::Replaced);
                }
                self.send(PhoneMsg::Hello {
                    server: self.cfg.server.clone(),
                    version: env!("CARGO_PKG_VERSION"),
                });
                self.push_state();
                let history: Vec<PhoneMsg> = self.history.iter().cloned().collect();
                if let Some((_, tx)) = &self.page {
                    for m in history {
                        let _ = tx.try_send(m);
                    }
                }
            }
            PageInput::Closed { page } => {
                if self.page.as_ref().is_some_and(|(p, _)| *p == page) {
                    self.page = None;
                }
            }
            PageInput::Msg { page, msg } => {
                if self.page.as_ref().is_none_or(|(p, _)| *p != page) {
                    return;
                }
                self.on_page_msg(msg).await;
            }
        }
    }

    async fn on_page_msg(&mut self, msg: PageMsg) {
        match msg {
            PageMsg::Login { user, password } => self.login(user, password),
            PageMsg::Logout => {
                self.logout();
                self.line("info", "logged out");
                self.push_state();
            }
            PageMsg::Call { peer } => self.dial(peer),
            PageMsg::Accept => self.phone_cmd(Command::Accept),
            PageMsg::Reject => self.phone_cmd(Command::Reject),
            PageMsg::Hangup => self.phone_cmd(Command::Hangup),
            PageMsg::Chat { text } => self.phone_cmd(Command::Say(text)),
            PageMsg::Media { audio, video } => {
                self.page_audio = audio;
                self.page_video = video;
            }
            PageMsg::Offer { id, sdp } => {
                let _ = self
                    .bridge
                    .send(BridgeCommand::Offer { request: id, sdp })
                    .await;
            }
        }
    }

    async fn on_tick(&mut self) {
        self.quitting.retain(|q| !q.is_finished());
        let in_call = matches!(self.call, Some((CallStage::InCall, ..)));
        if !in_call {
            return;
        }
        let Some(p) = &self.phone else {
            return;
        };
        let Some(s) = p.status().await else {
            return;
        };
        let v = StatusView {
            path: s.path.clone(),
            peer_address: s.peer_address.clone(),
            rtt_ms: s.rtt_ms,
            rx_kbps: s.rx_kbps,
            tx_kbps: s.tx_kbps,
            loss_in_audio: s.audio_loss,
            loss_in_video: s.video_loss,
            loss_out: s.sent_loss,
            video_frames_received: s.received.video_frames,
            audio_packets_received: s.received.audio_packets,
            video_frames_sent: s.sent.video_frames,
            audio_packets_sent: s.sent.audio_packets,
            test_source: self.test.is_some(),
        };
        self.send(PhoneMsg::Status(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_timeline_never_goes_back_across_calls() {
        let t0 = Instant::now();
        let mut tl = PageTimeline::default();
        // first call: FLV 0..10 s
        assert_eq!(tl.map(0, t0), 0);
        assert_eq!(tl.map(40, t0 + Duration::from_millis(40)), 40);
        assert_eq!(tl.map(10_000, t0 + Duration::from_secs(10)), 10_000);
        // audio slightly behind video stays in the segment
        assert_eq!(tl.map(9_980, t0 + Duration::from_secs(10)), 9_980);
        // the second call starts at FLV 0, 2 s later: the timeline goes on
        tl.cut();
        let t1 = t0 + Duration::from_secs(12);
        assert_eq!(tl.map(0, t1), 12_001);
        assert_eq!(tl.map(5_000, t1 + Duration::from_secs(5)), 17_001);
        // the peer's stream restarts within the call (a jump back): a new segment
        let t2 = t1 + Duration::from_millis(5_500);
        assert_eq!(tl.map(3, t2), 17_502);
        assert_eq!(tl.map(43, t2 + Duration::from_millis(40)), 17_542);
        // a timeline that starts high keeps its timestamps
        let mut tl = PageTimeline::default();
        assert_eq!(tl.map(50_000, t0), 50_000);
        tl.cut();
        assert_eq!(tl.map(10, t0 + Duration::from_millis(5)), 50_006);
    }
}
