//! Whole calls between phones behind real NATs: each phone in its own
//! network namespace behind its own iptables MASQUERADE router, the
//! rendezvous server in the middle namespace that routes between the two
//! routers' public sides (`nimbus_testkit::netns::TwoNat`):
//!
//! ```text
//!  alice 198.18.11.2 ─ nat_a (wan 198.18.1.2) ─┐
//!                                              server 198.18.1.1 (routes)
//!  bob   198.18.12.2 ─ nat_b (wan 198.18.2.2) ─┘
//! ```
//!
//! * the call goes direct, NAT to NAT;
//! * the direct call survives alice's NAT changing its public address;
//! * with no path between the NATs, media falls back to the server's relay.
//!
//! Needs root, `ip`, `iptables` and `conntrack` (the address change test);
//! each test prints `SKIPPED:` and passes otherwise. Every wait has a
//! deadline; namespace names are unique per process and test.
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use nimbus_media::TestSourceConfig;
use nimbus_phone::call::Event as CallEvent;
use nimbus_phone::driver::{self, Command, DriverConfig, PhoneHandle, SinkSpec, SourceSpec};
use nimbus_phone::phone::{MediaCounters, MediaPath, PhoneConfig, PhoneEvent, PhoneStatus};
use nimbus_server::{Server, ServerConfig};
use nimbus_testkit::netns::{in_netns, TwoNat, TwoNatBuilder};
use tokio::time::Instant;

use common::{call, T};

/// Longest wait for one step.
/// Longest run of a whole test (after the topology is up).
const WHOLE: Duration = Duration::from_secs(120);

/// The namespaces, a runtime and the server running in the middle.
struct World {
    rt: tokio::runtime::Runtime,
    server: Server,
    addr: SocketAddr,
    // last: the namespaces go after everything that uses them
    topo: TwoNat,
}

/// Builds the topology and starts the server; `None` (after printing
/// SKIPPED) when namespaces are unavailable.
fn world(builder: TwoNatBuilder) -> Option<World> {
    let topo = match builder.build() {
        Ok(t) => t,
        Err(e) => {
            println!("SKIPPED: network namespaces with NAT are not available here ({e})");
            return None;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let server = in_netns(&topo.server, move || {
        let mut c = ServerConfig {
            listen: vec![SocketAddr::new(TwoNat::SERVER_A.into(), 0)],
            shards: 2,
            dh_groups: vec![2],
            ..ServerConfig::default()
        };
        c.shutdown_grace_secs = 1;
        handle.block_on(Server::start(c)).unwrap()
    });
    let addr = server.local_addrs()[0];
    Some(World {
        rt,
        server,
        addr,
        topo,
    })
}

impl World {
    /// A socket bound to `ip:0` in namespace `ns`.
    fn socket(&self, ns: &str, ip: IpAddr) -> UdpSocket {
        in_netns(ns, move || UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap())
    }

    fn relayed(&self) -> u64 {
        self.server
            .metrics()
            .media_bytes_relayed_total
            .load(Ordering::Relaxed)
    }

    /// Runs the async part of a test, bounded by [`WHOLE`].
    fn run(&self, test: impl std::future::Future<Output = ()>) {
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(WHOLE, test).await });
        assert!(r.is_ok(), "the test did not finish within {WHOLE:?}");
    }

    /// Stops the server, then deletes the namespaces.
    fn finish(self) {
        let World {
            rt, server, topo, ..
        } = self;
        rt.block_on(server.shutdown());
        drop(rt);
        drop(topo);
    }
}

