//! Introduction across two real NATs: each client in its own network
//! namespace behind its own iptables MASQUERADE router, the server in a
//! third namespace that routes between the two routers' public sides.
//!
//! ```text
//!  ca 198.18.11.2 ─ nata (lan .11.1 | wan .1.2, MASQUERADE) ─┐
//!                                                             srv 198.18.1.1 / 198.18.2.1
//!  cb 198.18.12.2 ─ natb (lan .12.1 | wan .2.2, MASQUERADE) ─┘
//! ```
//!
//! The namespaces are `nimbus_testkit::netns::TwoNat`. Needs root, `ip` and
//! `iptables`; prints `SKIPPED:` and passes otherwise.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{connect_all, loopback_config, pump, runtime, Client};
use nimbus_server::Server;
use nimbus_testkit::netns::{in_netns, TwoNat};
use rtmfp::Event;
use rtmfp_flash::Epd;

const T: Duration = Duration::from_secs(15);

#[test]
fn clients_behind_two_nats_are_introduced_and_talk_directly() {
    let topo = match TwoNat::build("nb") {
        Ok(t) => t,
        Err(e) => {
            println!("SKIPPED: network namespaces with NAT are not available here ({e})");
            return;
        }
    };
    if std::env::var_os("NIMBUS_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
    let rt = runtime();
    let handle = rt.handle().clone();
    let server = in_netns(&topo.server, move || {
        let mut c = loopback_config(2);
        c.listen = vec!["198.18.1.1:0".parse().unwrap()];
        handle.block_on(Server::start(c)).unwrap()
    });
    let addr = server.local_addrs()[0];
    let mut a = in_netns(&topo.client_a, || {
        Client::bind("198.18.11.2:0".parse().unwrap(), 51)
    });
    let mut b = in_netns(&topo.client_b, || {
        Client::bind("198.18.12.2:0".parse().unwrap(), 52)
    });
    a.connect(&format!("rtmfp://{addr}/p2p"), addr, vec![]);
    b.connect(&format!("rtmfp://{addr}/p2p"), addr, vec![]);
    connect_all(&mut [&mut a, &mut b], T);

    // b opens a session to a's peer ID with only the server as candidate
    let epd = Epd::peer(a.peer_id).encode();
    let sid = b.ep.connect(Instant::now(), &epd, &[addr]).unwrap();
    assert!(
        pump(&mut [&mut a, &mut b], T, |c| c[1].events.iter().any(
            |e| matches!(e, Event::SessionOpened { session, .. } if *session == sid)
        )),
        "no direct session: a {:?} / b {:?}\na {:?}\nb {:?}",
        a.events,
        b.events,
        a.ep.stats(),
        b.ep.stats(),
    );
    let peer = b.ep.session_info(sid).unwrap().peer;
    // the direct session goes to a's NAT (its public side), not via the server
    assert_eq!(peer.ip().to_string(), "198.18.1.2", "direct path: {peer}");

    let payload = Bytes::from(vec![7u8; 50_000]);
    b.send_direct(sid, payload.clone());
    let mut got = Vec::new();
    assert!(pump(&mut [&mut a, &mut b], T, |c| {
        for (s, f) in c[0].readable() {
            while let Some(m) = c[0].ep.read(Instant::now(), s, f) {
                got.extend_from_slice(&m.data);
            }
        }
        got.len() >= payload.len()
    }));
    assert_eq!(got, payload);
    // the server relayed no media: the data went direct
    assert_eq!(
        server
            .metrics()
            .media_bytes_relayed_total
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    rt.block_on(server.shutdown());
}
