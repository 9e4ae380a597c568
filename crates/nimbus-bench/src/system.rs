//! One whole call on this machine, for `nimbus demo` and `nimbus bench phone`:
//! a rendezvous server with the embedded registry on a temporary SQLite
//! file, two phones (alice and bob) that log in with passwords and register
//! by reg.cgi, alice calls bob by name, bob accepts, live test media and chat
//! both ways, alice hangs up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nimbus_media::TestSourceConfig;
use nimbus_phone::call::Event as CallEvent;
use nimbus_phone::driver::{self, Command, DriverConfig, Impairment, PhoneHandle, RunReport};
use nimbus_phone::driver::{SinkSpec, SourceSpec};
use nimbus_phone::phone::{PhoneConfig, PhoneEvent};
use nimbus_server::config::RegistrySection;
use nimbus_server::{AppConfig, Server, ServerConfig};

const STEP: Duration = Duration::from_secs(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Seconds of media after the call is established.
    pub seconds: f64,
    /// Chat lines each side sends.
    pub chat_lines: usize,
    /// Impairment of what each phone receives from the other.
    pub impair: Option<Impairment>,
    /// Where the registry database and the recordings go.
    pub dir: PathBuf,
    /// Print progress lines.
    pub verbose: bool,
}

/// What happened.
#[derive(Debug)]
pub struct CallResult {
    pub alice: RunReport,
    pub bob: RunReport,
    /// The direct path was used (both sides).
    pub direct: bool,
    /// Media bytes and messages the server relayed to players.
    pub server_media_bytes: u64,
    pub server_media_messages: u64,
    /// Invite → accepted (alice's view), ms.
    pub setup_ms: f64,
    /// Invite → first video frame at alice, ms.
    pub first_frame_ms: f64,
    /// Chat lines received by each side.
    pub chat_at_alice: Vec<String>,
    pub chat_at_bob: Vec<String>,
    /// Both phones registered by reg.cgi and bob was listed under his name.
    pub registered: bool,
    /// Neither is listed after quitting.
    pub unregistered: bool,
}

fn log(verbose: bool, s: impl AsRef<str>) {
    if verbose {
        println!("{}", s.as_ref());
    }
}

async fn start_server(dir: &Path) -> Result<Server> {
    let mut c = ServerConfig {
        listen: vec!["127.0.0.1:0".parse()?],
        shards: 2,
        dh_groups: vec![14, 2],
        ..ServerConfig::default()
    };
    c.shutdown_grace_secs = 1;
    c.registry = Some(RegistrySection {
        db: format!("sqlite:{}", dir.join("registry.sqlite").display()),
        listen: Some("127.0.0.1:0".parse()?),
    });
    c.apps = vec![AppConfig::registry("phone")];
    let server = Server::start(c).await.context("cannot start the server")?;
    let reg = server.registry().context("registry")?;
    for (u, p) in [
        ("alice", "alice-demo-password"),
        ("bob", "bob-demo-password"),
    ] {
        reg.sign_up(u, p)
            .await
            .with_context(|| format!("sign up {u}"))?;
    }
    Ok(server)
}

fn phone(
    user: &str,
    server: SocketAddr,
    registry: SocketAddr,
    sink: PathBuf,
    impair: Option<Impairment>,
    seed: u64,
) -> Result<PhoneHandle> {
    let mut cfg = PhoneConfig::new(user, format!("rtmfp://{server}/phone"), vec![server]);
    cfg.password = Some(format!("{user}-demo-password"));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let d = DriverConfig {
        registry: Some(format!("http://{registry}/reg.cgi")),
        source: SourceSpec::Test(TestSourceConfig {
            clock: nimbus_media::source::ClockDisplay::UtcTimeOfDay,
            ..TestSourceConfig::default()
        }),
        sink: SinkSpec::File(sink),
        impair,
        seed: Some(seed),
        ..DriverConfig::default()
    };
    driver::spawn(cfg, sock, d)
}

async fn expect(
    p: &mut PhoneHandle,
    what: &str,
    f: impl FnMut(&PhoneEvent) -> bool,
) -> Result<PhoneEvent> {
    match p.wait_for(STEP, f).await {
        Some(e) => Ok(e),
        None => bail!("timed out waiting for {what}"),
    }
}

