//! End-to-end tests of `nimbus server` over loopback UDP with Flash-profile
//! clients: connect policy, calls and relays, introductions, stream relay,
//! metrics and shutdown.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{loopback_config, pump, start, Client};
use flash_amf::Value;
use nimbus_server::{AppConfig, Server, ServerConfig};
use rtmfp::Event;
use rtmfp_flash::message::NcEvent;
use rtmfp_flash::Epd;

const T: Duration = Duration::from_secs(10);

fn config(shards: usize) -> ServerConfig {
    let mut c = loopback_config(shards);
    c.shutdown_grace_secs = 2;
    c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    c
}

fn url(server: SocketAddr, path: &str) -> String {
    format!("rtmfp://{server}/{path}")
}

fn connect_all(clients: &mut [&mut Client]) {
    common::connect_all(clients, T);
}

/// A client with seed `seed`, connecting to `rtmfp://addr/path`.
fn client_at(addr: SocketAddr, path: &str, seed: u64) -> Client {
    let mut c = Client::new(seed);
    c.connect(&url(addr, path), addr, vec![]);
    c
}

/// The server's metrics page.
fn metrics_page(server: &Server) -> String {
    http_get(server.metrics_addr().unwrap(), "/metrics")
}

/// Creates a NetStream on `c`, waits for the server's answer; its number.
fn new_stream(c: &mut Client) -> u32 {
    let t = c.with_nc(|nc, ep, now| nc.create_stream(ep, now).unwrap());
    assert!(pump(&mut [&mut *c], T, |c| created(c[0], t).is_some()));
    created(c, t).unwrap()
}

