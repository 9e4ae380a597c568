//! `nimbus phone --web [ADDR] [--open]`: the web phone on the command line.
//!
//! Prints exactly one line `web: URL` (the page's address with its secret)
//! at start, then the call log as it happens; logs in at start with
//! `--user`; `--call`, `--answer`, `--seconds`, `--max-seconds` work as for
//! the command-line phone. Ctrl-C quits cleanly.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use nimbus_phone::cli::{resolve_server, seconds, source_spec, valid_user, DEFAULT_WEB_ADDR};
use nimbus_phone::driver::SourceSpec;
use nimbus_phone::PhoneArgs;
use tokio::sync::broadcast::error::RecvError;

use crate::app::{WebCommand, WebConfig, WebPhone};
use crate::protocol::PhoneMsg;

/// Resolves `--web`'s ADDR: `IP:PORT`, `NAME:PORT` (e.g. `localhost:8935`)
/// or a bare port (on 127.0.0.1).
///
/// # Errors
/// When it is none of these or does not resolve.
pub async fn web_addr(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    tokio::net::lookup_host(s)
        .await
        .with_context(|| format!("--web wants IP:PORT, HOST:PORT or PORT, not {s:?}"))?
        .next()
        .with_context(|| format!("{s} has no address"))
}

/// Starts the system's browser on `url` where there is one; failures are
/// only logged.
pub fn open_browser(url: &str) {
    let mut cmd = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    cmd.arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match cmd.spawn() {
        Ok(mut child) => {
            // reaped off the runtime: the opener may linger
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
        Err(e) => eprintln!("cannot start a browser ({e}); open the address above yourself"),
    }
}

/// A line of the call log for the terminal (`None`: not for the terminal).
pub fn terminal_line(m: &PhoneMsg) -> Option<String> {
    let clock = |ms: u64| {
        let s = (ms / 1000) % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    };
    match m {
        PhoneMsg::Line { text, unix_ms, .. } => Some(format!("[{} UTC] {text}", clock(*unix_ms))),
        PhoneMsg::Chat {
            from,
            text,
            unix_ms,
            local,
        } => {
            let who = if *local { "me" } else { from.as_str() };
            Some(format!("[{} UTC] {who}: {text}", clock(*unix_ms)))
        }
        _ => None,
    }
}

/// The web phone's settings from `nimbus phone`'s arguments.
///
/// # Errors
/// Bad addresses, names or sources.
pub async fn config(args: &PhoneArgs) -> anyhow::Result<WebConfig> {
    let web = args.web.clone().unwrap_or_else(|| DEFAULT_WEB_ADDR.into());
    let addr = web_addr(&web).await?;
    if let Some(u) = &args.user {
        if !valid_user(u) {
            bail!("user names are 1-64 characters without spaces, '&', '?', '#', '%' or '/'");
        }
    }
    let servers = resolve_server(&args.server).await?;
    let mut cfg = WebConfig::new(args.server.clone(), servers);
    cfg.web = addr;
    if web.parse::<u16>().is_err() {
        cfg.web_name = Some(web);
    }
    if !addr.ip().is_loopback() {
        eprintln!(
            "note: browsers allow the camera only on secure origins; http://{addr} is not one unless it is this machine's loopback"
        );
    }
    if let Some(b) = args.bind {
        cfg.phone_bind = b;
    }
    cfg.registry = args.registry.clone();
    cfg.password = args.password.clone();
    cfg.answer = args.answer;
    cfg.direct_timeout = Duration::from_millis(args.direct_timeout_ms);
    cfg.relay_fallback = !args.no_relay;
    cfg.ring_timeout = Duration::from_secs(args.ring_seconds.max(1));
    cfg.fallback = match source_spec(args)? {
        SourceSpec::Test(c) => Some(c),
        SourceSpec::None => None,
        _ => bail!("with --web the page is the source: --source is test (stands in while no page is open) or none"),
    };
    if args.record.is_some() {
        bail!("with --web the peer's media plays in the page: --record is not available");
    }
    Ok(cfg)
}

/// Runs `nimbus phone --web`.
pub async fn run(args: PhoneArgs) -> anyhow::Result<()> {
    let cfg = config(&args).await?;
    let phone = WebPhone::start(cfg, args.user.clone()).await?;
    let mut obs = phone.observe();
    println!("web: {}", phone.url());
    if args.open {
        open_browser(phone.url());
    }
    let started = tokio::time::Instant::now();
    let max_deadline = args.max_seconds.map(|s| started + seconds(s));
    let mut hangup_at: Option<tokio::time::Instant> = None;
    let mut to_call = args.call.clone();
    let mut said = false;
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        let wake = [hangup_at, max_deadline].into_iter().flatten().min();
        tokio::select! {
            m = obs.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                if let Some(l) = terminal_line(&m) {
                    println!("{l}");
                }
                if let PhoneMsg::State(s) = &m {
                    if s.logged_in {
                        if let Some(peer) = to_call.take() {
                            phone.command(WebCommand::Call(peer)).await;
                        }
                    }
                    match s.call.as_ref().map(|c| c.state) {
                        Some("incall") if !said => {
                            said = true;
                            for l in &args.say {
                                phone.command(WebCommand::Say(l.clone())).await;
                            }
                            if let Some(s) = args.seconds {
                                hangup_at = Some(tokio::time::Instant::now() + seconds(s));
                            }
                        }
                        Some("ended") if said && args.seconds.is_some() => break,
                        _ => {}
                    }
                }
            }
            _ = async { tokio::time::sleep_until(wake.unwrap_or(started)).await }, if wake.is_some() => {
                let now = tokio::time::Instant::now();
                if hangup_at.is_some_and(|t| t <= now) {
                    hangup_at = None;
                    phone.command(WebCommand::Hangup).await;
                }
                if max_deadline.is_some_and(|t| t <= now) {
                    break;
                }
            }
            _ = &mut ctrl_c => break,
        }
    }
    phone.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn web_addresses() {
        assert_eq!(
            web_addr("8935").await.unwrap(),
            "127.0.0.1:8935".parse().unwrap()
        );
        assert_eq!(
            web_addr("127.0.0.1:0").await.unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            web_addr("[::1]:9").await.unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert!(web_addr("localhost:8935").await.unwrap().ip().is_loopback());
        assert!(web_addr("no port").await.is_err());
    }

    #[test]
    fn terminal_lines() {
        let l = PhoneMsg::Line {
            kind: "call",
            text: "bob is busy".into(),
            unix_ms: 3_600_000 + 61_000,
        };
        assert_eq!(terminal_line(&l).unwrap(), "[01:01:01 UTC] bob is busy");
        assert!(terminal_line(&PhoneMsg::Replaced).is_none());
    }
}
