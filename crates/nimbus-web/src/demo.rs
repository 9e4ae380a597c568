//! `nimbus demo --web`: the demo's rendezvous server (with its registry)
//! and two web phones, alice and bob, each with its page. Both log in at
//! start; alice calls bob, bob answers. Open either printed URL to watch
//! the call live; while a phone has no page, the test source (colour bars,
//! the time of day and a tone) stands in for its camera and microphone,
//! so the other page shows it. Ctrl-C ends the demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use nimbus_server::config::RegistrySection;
use nimbus_server::{AppConfig, Policy, Server, ServerConfig};
use tokio::sync::broadcast::error::RecvError;

use crate::app::{WebCommand, WebConfig, WebPhone};
use crate::cli::{open_browser, terminal_line, web_addr};
use crate::protocol::PhoneMsg;

/// Settings of the web demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Alice's page (bob's is on the next port); port 0 picks free ports.
    pub web: SocketAddr,
    /// Where the registry database goes.
    pub dir: PathBuf,
    /// Open both pages in the system browser.
    pub open: bool,
    /// Print the call log of both phones.
    pub verbose: bool,
}

/// A running web demo.
#[derive(Debug)]
pub struct Demo {
    /// The rendezvous server.
    pub server: Server,
    /// Alice's web phone (the caller).
    pub alice: WebPhone,
    /// Bob's web phone (answers every call).
    pub bob: WebPhone,
}

/// The demo users' passwords (the registry wants them).
fn password(user: &str) -> String {
    format!("{user}-demo-password")
}

/// Starts the server, the registry and both web phones; alice calls bob as
/// soon as both are logged in.
///
/// # Errors
/// When something cannot be bound or started.
pub async fn start(o: &DemoOptions) -> anyhow::Result<Demo> {
    std::fs::create_dir_all(&o.dir)?;
    let mut c = ServerConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        shards: 2,
        dh_groups: vec![14, 2],
        ..ServerConfig::default()
    };
    c.shutdown_grace_secs = 1;
    c.registry = Some(RegistrySection {
        db: format!("sqlite:{}", o.dir.join("registry.sqlite").display()),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    });
    c.apps = vec![AppConfig {
        name: "phone".into(),
        policy: Policy::Registry,
        ..AppConfig::default()
    }];
    let server = Server::start(c).await.context("cannot start the server")?;
    let reg = server.registry().context("registry")?;
    for u in ["alice", "bob"] {
        // a second run on the same directory finds them there
        let _ = reg.sign_up(u, &password(u)).await;
    }
    let addr = server.local_addrs()[0];
    let registry = server
        .registry_addr()
        .map(|a| format!("http://{a}/reg.cgi"));
    let url = format!("rtmfp://{addr}/phone");
    let phone = |user: &str, web: SocketAddr, answer: bool| {
        let mut cfg = WebConfig::new(url.clone(), vec![addr]);
        cfg.web = web;
        cfg.registry = registry.clone();
        cfg.password = Some(password(user));
        cfg.answer = answer;
        cfg.phone_bind = SocketAddr::from(([127, 0, 0, 1], 0));
        cfg
    };
    let bob_web = if o.web.port() == 0 {
        o.web
    } else {
        SocketAddr::new(o.web.ip(), o.web.port().wrapping_add(1).max(1))
    };
    let alice = WebPhone::start(phone("alice", o.web, false), Some("alice".into())).await?;
    let bob = WebPhone::start(phone("bob", bob_web, true), Some("bob".into())).await?;
    // alice calls once both are logged in
    let (mut a, mut b) = (alice.observe(), bob.observe());
    let logged_in = |m: &PhoneMsg| matches!(m, PhoneMsg::State(s) if s.logged_in);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for (name, rx, phone) in [("alice", &mut a, &alice), ("bob", &mut b, &bob)] {
        loop {
            if phone.snapshot().await.is_some_and(|s| s.state.logged_in) {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(m)) if logged_in(&m) => break,
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) | Err(_) => bail!("{name} could not log in"),
            }
        }
    }
    alice.command(WebCommand::Call("bob".into())).await;
    Ok(Demo { server, alice, bob })
}

/// Runs `nimbus demo --web` until Ctrl-C.
pub async fn run(o: DemoOptions) -> anyhow::Result<()> {
    println!(
        "nimbus demo --web: a rendezvous server with its registry, and two web phones on 127.0.0.1"
    );
    let demo = start(&o).await?;
    println!("alice: {}", demo.alice.url());
    println!("bob:   {}", demo.bob.url());
    println!("alice calls bob; open a page to watch (the test source stands in for a page that is not open); Ctrl-C ends the demo");
    if o.open {
        open_browser(demo.alice.url());
        open_browser(demo.bob.url());
    }
    let (mut a, mut b) = (demo.alice.observe(), demo.bob.observe());
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        let (who, m) = tokio::select! {
            m = a.recv() => ("alice", m),
            m = b.recv() => ("bob", m),
            _ = &mut ctrl_c => break,
        };
        match m {
            Ok(m) => {
                if let (true, Some(l)) = (o.verbose, terminal_line(&m)) {
                    println!("{who:>5} {l}");
                }
            }
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
    demo.alice.shutdown().await;
    demo.bob.shutdown().await;
    demo.server.shutdown().await;
    Ok(())
}

/// The options of `nimbus demo --web ADDR`.
///
/// # Errors
/// A bad address.
pub async fn options(web: &str, dir: PathBuf, open: bool) -> anyhow::Result<DemoOptions> {
    Ok(DemoOptions {
        web: web_addr(web).await?,
        dir,
        open,
        verbose: true,
    })
}