/// Runs the call.
pub async fn run_call(o: &CallOptions) -> Result<CallResult> {
    std::fs::create_dir_all(&o.dir)?;
    let server = start_server(&o.dir).await?;
    let addr = server.local_addrs()[0];
    let reg = server.registry_addr().context("registry address")?;
    log(
        o.verbose,
        format!("server: rtmfp://{addr}/phone (policy: registry), registry http://{reg}/reg.cgi"),
    );
    let imp = |seed| o.impair.map(|i| Impairment { seed, ..i });
    let mut alice = phone(
        "alice",
        addr,
        reg,
        o.dir.join("alice-received.flv"),
        imp(11),
        1,
    )?;
    let mut bob = phone("bob", addr, reg, o.dir.join("bob-received.flv"), imp(12), 2)?;
    for (n, p) in [("alice", &mut alice), ("bob", &mut bob)] {
        match expect(p, "login", |e| {
            matches!(
                e,
                PhoneEvent::LoggedIn { .. } | PhoneEvent::LoginFailed { retry_in: None, .. }
            )
        })
        .await?
        {
            PhoneEvent::LoggedIn { peer_id, .. } => log(
                o.verbose,
                format!("{n} logged in, peer ID {}…", &peer_id[..16]),
            ),
            e => bail!("{n} could not log in: {e:?}"),
        }
    }
    // the reg.cgi registrations (refreshed every 30 minutes by the phones)
    let mut registered = true;
    for (n, p) in [("alice", &mut alice), ("bob", &mut bob)] {
        let e = p
            .wait_for(STEP, |e| {
                matches!(e, PhoneEvent::Notice(t) if t.starts_with("registered as") || t.starts_with("registry registration failed"))
            })
            .await;
        match e {
            Some(PhoneEvent::Notice(t)) if t.starts_with("registered as") => {
                log(o.verbose, format!("{n} {t} (reg.cgi)"))
            }
            e => {
                registered = false;
                log(o.verbose, format!("{n}: reg.cgi registration: {e:?}"));
            }
        }
    }
    let listed = server
        .registry()
        .context("registry")?
        .lookup("bob")
        .await?
        .is_some_and(|p| p.peer_id == bob.peer_id);
    registered &= listed;
    let t_call = Instant::now();
    alice.send(Command::Call("bob".into()));
    log(o.verbose, "alice calls bob");
    let e = expect(&mut bob, "the invite", |e| {
        matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
    })
    .await?;
    if let PhoneEvent::Call(CallEvent::Incoming { from_name, .. }) = e {
        log(
            o.verbose,
            format!("bob's phone rings: {from_name} is calling; bob accepts"),
        );
    }
    bob.send(Command::Accept);
    expect(&mut alice, "the accept", |e| {
        matches!(
            e,
            PhoneEvent::Call(CallEvent::Accepted) | PhoneEvent::Call(CallEvent::Ended)
        )
    })
    .await
    .and_then(|e| match e {
        PhoneEvent::Call(CallEvent::Accepted) => Ok(()),
        e => bail!("the call did not go through: {e:?}"),
    })?;
    let t_accepted = Instant::now();
    let setup_ms = (t_accepted - t_call).as_secs_f64() * 1000.0;
    log(o.verbose, format!("call established in {setup_ms:.0} ms"));
    // first frame at alice
    let mut first_frame_ms = f64::NAN;
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if let Some(s) = alice.status().await {
            if s.received.video_frames > 0 {
                first_frame_ms = (Instant::now() - t_call).as_secs_f64() * 1000.0;
                log(
                    o.verbose,
                    format!(
                        "media path: {}{}",
                        s.path.as_deref().unwrap_or("?"),
                        s.peer_address
                            .as_deref()
                            .map(|a| format!(" ({a})"))
                            .unwrap_or_default()
                    ),
                );
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // chat, spread over the call
    let total = nimbus_phone::cli::seconds(o.seconds).max(Duration::from_millis(500));
    let lines = o.chat_lines;
    let mut chat_at_alice = Vec::new();
    let mut chat_at_bob = Vec::new();
    let end = t_accepted + total;
    let mut next_chat = 0usize;
    while Instant::now() < end {
        if next_chat < lines {
            let due = t_accepted + total.mul_f64((next_chat as f64 + 0.5) / lines as f64);
            if Instant::now() >= due {
                alice.send(Command::Say(format!("hello bob, line {}", next_chat + 1)));
                bob.send(Command::Say(format!("hi alice, line {}", next_chat + 1)));
                next_chat += 1;
            }
        }
        drain_chat(&mut alice, &mut chat_at_alice, o.verbose, "alice");
        drain_chat(&mut bob, &mut chat_at_bob, o.verbose, "bob");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sa = alice.status().await.context("alice status")?;
    let sb = bob.status().await.context("bob status")?;
    let direct = sa.path.as_deref() == Some("direct") && sb.path.as_deref() == Some("direct");
    alice.send(Command::Hangup);
    log(o.verbose, "alice hangs up");
    for (n, p) in [("alice", &mut alice), ("bob", &mut bob)] {
        let mut chats = Vec::new();
        let e = p
            .wait_for(STEP, |e| {
                if let PhoneEvent::Chat {
                    text, local: false, ..
                } = e
                {
                    chats.push(text.clone());
                }
                matches!(e, PhoneEvent::Call(CallEvent::Ended))
            })
            .await;
        if n == "alice" {
            chat_at_alice.extend(chats);
        } else {
            chat_at_bob.extend(chats);
        }
        if e.is_none() {
            bail!("{n}: the call did not end");
        }
    }
    log(o.verbose, "call ended on both phones");
    let alice = alice.quit().await?;
    let bob = bob.quit().await?;
    let reg = server.registry().context("registry")?;
    let unregistered = reg.lookup("alice").await?.is_none() && reg.lookup("bob").await?.is_none();
    log(
        o.verbose,
        format!(
            "phones quit; {} in the registry",
            if unregistered {
                "no longer listed"
            } else {
                "STILL listed"
            }
        ),
    );
    let m = server.metrics();
    let server_media_bytes = m.media_bytes_relayed_total.load(Ordering::Relaxed);
    let server_media_messages = m.media_messages_relayed_total.load(Ordering::Relaxed);
    server.shutdown().await;
    Ok(CallResult {
        alice,
        bob,
        direct,
        server_media_bytes,
        server_media_messages,
        setup_ms,
        first_frame_ms,
        chat_at_alice,
        chat_at_bob,
        registered,
        unregistered,
    })
}

fn drain_chat(p: &mut PhoneHandle, into: &mut Vec<String>, verbose: bool, who: &str) {
    while let Ok(e) = p.events.try_recv() {
        if let PhoneEvent::Chat {
            from,
            text,
            local: false,
            ..
        } = &e
        {
            log(verbose, format!("  {who} reads  {from}: {text}"));
            into.push(text.clone());
        }
    }
}