/// The stream the server created for transaction `t`.
fn created(c: &Client, t: f64) -> Option<u32> {
    c.nc_events.iter().find_map(|e| match e {
        NcEvent::StreamCreated {
            transaction_id,
            stream,
        } if *transaction_id == t => Some(*stream),
        _ => None,
    })
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn connect_calls_relay_and_lookup() {
    let (rt, server, addr) = start(config(2));
    let mut alice = client_at(addr, "app?user=alice", 1);
    let mut bob = client_at(addr, "app?user=bob", 2);
    connect_all(&mut [&mut alice, &mut bob]);

    // the server told the clients their keepalive periods (RFC 7425 §5.3.4)
    assert!(alice.nc_events.iter().any(|e| matches!(
        e,
        NcEvent::UserControl {
            event: rtmfp_flash::message::UserControl::SetKeepalive { .. },
            ..
        }
    )));

    // lookup by name
    let t = alice.call("lookup", vec!["BOB".into()]);
    let t2 = alice.call("lookup", vec!["nobody".into()]);
    assert!(pump(&mut [&mut alice, &mut bob], T, |c| c[0]
        .call_result(t)
        .is_some()
        && c[0].call_result(t2).is_some()));
    let (ok, v) = alice.call_result(t).unwrap();
    assert!(ok);
    assert_eq!(
        v.last().and_then(Value::as_str),
        Some(bob.peer_id.to_hex().as_str())
    );
    assert_eq!(alice.call_result(t2).unwrap().1.last(), Some(&Value::Null));

    // Cirrus relay: relay(target, args) -> onRelay(sender, args)
    let bob_id = bob.peer_id.to_hex();
    let t = alice.call(
        "relay",
        vec![bob_id.as_str().into(), "invite".into(), 7.0.into()],
    );
    assert!(pump(&mut [&mut alice, &mut bob], T, |c| !c[1]
        .commands("onRelay")
        .is_empty()
        && c[0].call_result(t).is_some()));
    let args = &bob.commands("onRelay")[0];
    assert_eq!(args[0].as_str(), Some(alice.peer_id.to_hex().as_str()));
    assert_eq!(args[1].as_str(), Some("invite"));
    assert_eq!(args[2].as_f64(), Some(7.0));
    assert!(alice.call_result(t).unwrap().0);

    // relay to a peer that is not connected: an error for the sender
    let t = alice.call("relay", vec!["00".repeat(32).into(), "x".into()]);
    assert!(pump(&mut [&mut alice], T, |c| c[0]
        .call_result(t)
        .is_some()));
    assert!(!alice.call_result(t).unwrap().0);

    // message a user by name
    let t = bob.call("sendToUser", vec!["alice".into(), "hi".into()]);
    assert!(pump(&mut [&mut alice, &mut bob], T, |c| !c[0]
        .commands("onMessage")
        .is_empty()
        && c[1].call_result(t).is_some()));
    let args = &alice.commands("onMessage")[0];
    assert_eq!(args[0].as_str(), Some("bob"));
    assert_eq!(args[1].as_str(), Some("hi"));

    // unknown method
    let t = bob.call("noSuchMethod", vec![]);
    assert!(pump(&mut [&mut bob], T, |c| c[0].call_result(t).is_some()));
    assert!(!bob.call_result(t).unwrap().0);

    // a second client cannot take a connected user's name
    let mut mallory = client_at(addr, "app?user=Alice", 3);
    assert!(pump(&mut [&mut mallory], T, |c| c[0]
        .connect_failed()
        .is_some()));
    assert!(mallory.connect_failed().unwrap().contains("Rejected"));

    let m = metrics_page(&server);
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert_eq!(metric(&m, "nimbus_connections"), 2);
    assert!(metric(&m, "nimbus_relays_total") >= 2);
    assert_eq!(metric(&m, "nimbus_relays_failed_total"), 1);
    assert_eq!(metric(&m, "nimbus_connects_rejected_total"), 1);

    // graceful shutdown closes the sessions: the clients are told
    rt.block_on(server.shutdown());
    assert!(pump(&mut [&mut alice, &mut bob], T, |c| c
        .iter()
        .all(|c| c.closed())));
}

#[test]
fn policies_refuse_with_a_description() {
    let mut c = config(1);
    c.apps = vec![
        AppConfig::developer_key("cirrus", ["0123456789abcdef01234567"]),
        AppConfig::token("secure", "a-secret-of-enough-length"),
    ];
    let (rt, server, addr) = start(c);

    let mut good = client_at(addr, "0123456789abcdef01234567", 10);
    let mut bad = Client::new(11);
    bad.connect(&url(addr, "cirrus"), addr, vec!["wrong-key".into()]);
    let mut unknown = client_at(addr, "elsewhere", 12);
    let token = nimbus_server::policy::make_token(
        "a-secret-of-enough-length",
        "secure",
        "carol",
        u64::MAX / 2,
    );
    let mut tok = Client::new(13);
    tok.connect(&url(addr, "secure"), addr, vec![token.as_str().into()]);
    assert!(pump(
        &mut [&mut good, &mut bad, &mut unknown, &mut tok],
        T,
        |c| c[0].connected()
            && c[1].connect_failed().is_some()
            && c[2].connect_failed().is_some()
            && c[3].connected()
    ));
    let why = bad.connect_failed().unwrap();
    assert!(
        why.contains("NetConnection.Connect.Rejected") && why.contains("developer key"),
        "{why}"
    );
    let why = unknown.connect_failed().unwrap();
    assert!(why.contains("unknown application"), "{why}");
    // the rejected session is closed by the server after the answer
    assert!(pump(&mut [&mut bad], T, |c| c[0].closed()));
    rt.block_on(server.shutdown());
}

#[test]
fn introduction_opens_a_direct_session() {
    let (rt, server, addr) = start(config(2));
    let mut a = client_at(addr, "p2p", 21);
    let mut b = client_at(addr, "p2p", 22);
    connect_all(&mut [&mut a, &mut b]);

    // a opens a session to b's peer ID with the server as the only candidate
    let epd = Epd::peer(b.peer_id).encode();
    let sid = a.ep.connect(Instant::now(), &epd, &[addr]).unwrap();
    let b_addr = b.addr();
    assert!(
        pump(&mut [&mut a, &mut b], T, |c| {
            c[0].events.iter().any(|e| matches!(e, Event::SessionOpened { session, peer, .. } if *session == sid && *peer == b_addr))
        }),
        "a: {:?}\nb: {:?}",
        a.events,
        b.events
    );
    a.send_direct(sid, Bytes::from_static(b"hello, bob"));
    assert!(
        pump(&mut [&mut a, &mut b], T, |c| !c[1].readable().is_empty()),
        "b: {:?}",
        b.events
    );
    let (s, f) = b.readable()[0];
    let msg = b.ep.read(Instant::now(), s, f).unwrap();
    assert_eq!(&msg.data[..], b"hello, bob");

    let m = metrics_page(&server);
    assert!(metric(&m, "nimbus_introductions_total") >= 1, "{m}");
    rt.block_on(server.shutdown());
}

fn video(key: bool, n: u8) -> Bytes {
    Bytes::from(vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, n])
}

