//! End-to-end: two `rtmfp` endpoints using [`FlashProfile`] over the
//! `rtmfp-sim` network, for every DH group, key mode and HMAC / session
//! sequence number policy, moving data on a flow.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nimbus_testkit::identity;
use nimbus_testkit::sim::{Engine, Recorder, SimNode};
use rand_core::SeedableRng;
use rtmfp::{Event, OpenError, SessionId};
use rtmfp_flash::{DhGroup, Epd, FlashProfile, FlashProfileBuilder, Negotiation};
use rtmfp_sim::{LinkConfig, Sim};

/// A Flash-profile engine recording everything, in the simulator.
type Peer = SimNode<Engine<Recorder>>;

fn peer(addr: SocketAddr, builder: FlashProfileBuilder, seed: u64, now: Instant) -> Peer {
    SimNode::new(
        addr,
        Engine::new(identity::flash(builder, seed, now), Recorder::default()),
    )
}

const CLIENT: usize = 0;
const SERVER: usize = 1;
const URI: &[u8] = b"rtmfp://server.example/app";

fn pair(seed: u64, client: FlashProfileBuilder, server: FlashProfileBuilder) -> Sim<Peer> {
    let mut sim: Sim<Peer> = Sim::new(seed);
    let now = sim.now();
    let a: SocketAddr = "198.18.0.1:1000".parse().unwrap();
    let b: SocketAddr = "198.18.0.2:1935".parse().unwrap();
    sim.add_node(peer(a, client, seed ^ 1, now), &[a]);
    sim.add_node(peer(b, server, seed ^ 2, now), &[b]);
    sim
}

/// Connects the client to the server with an "any server" EPD; returns
/// both session IDs.
fn connect(sim: &mut Sim<Peer>) -> Result<(SessionId, SessionId), Option<OpenError>> {
    let now = sim.now();
    let to = sim.node(SERVER).addr;
    let epd = Epd::server(URI).encode();
    let sid = sim
        .node_mut(CLIENT)
        .call(now, |ep, now| ep.connect(now, &epd, &[to]))
        .unwrap();
    let ok = sim.run_until(Duration::from_secs(20), |s| {
        s.node(CLIENT).opened().contains(&sid) || s.node(CLIENT).failed().is_some()
    });
    if !ok || !sim.node(CLIENT).opened().contains(&sid) {
        return Err(sim.node(CLIENT).failed());
    }
    sim.run_until(Duration::from_secs(5), |s| {
        !s.node(SERVER).opened().is_empty()
    });
    let far = *sim.node(SERVER).opened().last().ok_or(None)?;
    Ok((sid, far))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Opens a flow from the client, sends `len` bytes, and checks they arrive.
fn move_data(sim: &mut Sim<Peer>, sid: SessionId, len: usize) {
    let data = pattern(len);
    nimbus_testkit::sim::move_data(sim, CLIENT, SERVER, sid, &data, Duration::from_secs(60));
}

fn check_nonces(sim: &Sim<Peer>, c: SessionId, s: SessionId) {
    let ci = sim.node(CLIENT).ep.session_info(c).unwrap();
    let si = sim.node(SERVER).ep.session_info(s).unwrap();
    assert_eq!(ci.near_nonce, si.far_nonce);
    assert_eq!(ci.far_nonce, si.near_nonce);
    assert_eq!(ci.near_nonce.len(), 32);
    assert_ne!(ci.near_nonce, ci.far_nonce);
}

fn handshake_and_data(seed: u64, client: FlashProfileBuilder, server: FlashProfileBuilder) {
    let mut sim = pair(seed, client, server);
    let (c, s) = connect(&mut sim).expect("session opens");
    check_nonces(&sim, c, s);
    move_data(&mut sim, c, 50_000);
}

const POLICIES: [(Negotiation, Negotiation); 5] = [
    (Negotiation::PREFERRED, Negotiation::PREFERRED),
    (Negotiation::REQUIRED, Negotiation::REQUIRED),
    (Negotiation::OFF, Negotiation::OFF),
    (Negotiation::REQUIRED, Negotiation::OFF),
    (Negotiation::OFF, Negotiation::REQUIRED),
];

#[test]
fn every_group_and_policy() {
    for (i, g) in DhGroup::ALL.into_iter().enumerate() {
        for (j, (hmac, sseq)) in POLICIES.into_iter().enumerate() {
            let client = FlashProfile::client().groups(&[g]).hmac(hmac).sseq(sseq);
            let server = FlashProfile::server(None)
                .groups(&DhGroup::ALL)
                .hmac(hmac)
                .sseq(sseq);
            handshake_and_data((i * 10 + j) as u64, client, server);
        }
    }
}

#[test]
fn every_key_mode_combination() {
    // §4.6.1.1 - §4.6.1.4
    for (i, (client_static, server_static)) in
        [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .enumerate()
    {
        let mut client = FlashProfile::client().groups(&[DhGroup::Modp1024, DhGroup::Modp2048]);
        client = if client_static {
            client.static_keys()
        } else {
            client.ephemeral_keys()
        };
        let mut server = FlashProfile::server(Some("server.example"));
        server = if server_static {
            server.static_keys()
        } else {
            server.ephemeral_keys()
        };
        handshake_and_data(100 + i as u64, client, server);
    }
}

#[test]
fn mixed_policies_negotiate() {
    // one end preferring, the other off / on-request / required
    let cases = [
        (Negotiation::PREFERRED, Negotiation::OFF),
        (Negotiation::OFF, Negotiation::PREFERRED),
        (Negotiation::ON_REQUEST, Negotiation::REQUIRED),
        (Negotiation::REQUIRED, Negotiation::ON_REQUEST),
        (Negotiation::ON_REQUEST, Negotiation::ON_REQUEST),
    ];
    for (i, (a, b)) in cases.into_iter().enumerate() {
        let client = FlashProfile::client()
            .groups(&[DhGroup::Modp1024])
            .hmac(a)
            .sseq(b);
        let server = FlashProfile::server(None).hmac(b).sseq(a);
        handshake_and_data(200 + i as u64, client, server);
    }
}

#[test]
fn requirement_refused_fails_the_open() {
    // the client requires HMAC, the server will never send it
    let client = FlashProfile::client()
        .groups(&[DhGroup::Modp1024])
        .hmac(Negotiation::REQUIRED);
    let server = FlashProfile::server(None).hmac(Negotiation::OFF);
    let mut sim = pair(300, client, server);
    match connect(&mut sim) {
        Err(Some(OpenError::Keying(e))) => assert!(e.contains("HMAC"), "{e}"),
        other => panic!("expected a keying failure, got {other:?}"),
    }
    // the server requires sequence numbers, the client will never send them:
    // the server refuses the IIKeying, so the open times out
    let client = FlashProfile::client()
        .groups(&[DhGroup::Modp1024])
        .sseq(Negotiation::OFF);
    let server = FlashProfile::server(None).sseq(Negotiation::REQUIRED);
    let mut sim = pair(301, client, server);
    let now = sim.now();
    let to = sim.node(SERVER).addr;
    let epd = Epd::server(URI).encode();
    sim.node_mut(CLIENT)
        .call(now, |ep, now| ep.connect(now, &epd, &[to]))
        .unwrap();
    sim.run_for(Duration::from_secs(10));
    assert!(sim.node(CLIENT).opened().is_empty());
    assert!(sim.node(SERVER).opened().is_empty());
}

#[test]
fn epd_selection_by_fingerprint_and_hostname() {
    let client = FlashProfile::client().groups(&[DhGroup::Modp1024]);
    let server = FlashProfile::server(Some("a.example"));
    let mut sim = pair(400, client, server);
    let now = sim.now();
    let to = sim.node(SERVER).addr;
    let server_cert = sim.node(SERVER).ep.profile().certificate().to_vec();
    let fp = rtmfp_flash::fingerprint(&server_cert);
    // wrong hostname: no answer
    let bad = Epd::hostname("b.example").encode();
    let s1 = sim
        .node_mut(CLIENT)
        .call(now, |ep, now| ep.connect(now, &bad, &[to]))
        .unwrap();
    sim.run_for(Duration::from_secs(3));
    assert!(!sim.node(CLIENT).opened().contains(&s1));
    sim.node_mut(CLIENT)
        .call(now, |ep, now| ep.close_session(now, s1));
    // by fingerprint: selected
    let good = Epd::peer(fp).encode();
    let now = sim.now();
    let s2 = sim
        .node_mut(CLIENT)
        .call(now, |ep, now| ep.connect(now, &good, &[to]))
        .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s
        .node(CLIENT)
        .opened()
        .contains(&s2)));
    // and the engine finds it by the canonical EPD
    let canon = rtmfp_flash::canonical_epd(&fp);
    assert_eq!(sim.node(CLIENT).ep.find_session_by_epd(&canon), Some(s2));
    // a second open to the same identity is a duplicate
    let now = sim.now();
    let host = Epd::hostname("a.example").encode();
    let s3 = sim
        .node_mut(CLIENT)
        .call(now, |ep, now| ep.connect(now, &host, &[to]))
        .unwrap();
    let failure = |p: &Peer| {
        p.events.iter().find_map(|e| match e {
            Event::SessionFailed { session, error } if *session == s3 => Some(error.clone()),
            _ => None,
        })
    };
    sim.run_until(Duration::from_secs(5), |s| {
        failure(s.node(CLIENT)).is_some()
    });
    assert_eq!(failure(sim.node(CLIENT)), Some(OpenError::Duplicate(s2)));
}