/// Starts a phone (test source, no sink) on `sock`; call within the
/// runtime.
fn phone(
    user: &str,
    server: SocketAddr,
    sock: UdpSocket,
    seed: u64,
    direct_timeout: Option<Duration>,
) -> PhoneHandle {
    let mut cfg = PhoneConfig::new(user, format!("rtmfp://{server}/phone"), vec![server]);
    if let Some(d) = direct_timeout {
        cfg.direct_timeout = d;
    }
    let d = DriverConfig {
        source: SourceSpec::Test(TestSourceConfig::default()),
        sink: SinkSpec::None,
        seed: Some(seed),
        quit_grace: Duration::from_secs(1),
        ..DriverConfig::default()
    };
    driver::spawn(cfg, sock, d).unwrap()
}

/// Both statuses once each phone received at least `video` frames and
/// `audio` packets more than `base` (alice's, bob's) and `ok` holds for
/// both; panics after `within`.
async fn media_grows(
    alice: &PhoneHandle,
    bob: &PhoneHandle,
    base: (MediaCounters, MediaCounters),
    video: u64,
    audio: u64,
    within: Duration,
    ok: impl Fn(&PhoneStatus, &PhoneStatus) -> bool,
) -> (PhoneStatus, PhoneStatus) {
    let deadline = Instant::now() + within;
    loop {
        let a = alice.status().await.expect("alice ended");
        let b = bob.status().await.expect("bob ended");
        let grew = |s: &PhoneStatus, b: &MediaCounters| {
            s.received.video_frames >= b.video_frames + video
                && s.received.audio_packets >= b.audio_packets + audio
        };
        if grew(&a, &base.0) && grew(&b, &base.1) && ok(&a, &b) {
            return (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "media did not grow by {video} frames / {audio} packets from {base:?}:\nalice {a:?}\nbob {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn peer_ip(s: &PhoneStatus) -> Option<IpAddr> {
    s.peer_address
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.ip())
}

/// Alice says something; bob must see it.
async fn chat(from: &PhoneHandle, from_name: &str, to: &mut PhoneHandle, text: &str) {
    from.send(Command::Say(text.into()));
    let e = to
        .wait_for(T, |e| matches!(e, PhoneEvent::Chat { local: false, .. }))
        .await;
    assert!(
        matches!(&e, Some(PhoneEvent::Chat { from, text: t, .. }) if from == from_name && t == text),
        "{e:?}"
    );
}

/// Alice hangs up; the call ends on both sides.
async fn hang_up(mut alice: PhoneHandle, mut bob: PhoneHandle) {
    alice.send(Command::Hangup);
    for p in [&mut alice, &mut bob] {
        let e = p
            .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Ended)))
            .await;
        assert!(e.is_some(), "the call did not end");
    }
    let a = alice.status().await.unwrap();
    let b = bob.status().await.unwrap();
    assert_eq!(a.call_state, "idle", "{a:?}");
    assert_eq!(b.call_state, "idle", "{b:?}");
    for p in [alice, bob] {
        let r = tokio::time::timeout(T, p.quit()).await;
        assert!(matches!(r, Ok(Ok(_))), "quit: {r:?}");
    }
}

#[test]
fn call_between_two_nats_goes_direct() {
    let Some(w) = world(TwoNat::builder("pd")) else {
        return;
    };
    w.run(async {
        let sa = w.socket(&w.topo.client_a, TwoNat::CLIENT_A.into());
        let sb = w.socket(&w.topo.client_b, TwoNat::CLIENT_B.into());
        let mut alice = phone("alice", w.addr, sa, 11, None);
        let mut bob = phone("bob", w.addr, sb, 12, None);
        call(&mut alice, &mut bob).await;
        let zero = (MediaCounters::default(), MediaCounters::default());
        let (a, b) = media_grows(&alice, &bob, zero, 20, 50, T, |_, _| true).await;
        assert_eq!(a.path.as_deref(), Some("direct"), "{a:?}");
        assert_eq!(b.path.as_deref(), Some("direct"), "{b:?}");
        // each sees the other's NAT, from outside
        assert_eq!(peer_ip(&a), Some(TwoNat::WAN_B.into()), "{a:?}");
        assert_eq!(peer_ip(&b), Some(TwoNat::WAN_A.into()), "{b:?}");
        assert!(!a.relayed && !b.relayed);
        chat(&alice, "alice", &mut bob, "hello bob, through two NATs").await;
        assert_eq!(w.relayed(), 0, "the server relayed media");
        hang_up(alice, bob).await;
        assert_eq!(w.relayed(), 0, "the server relayed media");
    });
    w.finish();
}