#[test]
fn stream_relay_one_publisher_many_players() {
    let (rt, server, addr) = start(config(2));
    let mut publisher = client_at(addr, "live", 31);
    let mut early = client_at(addr, "live", 32);
    let mut late = client_at(addr, "live", 33);
    connect_all(&mut [&mut publisher, &mut early, &mut late]);

    let ps = new_stream(&mut publisher);
    let es = new_stream(&mut early);
    // a player may come before the publisher
    early.with_nc(|nc, ep, now| nc.play(ep, now, es, "cam").unwrap());
    assert!(pump(&mut [&mut early], T, |c| c[0]
        .has_status(es, "NetStream.Play.Start")));
    publisher.with_nc(|nc, ep, now| nc.publish(ep, now, ps, "cam").unwrap());
    assert!(pump(&mut [&mut publisher, &mut early], T, |c| c[0]
        .has_status(ps, "NetStream.Publish.Start")
        && c[1].has_status(es, "NetStream.Play.PublishNotify")));

    // AVC sequence header, AAC config, then frames
    let seq = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e]);
    let aac = Bytes::from_static(&[0xaf, 0, 0x12, 0x10]);
    publisher.with_nc(|nc, ep, now| {
        nc.send_video(ep, now, ps, 0, seq.clone()).unwrap();
        nc.send_audio(ep, now, ps, 0, aac.clone()).unwrap();
        nc.send_video(ep, now, ps, 0, video(true, 1)).unwrap();
        nc.send_video(ep, now, ps, 40, video(false, 2)).unwrap();
        nc.send_audio(ep, now, ps, 40, Bytes::from_static(&[0xaf, 1, 9]))
            .unwrap();
    });
    let videos = |c: &Client, s: u32| -> Vec<Bytes> {
        c.nc_events
            .iter()
            .filter_map(|e| match e {
                NcEvent::Video {
                    stream, payload, ..
                } if *stream == s => Some(payload.clone()),
                _ => None,
            })
            .collect()
    };
    assert!(pump(&mut [&mut publisher, &mut early], T, |c| videos(
        c[1], es
    )
    .len()
        >= 3));
    assert_eq!(
        videos(&early, es),
        vec![seq.clone(), video(true, 1), video(false, 2)]
    );

    // a late joiner gets the cached headers, then starts at the next keyframe
    let ls = new_stream(&mut late);
    late.with_nc(|nc, ep, now| nc.play(ep, now, ls, "cam").unwrap());
    assert!(pump(&mut [&mut publisher, &mut early, &mut late], T, |c| c
        [2]
    .has_status(ls, "NetStream.Play.Start")
        && !videos(c[2], ls).is_empty()));
    publisher.with_nc(|nc, ep, now| {
        nc.send_video(ep, now, ps, 80, video(false, 3)).unwrap();
        nc.send_video(ep, now, ps, 120, video(true, 4)).unwrap();
        nc.send_video(ep, now, ps, 160, video(false, 5)).unwrap();
    });
    assert!(pump(
        &mut [&mut publisher, &mut early, &mut late],
        T,
        |c| videos(c[2], ls).len() >= 3 && videos(c[1], es).len() >= 6
    ));
    assert_eq!(
        videos(&late, ls),
        vec![seq, video(true, 4), video(false, 5)]
    );

    // a second publisher of the same name is refused
    let s2 = new_stream(&mut late);
    late.with_nc(|nc, ep, now| nc.publish(ep, now, s2, "cam").unwrap());
    assert!(pump(&mut [&mut late], T, |c| c[0]
        .has_status(s2, "NetStream.Publish.BadName")));

    // unpublish: the players are told
    publisher.with_nc(|nc, ep, now| nc.close_stream(ep, now, ps).unwrap());
    assert!(pump(&mut [&mut publisher, &mut early, &mut late], T, |c| c
        [1]
    .has_status(es, "NetStream.Play.UnpublishNotify")
        && c[2].has_status(ls, "NetStream.Play.UnpublishNotify")));
    let m = metrics_page(&server);
    assert_eq!(metric(&m, "nimbus_streams_published"), 0, "{m}");
    assert!(
        metric(&m, "nimbus_media_messages_relayed_total") >= 9,
        "{m}"
    );
    rt.block_on(server.shutdown());
}

