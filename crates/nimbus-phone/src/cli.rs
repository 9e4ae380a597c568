//! `nimbus phone`: the phone's command line, interactive or scripted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::call::Event as CallEvent;
use crate::driver::{self, Command, DriverConfig, RunReport, SinkSpec, SourceSpec};
use crate::phone::{PhoneConfig, PhoneEvent, PhoneStatus};
use nimbus_media::audio::AudioCodec;
use nimbus_media::TestSourceConfig;

/// Options of `nimbus phone` (the command line itself is the `nimbus`
/// binary's; this crate carries no CLI parser).
#[derive(Debug, Clone)]
pub struct PhoneArgs {
    /// The rendezvous server: rtmfp://HOST[:PORT]/APP.
    pub server: String,
    /// Our user name (with --web: logs in at start; otherwise required).
    pub user: Option<String>,
    /// Password (or registry token) for servers with the `registry` policy.
    pub password: Option<String>,
    /// reg.cgi registry URL (http://HOST:PORT/reg.cgi[?token=…]): register
    /// our name, look names up that the server does not know.
    pub registry: Option<String>,
    /// Local UDP address (default: any address, a free port).
    pub bind: Option<SocketAddr>,
    /// Outgoing media: `test` (built-in H.264 test pattern and tone), `none`,
    /// an FLV file, or `-` for FLV on standard input (e.g. ffmpeg reading a
    /// camera).
    pub source: String,
    /// Audio codec of the test source: `pcm`, or `speex` (needs the `speex`
    /// feature).
    pub audio_codec: String,
    /// Record the peer's media: an FLV file, or `-` for standard output
    /// (e.g. `| ffplay -`).
    pub record: Option<String>,
    /// Call this user (or peer ID) once logged in.
    pub call: Option<String>,
    /// Accept incoming calls by themselves.
    pub answer: bool,
    /// Hang up this many seconds after a call is established, then quit.
    pub seconds: Option<f64>,
    /// Chat lines to send once a call is established (repeatable).
    pub say: Vec<String>,
    /// Print a JSON summary at the end (and no event lines).
    pub json: bool,
    /// Milliseconds to wait for a direct path before using the server relay.
    pub direct_timeout_ms: u64,
    /// Never use the server's stream relay.
    pub no_relay: bool,
    /// Seconds to wait for an answer before giving up.
    pub ring_seconds: u64,
    /// Quit after this many seconds whatever happens (scripted runs).
    pub max_seconds: Option<f64>,
    /// Serve the web phone (camera, microphone and screen in the browser,
    /// bridged by WebRTC) on ADDR (default 127.0.0.1:8935); prints one line
    /// `web: URL` to open. The test source stands in while no page is open
    /// (`--source none` to send nothing then).
    pub web: Option<String>,
    /// With --web: open the page in the system browser.
    pub open: bool,
}

/// Where `--web` serves the page by default.
pub const DEFAULT_WEB_ADDR: &str = "127.0.0.1:8935";

/// A user name the phone accepts: 1-64 characters without spaces, `&`,
/// `?`, `#`, `%`, `/` or control characters (it goes into the connect URL).
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && !user.contains(['&', '?', '/', ' ', '#', '%'])
        && !user.chars().any(char::is_control)
}

/// The server's addresses for `rtmfp://HOST[:PORT]/APP`.
///
/// # Errors
/// When the URL is malformed or the host does not resolve.
pub async fn resolve_server(url: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let (host, port) = server_host_port(url)?;
    let servers: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    if servers.is_empty() {
        bail!("{host} has no address");
    }
    Ok(servers)
}

/// Splits `rtmfp://host[:port]/app…` into the host and port.
pub fn server_host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("rtmfp://")
        .with_context(|| format!("the server must be rtmfp://HOST[:PORT]/APP, not {url:?}"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() {
        bail!("no host in {url:?}");
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .context("unclosed [ in the server address")?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().context("bad port")?,
            None => 1935,
        };
        return Ok((h.to_string(), port));
    }
    let (h, port) = match authority.split_once(':') {
        Some((_, p)) if p.contains(':') => {
            bail!("write IPv6 addresses in brackets: rtmfp://[ADDR]:PORT/APP")
        }
        Some((h, p)) => (h, p.parse().context("bad port")?),
        None => (authority, 1935),
    };
    if h.is_empty() {
        bail!("no host in {url:?}");
    }
    Ok((h.to_string(), port))
}