/// Alice's router (a port-restricted MASQUERADE NAT) changes its public
/// address mid-call: it switches to SNAT onto a new address and forgets
/// its mappings (`conntrack -F`). Bob's router forwards its UDP to bob (a
/// port forward, as UPnP sets up: endpoint-independent filtering), so
/// alice's datagrams from her new address reach him; RTMFP mobility
/// (RFC 7016 §3.5.4.2) then moves bob's side of the session to it. (Were
/// bob's router filtering by remote address too, nothing from alice's new
/// address could reach him, and no protocol could move the session.)
#[test]
fn call_survives_an_address_change() {
    const NEW_WAN_A: &str = "198.18.1.3";
    let builder = TwoNat::builder("pm").hook(|t| {
        // bob's router: UDP to its public address goes to bob, same port
        // (MASQUERADE keeps bob's port: nothing else claims it)
        let bob = TwoNat::CLIENT_B.to_string();
        t.iptables(
            &t.nat_b,
            &[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                TwoNat::WAN_IF,
                "-p",
                "udp",
                "-j",
                "DNAT",
                "--to-destination",
                &bob,
            ],
        )?;
        t.iptables(
            &t.nat_b,
            &[
                "-I",
                "FORWARD",
                "1",
                "-i",
                TwoNat::WAN_IF,
                "-p",
                "udp",
                "-d",
                &bob,
                "-j",
                "ACCEPT",
            ],
        )?;
        // the conntrack tool must be there (checked now: skip, not fail)
        t.flush_conntrack(&t.nat_a)
    });
    let Some(w) = world(builder) else {
        return;
    };
    w.run(async {
        let sa = w.socket(&w.topo.client_a, TwoNat::CLIENT_A.into());
        let sb = w.socket(&w.topo.client_b, TwoNat::CLIENT_B.into());
        let bob_port = sb.local_addr().unwrap().port();
        let mut alice = phone("alice", w.addr, sa, 21, None);
        let mut bob = phone("bob", w.addr, sb, 22, None);
        call(&mut alice, &mut bob).await;
        let zero = (MediaCounters::default(), MediaCounters::default());
        let (a, b) = media_grows(&alice, &bob, zero, 20, 50, T, |a, b| {
            a.path.as_deref() == Some("direct") && b.path.as_deref() == Some("direct")
        })
        .await;
        let bob_public = SocketAddr::new(TwoNat::WAN_B.into(), bob_port).to_string();
        assert_eq!(
            a.peer_address.as_deref(),
            Some(bob_public.as_str()),
            "bob's router did not keep his port: the port forward misses ({a:?})"
        );
        assert_eq!(peer_ip(&b), Some(TwoNat::WAN_A.into()), "{b:?}");
        let old = b.peer_address.clone();

        // alice's router moves to a new public address
        let t = &w.topo;
        t.add_address(&t.nat_a, TwoNat::WAN_IF, &format!("{NEW_WAN_A}/24"))
            .unwrap();
        t.iptables(
            &t.nat_a,
            &[
                "-t",
                "nat",
                "-I",
                "POSTROUTING",
                "1",
                "-o",
                TwoNat::WAN_IF,
                "-j",
                "SNAT",
                "--to-source",
                NEW_WAN_A,
            ],
        )
        .unwrap();
        t.flush_conntrack(&t.nat_a).unwrap();
        let changed = Instant::now();

        // media keeps flowing both ways, and bob's session follows alice
        let new_ip: IpAddr = NEW_WAN_A.parse().unwrap();
        let (a2, b2) = media_grows(
            &alice,
            &bob,
            (a.received, b.received),
            45,
            150,
            Duration::from_secs(20),
            |a, b| {
                peer_ip(b) == Some(new_ip)
                    && a.path.as_deref() == Some("direct")
                    && b.path.as_deref() == Some("direct")
            },
        )
        .await;
        println!(
            "address change {old:?} -> {:?}: media growing again after {:?}",
            b2.peer_address,
            changed.elapsed()
        );
        assert_eq!(a2.peer_address.as_deref(), Some(bob_public.as_str()));
        // bob was told, too, and the session moved: it was not lost and
        // reopened
        let mut before = Vec::new();
        let e = bob
            .wait_for(Duration::from_secs(1), |e| {
                let hit = matches!(e, PhoneEvent::Path(MediaPath::Direct(a)) if a.ip() == new_ip);
                if !hit {
                    before.push(e.clone());
                }
                hit
            })
            .await;
        assert!(
            e.is_some(),
            "bob got no Path(Direct({NEW_WAN_A}:…)) event: {before:?}"
        );
        assert!(
            !before.iter().any(|e| matches!(
                e,
                PhoneEvent::Path(MediaPath::Connecting | MediaPath::Relay)
            )),
            "the direct session was lost, not moved: {before:?}"
        );
        assert_eq!(w.relayed(), 0, "the server relayed media");
        hang_up(alice, bob).await;
    });
    w.finish();
}