#[test]
fn registry_policy_authenticates_and_binds() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(1);
    c.registry = Some(nimbus_server::config::RegistrySection {
        db: format!("sqlite:{}", dir.path().join("r.db").display()),
        listen: None,
    });
    c.apps = vec![AppConfig::registry("phone")];
    let (rt, server, addr) = start(c);
    let reg = server.registry().unwrap().clone();
    rt.block_on(reg.sign_up("dave", "correct horse battery"))
        .unwrap();

    let mut ok = Client::new(41);
    ok.connect(
        &url(addr, "phone"),
        addr,
        vec!["dave".into(), "correct horse battery".into()],
    );
    let mut bad = Client::new(42);
    bad.connect(
        &url(addr, "phone"),
        addr,
        vec!["dave".into(), "wrong".into()],
    );
    assert!(pump(&mut [&mut ok, &mut bad], T, |c| c[0].connected()
        && c[1].connect_failed().is_some()));
    assert!(bad.connect_failed().unwrap().contains("wrong password"));
    // the registry now maps dave to the session's peer ID
    let id = ok.peer_id.to_hex();
    let deadline = Instant::now() + T;
    loop {
        let p = rt.block_on(reg.lookup("dave")).unwrap();
        if p.as_ref().is_some_and(|p| p.peer_id == id) {
            break;
        }
        assert!(Instant::now() < deadline, "not bound: {p:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(server.shutdown());
}

#[test]
fn short_ihellos_are_answered_within_the_amplification_limit() {
    let (rt, server, addr) = start(config(1));
    // librtmfp's EPD is the bare app name: a 36-byte IHello (64 bytes on
    // the wire) is answered at once with a 148-byte RHello (176 on the
    // wire), within the factor of 3
    let mut c = Client::new(61);
    let epd = Epd::server(&b"a"[..]).encode();
    let sid = c.ep.connect(Instant::now(), &epd, &[addr]).unwrap();
    assert!(pump(&mut [&mut c], T, |c| c[0].events.iter().any(
        |e| matches!(e, Event::SessionOpened { session, .. } if *session == sid)
    )));
    // nothing was withheld (the shards report their engine counters every
    // second)
    std::thread::sleep(Duration::from_millis(1500));
    let m = metrics_page(&server);
    assert_eq!(metric(&m, "nimbus_amplification_drops_total"), 0);
    assert!(
        metric(&m, "nimbus_keyings_done_total") >= 1,
        "keyed on a worker"
    );
    rt.block_on(server.shutdown());
}

#[test]
fn one_identity_on_every_shard() {
    let (rt, server, addr) = start(config(4));
    let mut clients: Vec<Client> = (0..24)
        .map(|i| client_at(addr, &format!("app?user=id{i}"), 900 + i))
        .collect();
    connect_all(&mut clients.iter_mut().collect::<Vec<_>>());
    let mut shards = std::collections::BTreeSet::new();
    let mut certificates = std::collections::BTreeSet::new();
    for c in &clients {
        shards.insert(c.server_session_id.map(|id| id >> 30));
        let s = c.nc.as_ref().unwrap().session();
        certificates.insert(c.ep.session_info(s).unwrap().far_certificate.to_vec());
    }
    assert!(shards.len() > 1, "the clients landed on one shard only");
    assert_eq!(certificates.len(), 1, "one certificate, whatever the shard");
    rt.block_on(server.shutdown());
}

#[test]
fn a_thousand_clients_behind_one_address_connect_with_the_default_configuration() {
    let mut config = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..ServerConfig::default()
    };
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let (rt, server, addr) = start(config);
    // one carrier-grade NAT: every client from 127.0.0.1
    let started = Instant::now();
    let mut clients: Vec<Client> = (0..1000)
        .map(|i| client_at(addr, &format!("app?user=nat{i}"), 10_000 + i))
        .collect();
    let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
    assert!(
        pump(&mut refs, Duration::from_secs(60), |cs| cs
            .iter()
            .all(|c| c.connected())),
        "{} of 1000 connected",
        refs.iter().filter(|c| c.connected()).count()
    );
    // the figure (2 s on an idle machine) is `nimbus bench server
    // --source-addresses 1`'s; here: all admitted, none refused
    eprintln!(
        "1000 clients from one address connected in {:?}",
        started.elapsed()
    );
    let m = metrics_page(&server);
    assert_eq!(metric(&m, "nimbus_limit_refusals_total"), 0);
    assert_eq!(metric(&m, "nimbus_handshake_rate_drops_total"), 0);
    assert_eq!(metric(&m, "nimbus_sessions"), 1000);
    rt.block_on(server.shutdown());
}