/// The source of `--source` and `--audio-codec`.
///
/// # Errors
/// An unknown codec, or a file that does not exist.
pub fn source_spec(args: &PhoneArgs) -> anyhow::Result<SourceSpec> {
    let codec = match args.audio_codec.as_str() {
        "pcm" => AudioCodec::PcmLe,
        #[cfg(feature = "speex")]
        "speex" => AudioCodec::Speex,
        "speex" => bail!("this build has no Speex: build with --features speex"),
        other => bail!("unknown audio codec {other:?} (pcm or speex)"),
    };
    Ok(match args.source.as_str() {
        "test" => SourceSpec::Test(TestSourceConfig {
            audio_codec: codec,
            clock: nimbus_media::source::ClockDisplay::UtcTimeOfDay,
            ..TestSourceConfig::default()
        }),
        "none" => SourceSpec::None,
        "-" => SourceSpec::Stdin,
        path => {
            let p = PathBuf::from(path);
            if !p.is_file() {
                bail!("no FLV file at {path}");
            }
            SourceSpec::File(p)
        }
    })
}

/// A user-given number of seconds as a duration: negative and NaN are 0,
/// anything beyond ten years is ten years (never a panic).
pub fn seconds(s: f64) -> Duration {
    const MAX: f64 = 10.0 * 365.0 * 86_400.0;
    if s.is_nan() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(s.clamp(0.0, MAX))
}