#[test]
fn duplicates_and_reordering_with_sequence_numbers() {
    // duplicated packets are discarded by the replay window; reordered ones
    // inside the window are accepted
    let client = FlashProfile::client()
        .groups(&[DhGroup::Modp1024])
        .require_hmac(true)
        .require_sseq(true);
    let server = FlashProfile::server(None)
        .require_hmac(true)
        .require_sseq(true);
    let mut sim = pair(500, client, server);
    sim.net.set_default_link(
        LinkConfig::lan()
            .with_duplicate(0.2)
            .with_reorder(0.1, Duration::from_millis(5))
            .with_loss(0.02),
    );
    let (c, s) = connect(&mut sim).expect("session opens");
    check_nonces(&sim, c, s);
    move_data(&mut sim, c, 300_000);
    // the duplicates were refused by the profile (replay window)
    assert!(sim.node(SERVER).ep.stats().datagrams_dropped > 0);
    assert!(sim.node(CLIENT).ep.stats().datagrams_dropped > 0);
}

#[test]
fn peer_ids_are_distinct_and_static_keys_restore_them() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let a = FlashProfile::client()
        .groups(&[DhGroup::Modp1024])
        .build(&mut rng)
        .unwrap();
    let b = FlashProfile::client()
        .groups(&[DhGroup::Modp1024])
        .build(&mut rng)
        .unwrap();
    assert_ne!(a.peer_id(), b.peer_id());
    let key = a.static_key_pairs().next().unwrap().clone();
    let a2 = FlashProfile::client()
        .groups(&[DhGroup::Modp1024])
        .static_key(key)
        .build(&mut rng)
        .unwrap();
    assert_eq!(a.peer_id(), a2.peer_id());
}