#[test]
fn a_client_that_changes_address_keeps_its_session_across_shards() {
    let (rt, server, addr) = start(config(4));
    let mut c = client_at(addr, "app?user=mover", 71);
    connect_all(&mut [&mut c]);
    let first = c.addr();
    let mut rerouted = 0;
    for round in 0..8 {
        // a new socket: the client's address (port) changes, the kernel
        // may now deliver its datagrams to another shard's socket
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        c.sock = s;
        // the server moves the session once it has verified the new
        // address (RFC 7016 mobility); ask until it reports it
        let want = c.addr().to_string();
        let deadline = Instant::now() + T;
        loop {
            let t = c.call("whoami", vec![]);
            assert!(
                pump(&mut [&mut c], T, |c| c[0].call_result(t).is_some()),
                "round {round}: no answer after the address change"
            );
            let (ok, v) = c.call_result(t).unwrap();
            assert!(ok);
            let seen = v
                .last()
                .and_then(|o| o.get("address"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if seen.as_deref() == Some(want.as_str()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: server still sees {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rerouted = server
            .metrics()
            .datagrams_rerouted_total
            .load(std::sync::atomic::Ordering::Relaxed);
        if rerouted > 0 && round >= 2 {
            break;
        }
    }
    assert_ne!(c.addr(), first);
    assert!(rerouted > 0, "no datagram ever reached another shard");
    rt.block_on(server.shutdown());
}

#[test]
fn garbage_datagrams_do_not_disturb_the_server() {
    use rand_core::{RngCore, SeedableRng};
    let (rt, server, addr) = start(config(2));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..5_000 {
        let len = (rng.next_u32() % 1500) as usize;
        let mut d = vec![0u8; len];
        rng.fill_bytes(&mut d);
        // some look like startup packets (session ID 0 after unscrambling)
        if i % 3 == 0 && len >= 12 {
            let (w1, w2) = (d[4..8].to_vec(), d[8..12].to_vec());
            for k in 0..4 {
                d[k] = w1[k] ^ w2[k];
            }
        }
        let _ = junk.send_to(&d, addr);
    }
    let mut c = client_at(addr, "app", 81);
    connect_all(&mut [&mut c]);
    let m = metrics_page(&server);
    assert!(
        metric(&m, "nimbus_datagrams_received_total") >= 1_000,
        "{m}"
    );
    // the shards' sockets count their system calls: a call moves one
    // datagram or more
    let recv_calls = metric(&m, "nimbus_recv_calls_total");
    assert!(
        (1..=metric(&m, "nimbus_datagrams_received_total")).contains(&recv_calls),
        "{m}"
    );
    let send_calls = metric(&m, "nimbus_send_calls_total");
    assert!(
        (1..=metric(&m, "nimbus_datagrams_sent_total")).contains(&send_calls),
        "{m}"
    );
    assert_eq!(metric(&m, "nimbus_sessions"), 1);
    rt.block_on(server.shutdown());
}