/// The server's namespace (the only router between the two NATs) drops
/// everything between them: no direct path, but both reach the server.
#[test]
fn call_without_a_direct_path_falls_back_to_the_relay() {
    let builder = TwoNat::builder("pr").hook(|t| {
        for (i, o) in [
            (TwoNat::SERVER_IF_A, TwoNat::SERVER_IF_B),
            (TwoNat::SERVER_IF_B, TwoNat::SERVER_IF_A),
        ] {
            t.iptables(
                &t.server,
                &["-A", "FORWARD", "-i", i, "-o", o, "-j", "DROP"],
            )?;
        }
        Ok(())
    });
    let Some(w) = world(builder) else {
        return;
    };
    w.run(async {
        let sa = w.socket(&w.topo.client_a, TwoNat::CLIENT_A.into());
        let sb = w.socket(&w.topo.client_b, TwoNat::CLIENT_B.into());
        let direct_timeout = Some(Duration::from_secs(2));
        let mut alice = phone("alice", w.addr, sa, 31, direct_timeout);
        let mut bob = phone("bob", w.addr, sb, 32, direct_timeout);
        call(&mut alice, &mut bob).await;
        let accepted = Instant::now();
        for p in [&mut alice, &mut bob] {
            let e = p
                .wait_for(T, |e| {
                    matches!(e, PhoneEvent::Path(MediaPath::Relay | MediaPath::Direct(_)))
                })
                .await;
            assert_eq!(e, Some(PhoneEvent::Path(MediaPath::Relay)));
        }
        assert!(
            accepted.elapsed() >= Duration::from_millis(1500),
            "relay chosen before direct_timeout: {:?}",
            accepted.elapsed()
        );
        let zero = (MediaCounters::default(), MediaCounters::default());
        let (a, b) = media_grows(&alice, &bob, zero, 20, 50, T, |_, _| true).await;
        for s in [&a, &b] {
            assert_eq!(s.path.as_deref(), Some("relay"), "{s:?}");
            assert!(s.relayed, "{s:?}");
            assert_eq!(s.peer_address, None, "{s:?}");
        }
        chat(&alice, "alice", &mut bob, "hello bob, via the server").await;
        chat(&bob, "bob", &mut alice, "hi alice, via the server").await;
        assert!(w.relayed() > 0, "the server relayed nothing");
        hang_up(alice, bob).await;
    });
    w.finish();
}