/// Runs `nimbus phone`.
pub async fn run(args: PhoneArgs) -> anyhow::Result<()> {
    if args.web.is_some() {
        bail!("the web phone (--web) is served by the nimbus binary: nimbus phone --web");
    }
    let Some(user) = args.user.clone() else {
        bail!("nimbus phone needs --user NAME (or --web, to log in from the page)");
    };
    if !valid_user(&user) {
        bail!("user names are 1-64 characters without spaces, '&', '?', '#', '%' or '/'");
    }
    let servers = resolve_server(&args.server).await?;
    let bind = args.bind.unwrap_or_else(|| {
        if servers[0].is_ipv6() {
            "[::]:0".parse().expect("addr")
        } else {
            "0.0.0.0:0".parse().expect("addr")
        }
    });
    let socket =
        std::net::UdpSocket::bind(bind).with_context(|| format!("cannot bind UDP {bind}"))?;
    let mut cfg = PhoneConfig::new(user.clone(), args.server.clone(), servers);
    cfg.password = args.password.clone();
    cfg.direct_timeout = Duration::from_millis(args.direct_timeout_ms);
    cfg.relay_fallback = !args.no_relay;
    cfg.call.invite_timeout = Duration::from_secs(args.ring_seconds.max(1));
    let stdout_sink = args.record.as_deref() == Some("-");
    let sink = match args.record.as_deref() {
        None => SinkSpec::None,
        Some("-") => SinkSpec::Stdout,
        Some(p) => SinkSpec::File(PathBuf::from(p)),
    };
    let source = source_spec(&args)?;
    let stdin_media = matches!(source, SourceSpec::Stdin);
    let dcfg = DriverConfig {
        registry: args.registry.clone(),
        source,
        sink,
        ..DriverConfig::default()
    };
    let mut phone = driver::spawn(cfg, socket, dcfg)?;
    // event lines go to stdout, or stderr when stdout carries media or JSON
    let to_stderr = stdout_sink || args.json;
    let say = |line: String| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!(
        "nimbus phone: {} (peer ID {}) on {}, server {}",
        user, phone.peer_id, phone.local_addr, args.server
    ));
    let scripted = args.call.is_some() || args.answer && args.seconds.is_some();
    if !scripted {
        say("commands: call NAME | accept | reject | say TEXT | hangup | status | quit".into());
    }
    // commands from standard input (unless it carries media), until its end
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    let mut stdin_open = !stdin_media;
    if stdin_open {
        tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(l)) = r.next_line().await {
                if line_tx.send(l).await.is_err() {
                    break;
                }
            }
        });
    }
    if let Some(n) = &args.call {
        // placed once logged in
        phone.send(Command::Call(n.clone()));
    }
    let started = tokio::time::Instant::now();
    let max_deadline = args.max_seconds.map(|s| started + seconds(s));
    let mut hangup_at: Option<tokio::time::Instant> = None;
    let mut outcome = String::from("no call");
    let mut quitting = false;
    let mut exit_error: Option<String> = None;
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        let wake = [hangup_at, max_deadline].into_iter().flatten().min();
        tokio::select! {
            e = phone.events.recv() => {
                let Some(e) = e else { break };
                if !args.json || matches!(e, PhoneEvent::LoginFailed { retry_in: None, .. }) {
                    let line = describe(&e);
                    if !line.is_empty() {
                        say(line);
                    }
                }
                match &e {
                    PhoneEvent::LoginFailed { reason, retry_in: None } => {
                        exit_error = Some(format!("login refused: {reason}"));
                        phone.send(Command::Quit);
                        quitting = true;
                    }
                    PhoneEvent::Call(CallEvent::Incoming { .. }) if args.answer => {
                        phone.send(Command::Accept);
                    }
                    PhoneEvent::Call(CallEvent::Accepted) => {
                        outcome = "accepted".into();
                        for l in &args.say {
                            phone.send(Command::Say(l.clone()));
                        }
                        if let Some(s) = args.seconds {
                            hangup_at = Some(tokio::time::Instant::now() + seconds(s));
                        }
                    }
                    PhoneEvent::Call(c) => {
                        let o = match c {
                            CallEvent::Rejected { by_peer: true } => Some("rejected"),
                            CallEvent::PeerBusy => Some("busy"),
                            CallEvent::Busy { .. } => None,
                            CallEvent::NoAnswer => Some("no answer"),
                            CallEvent::Offline => Some("offline"),
                            CallEvent::Cancelled { by_peer: true } => Some("cancelled by the caller"),
                            CallEvent::HungUp { by_peer: true } => Some("hung up by the peer"),
                            CallEvent::HungUp { by_peer: false } => Some("completed"),
                            _ => None,
                        };
                        if let Some(o) = o {
                            if outcome != "completed" {
                                outcome = o.into();
                            }
                        }
                        if matches!(c, CallEvent::Ended) && scripted && !quitting {
                            phone.send(Command::Quit);
                            quitting = true;
                        }
                    }
                    _ => {}
                }
            }
            l = lines.recv(), if stdin_open => {
                let Some(l) = l else {
                    stdin_open = false;
                    continue;
                };
                let l = l.trim();
                let (cmd, rest) = l.split_once(' ').unwrap_or((l, ""));
                match cmd {
                    "" => {}
                    "call" if !rest.trim().is_empty() => phone.send(Command::Call(rest.trim().into())),
                    "accept" | "a" => phone.send(Command::Accept),
                    "reject" | "r" => phone.send(Command::Reject),
                    "hangup" | "h" | "bye" => phone.send(Command::Hangup),
                    "say" | "s" => phone.send(Command::Say(rest.into())),
                    "status" | "st" => {
                        if let Some(s) = phone.status().await {
                            say(status_line(&s));
                        }
                    }
                    "quit" | "q" | "exit" => {
                        phone.send(Command::Quit);
                        quitting = true;
                    }
                    _ => say("commands: call NAME | accept | reject | say TEXT | hangup | status | quit".into()),
                }
            }
            _ = async { tokio::time::sleep_until(wake.unwrap_or(started)).await }, if wake.is_some() => {
                let now = tokio::time::Instant::now();
                if hangup_at.is_some_and(|t| t <= now) {
                    hangup_at = None;
                    phone.send(Command::Hangup);
                }
                if max_deadline.is_some_and(|t| t <= now) && !quitting {
                    if outcome == "no call" {
                        outcome = "timed out".into();
                    }
                    phone.send(Command::Quit);
                    quitting = true;
                }
            }
            _ = &mut ctrl_c, if !quitting => {
                phone.send(Command::Quit);
                quitting = true;
            }
        }
        if phone.task.is_finished() {
            break;
        }
    }
    let report = phone.task.await??;
    if args.json {
        let j = summary_json(&user, &outcome, &report);
        if stdout_sink {
            eprintln!("{}", serde_json::to_string_pretty(&j)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
    } else if let Some(s) = report.calls.last() {
        say(format!("last call: {}", status_line(s)));
    }
    if let Some(e) = exit_error {
        bail!(e);
    }
    if args.call.is_some() && outcome != "completed" && outcome != "hung up by the peer" {
        bail!("call to {}: {outcome}", args.call.as_deref().unwrap_or(""));
    }
    Ok(())
}

/// One human-readable line for an event.
pub fn describe(e: &PhoneEvent) -> String {
    match e {
        PhoneEvent::LoggedIn {
            peer_id,
            reconnected,
        } => {
            if *reconnected {
                format!("reconnected to the server (peer ID {peer_id})")
            } else {
                format!("logged in (peer ID {peer_id})")
            }
        }
        PhoneEvent::LoginFailed { reason, retry_in } => match retry_in {
            Some(d) => format!(
                "cannot log in: {reason}; retrying in {:.1} s",
                d.as_secs_f64()
            ),
            None => format!("login refused: {reason}"),
        },
        PhoneEvent::ServerLost { retry_in } => format!(
            "lost the server; calls go on; reconnecting in {:.1} s",
            retry_in.as_secs_f64()
        ),
        PhoneEvent::Calling { name, .. } => format!("calling {name}…"),
        PhoneEvent::Call(c) => match c {
            CallEvent::Incoming { from_name, .. } => {
                format!("incoming call from {from_name}: type accept or reject")
            }
            CallEvent::Accepted => "call established".into(),
            CallEvent::Rejected { by_peer: true } => "the call was rejected".into(),
            CallEvent::Rejected { by_peer: false } => "you rejected the call".into(),
            CallEvent::Busy { from_name, .. } => format!("{from_name} called while you were busy"),
            CallEvent::PeerBusy => "the peer is busy in another call".into(),
            CallEvent::NoAnswer => "no answer".into(),
            CallEvent::Offline => "that user is offline".into(),
            CallEvent::Cancelled { by_peer: true } => "the caller gave up".into(),
            CallEvent::Cancelled { by_peer: false } => "call cancelled".into(),
            CallEvent::HungUp { by_peer: true } => "the peer hung up".into(),
            CallEvent::HungUp { by_peer: false } => "you hung up".into(),
            CallEvent::Ended => "call ended".into(),
        },
        PhoneEvent::Path(p) => format!("media path: {p}"),
        // the driver's own: not forwarded
        PhoneEvent::Media { .. }
        | PhoneEvent::StartSource
        | PhoneEvent::StopSource { .. }
        | PhoneEvent::KeyframeRequested { .. } => String::new(),
        PhoneEvent::Chat {
            from,
            text,
            unix_ms,
            local,
        } => {
            let secs = (unix_ms / 1000) % 86_400;
            let t = format!(
                "{:02}:{:02}:{:02}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            );
            if *local {
                format!("[{t} UTC] me: {text}")
            } else {
                format!("[{t} UTC] {from}: {text}")
            }
        }
        PhoneEvent::Refused { peer_id, stream } => {
            format!("refused {peer_id} (not in the call) asking for {stream}")
        }
        PhoneEvent::RegistryLookup { name } => format!("looking {name} up in the registry"),
        PhoneEvent::Notice(n) => n.clone(),
    }
}

/// The `status` line.
pub fn status_line(s: &PhoneStatus) -> String {
    format!(
        "{} ({}), {}{}{}; rx {:.0} kbit/s tx {:.0} kbit/s; video {} in / {} out, audio {} in / {} out; loss audio {:.1} % video {:.1} %; latency audio p50 {:.1} ms p99 {:.1} ms{}",
        s.call_state,
        if s.online { "online" } else { "offline" },
        s.peer_name.as_deref().map(|p| format!("with {p}, ")).unwrap_or_default(),
        s.path.as_deref().unwrap_or("no media path"),
        s.peer_address.as_deref().map(|a| format!(" {a}")).unwrap_or_default(),
        s.rx_kbps,
        s.tx_kbps,
        s.received.video_frames,
        s.sent.video_frames,
        s.received.audio_packets,
        s.sent.audio_packets,
        s.audio_loss * 100.0,
        s.video_loss * 100.0,
        s.audio_latency.p50_ms,
        s.audio_latency.p99_ms,
        s.rtt_ms.map(|r| format!(", rtt {r:.1} ms")).unwrap_or_default(),
    )
}

/// The `--json` summary of a run.
pub fn summary_json(user: &str, outcome: &str, r: &RunReport) -> serde_json::Value {
    let s = r.calls.last().unwrap_or(&r.status);
    json!({
        "user": user,
        "peer_id": s.peer_id,
        "outcome": outcome,
        "peer": s.peer_name,
        "path": s.path,
        "peer_address": s.peer_address,
        "relayed": s.relayed,
        "sent": s.sent,
        "received": s.received,
        "send_drops": s.send_drops,
        "loss": { "audio": s.audio_loss, "video": s.video_loss },
        "latency_ms": { "audio": s.audio_latency, "video": s.video_latency },
        "rtt_ms": s.rtt_ms,
        "chat": { "sent": s.chat_sent, "received": s.chat_received },
        "recordings": r.recordings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_seconds_never_panic() {
        assert_eq!(seconds(1.5), Duration::from_millis(1500));
        assert_eq!(seconds(-3.0), Duration::ZERO);
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(f64::INFINITY), seconds(1e300));
    }

    #[test]
    fn server_urls() {
        assert_eq!(
            server_host_port("rtmfp://example.com/app").unwrap(),
            ("example.com".into(), 1935)
        );
        assert_eq!(
            server_host_port("rtmfp://127.0.0.1:19350/phone?x=1").unwrap(),
            ("127.0.0.1".into(), 19350)
        );
        assert_eq!(
            server_host_port("rtmfp://[::1]:5/a").unwrap(),
            ("::1".into(), 5)
        );
        for bad in [
            "http://x/a",
            "rtmfp:///a",
            "rtmfp://h:x/a",
            "rtmfp://[::1/a",
        ] {
            assert!(server_host_port(bad).is_err(), "{bad}");
        }
    }
}
