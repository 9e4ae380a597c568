//! Simulated-network scenarios for the RTMFP engine (virtual time).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use rtmfp::{Address, AddressOrigin, CloseReason, EndpointConfig, Event, Priority, SessionId};
use rtmfp_sim::{LinkConfig, Sim};

fn lossy(loss: f64) -> LinkConfig {
    LinkConfig::default()
        .with_delay(Duration::from_millis(20))
        .with_loss(loss)
}

/// Two peers with `config` over [`lossy`] links, node 0 connected to node 1
/// within 10 s: (sim, node 0's session, node 1's session).
fn connected_pair(
    seed: u64,
    config: EndpointConfig,
    loss: f64,
) -> (Sim<Peer>, SessionId, SessionId) {
    let mut sim = pair(seed, config);
    sim.net.set_default_link(lossy(loss));
    let (sa, sb) = connect(&mut sim, 0, 1, Duration::from_secs(10)).expect("open");
    (sim, sa, sb)
}

#[test]
fn handshake_completes_at_30pct_loss() {
    for seed in 1..=8 {
        let mut sim = pair(seed, EndpointConfig::default());
        sim.net.set_default_link(lossy(0.30));
        let r = connect(&mut sim, 0, 1, Duration::from_secs(95));
        assert!(r.is_some(), "seed {seed}: handshake did not complete");
    }
}

#[test]
fn bulk_20mb_arrives_byte_exact_at_10pct_loss_with_reordering() {
    let mut sim = pair(7, EndpointConfig::default());
    let link = LinkConfig::default()
        .with_delay(Duration::from_millis(10))
        .with_jitter(Duration::from_millis(2))
        .with_loss(0.10)
        .with_reorder(0.05, Duration::from_millis(15))
        .with_bandwidth(200_000_000);
    sim.net.set_default_link(link);
    let (sa, sb) = connect(&mut sim, 0, 1, Duration::from_secs(60)).expect("open");
    let flow = open_flow(&mut sim, 0, sa, b"bulk", Priority::BULK);
    const TOTAL: usize = 20 * 1024 * 1024;
    start_source(&mut sim, 0, sa, flow, TOTAL, 16 * 1024, true);
    let done = sim.run_until(Duration::from_secs(600), |s| {
        s.node(1)
            .has_event(|e| matches!(e, Event::RecvFlowComplete { session, .. } if *session == sb))
    });
    let got = sim
        .node(1)
        .received
        .get(&(sb, flow))
        .map(|v| v.len())
        .unwrap_or(0);
    assert!(
        done,
        "transfer incomplete: {got} of {TOTAL} bytes after {:?}",
        sim.elapsed()
    );
    let data = &sim.node(1).received[&(sb, flow)];
    assert_eq!(data.len(), TOTAL);
    assert!(data == &pattern(0, TOTAL), "bytes differ");
    let info = sim.node(0).ep.session_info(sa).unwrap();
    assert!(
        info.stats.fragments_retransmitted > 0,
        "loss must have caused retransmissions"
    );
    // the sender sees the flow complete too
    assert!(sim.run_until(Duration::from_secs(30), |s| s
        .node(0)
        .has_event(|e| matches!(e, Event::SendFlowComplete { .. }))));
}

#[test]
fn expired_messages_are_abandoned_instead_of_blocking_the_flow() {
    let (mut sim, sa, sb) = connected_pair(3, EndpointConfig::default(), 0.0);
    let flow = open_flow(&mut sim, 0, sa, b"live", Priority::PRIORITY);
    let a_ip = sim.node(0).addr.ip();
    let b_ip = sim.node(1).addr.ip();
    let lifetime = Some(Duration::from_millis(300));
    let mut sent_at = Vec::new();
    for i in 0..150u32 {
        // cut the path for 1 s in the middle
        if i == 50 {
            sim.net.block(a_ip, b_ip, true);
        }
        if i == 100 {
            sim.net.block(a_ip, b_ip, false);
        }
        let now = sim.now();
        let msg = Bytes::from(i.to_be_bytes().repeat(100));
        sim.node_mut(0)
            .call(now, |ep, now| ep.send(now, sa, flow, msg, lifetime))
            .unwrap();
        sent_at.push(now);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(2));
    let msgs = &sim.node(1).messages[&(sb, flow)];
    let ids: Vec<u32> = msgs
        .iter()
        .map(|(_, d, _)| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        .collect();
    // everything before the cut and everything after it arrived, in order
    for i in (0..45).chain(110..150) {
        assert!(ids.contains(&i), "message {i} missing: {ids:?}");
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
    // messages that expired during the cut were abandoned
    assert!(
        ids.iter().filter(|&&i| (55..95).contains(&i)).count() < 10,
        "{ids:?}"
    );
    // and the flow was not blocked: later messages arrived promptly
    for (t, d, _) in msgs {
        let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        if i >= 110 {
            assert!(
                *t - sent_at[i] < Duration::from_millis(200),
                "message {i} delayed"
            );
        }
    }
    // the receiver was told about the gap
    assert!(msgs.iter().any(|(_, _, gap)| *gap));
}

#[test]
fn fast_sender_against_slow_reader_is_held_back_with_bounded_memory() {
    let config = EndpointConfig {
        recv_buffer: 256 * 1024,
        send_buffer: 512 * 1024,
        ..EndpointConfig::default()
    };
    let (mut sim, sa, sb) = connected_pair(5, config, 0.0);
    sim.node_mut(1).auto_read = false;
    let flow = open_flow(&mut sim, 0, sa, b"bulk", Priority::BULK);
    const TOTAL: usize = 8 * 1024 * 1024;
    start_source(&mut sim, 0, sa, flow, TOTAL, 8 * 1024, true);
    let mut max_recv = 0;
    let mut max_send = 0;
    let mut read = 0;
    for round in 0..20_000 {
        sim.run_for(Duration::from_millis(10));
        let ri = sim.node(1).ep.session_info(sb).unwrap();
        let si = sim.node(0).ep.session_info(sa).unwrap();
        max_recv = max_recv.max(ri.recv_buffered);
        max_send = max_send.max(si.send_buffered);
        // the reader drains 64 KiB every 100 ms (640 KB/s)
        if round % 10 == 0 {
            let now = sim.now();
            read += sim.node_mut(1).with(now, |m, now| {
                let Engine { ep, user } = m;
                user.read_some(ep, now, sb, flow, 64 * 1024)
            });
            sim.node_mut(1).call(now, |_, _| ());
        }
        if read >= TOTAL {
            break;
        }
    }
    assert_eq!(read, TOTAL, "reader got {read}");
    assert!(sim.node(1).received[&(sb, flow)] == pattern(0, TOTAL));
    assert!(
        max_recv <= 256 * 1024 + 64 * 1024 + 16 * 1024,
        "receive buffer grew to {max_recv}"
    );
    assert!(
        max_send <= 512 * 1024 + 8 * 1024,
        "send buffer grew to {max_send}"
    );
}

#[test]
fn keepalive_holds_an_idle_session_and_idle_timeout_ends_a_dead_one() {
    let (mut sim, sa, sb) = connected_pair(11, EndpointConfig::default(), 0.0);
    // five idle minutes: keepalives keep it open
    sim.run_for(Duration::from_secs(300));
    assert!(sim.node(0).ep.session_info(sa).is_some_and(|i| i.open));
    assert!(sim.node(1).ep.session_info(sb).is_some_and(|i| i.open));
    assert!(sim.node(0).ep.session_info(sa).unwrap().stats.packets_sent >= 10);
    // cut the path: both ends time out on their own
    let (ia, ib) = (sim.node(0).addr.ip(), sim.node(1).addr.ip());
    sim.net.block(ia, ib, true);
    sim.net.block(ib, ia, true);
    let t0 = sim.now();
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        [0, 1].iter().all(|&n| {
            s.node(n).has_event(|e| {
                matches!(
                    e,
                    Event::SessionClosed {
                        reason: CloseReason::IdleTimeout,
                        ..
                    }
                )
            })
        })
    });
    assert!(ok, "no idle timeout");
    let took = sim.now() - t0;
    assert!(
        took >= Duration::from_secs(50) && took <= Duration::from_secs(70),
        "{took:?}"
    );
    assert_eq!(sim.node(0).ep.session_count(), 0);
}

#[test]
fn per_session_keepalive_and_idle_timeout_override_the_configuration() {
    // as a client told by its server (RFC 7425 §5.3.4, Set Keepalive
    // Timers) to ping every 3 s instead of the configured 10 s
    let (mut sim, sa, sb) = connected_pair(21, EndpointConfig::default(), 0.0);
    sim.run_for(Duration::from_secs(1));
    let now = sim.now();
    sim.node_mut(0)
        .call(now, |ep, _| ep.set_keepalive(sa, Duration::from_secs(3)))
        .unwrap();
    let before = sim.node(0).ep.session_info(sa).unwrap().stats.packets_sent;
    sim.run_for(Duration::from_secs(60));
    let pings = sim.node(0).ep.session_info(sa).unwrap().stats.packets_sent - before;
    assert!((15..=25).contains(&pings), "{pings} keepalives in 60 s");
    // the server drops a silent client after 5 s instead of 60
    let now = sim.now();
    sim.node_mut(1)
        .call(now, |ep, _| ep.set_idle_timeout(sb, Duration::from_secs(5)))
        .unwrap();
    let (ia, ib) = (sim.node(0).addr.ip(), sim.node(1).addr.ip());
    sim.net.block(ia, ib, true);
    let t0 = sim.now();
    assert!(
        sim.run_until(Duration::from_secs(30), |s| s.node(1).has_event(
            |e| matches!(
                e,
                Event::SessionClosed {
                    reason: CloseReason::IdleTimeout,
                    ..
                }
            )
        ))
    );
    let took = sim.now() - t0;
    assert!(took <= Duration::from_secs(6), "{took:?}");
    assert!(sim.node(0).ep.session_info(sa).is_some_and(|i| i.open));
}

#[test]
fn orderly_close_handshake() {
    let (mut sim, sa, sb) = connected_pair(12, EndpointConfig::default(), 0.0);
    let now = sim.now();
    sim.node_mut(0)
        .call(now, |ep, now| ep.close_session(now, sa));
    assert!(sim.run_until(Duration::from_secs(5), |s| s.node(1).has_event(
        |e| matches!(e, Event::SessionClosed { session, reason: CloseReason::Remote } if *session == sb)
    )));
    assert!(sim.node(0).has_event(|e| matches!(
        e,
        Event::SessionClosed {
            reason: CloseReason::Local,
            ..
        }
    )));
    // A got the Close Ack and forgot the session at once; B lingers (19 s)
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.node(0).ep.session_count(), 0);
    sim.run_for(Duration::from_secs(20));
    assert_eq!(sim.node(1).ep.session_count(), 0);
}

#[test]
fn session_survives_an_address_change() {
    let (mut sim, sa, sb) = connected_pair(13, EndpointConfig::default(), 0.01);
    let flow = open_flow(&mut sim, 0, sa, b"bulk", Priority::ROUTINE);
    const TOTAL: usize = 4 * 1024 * 1024;
    start_source(&mut sim, 0, sa, flow, TOTAL, 4096, true);
    sim.run_for(Duration::from_millis(300));
    // A's NAT rebinds: A now appears from a new address
    let a = sim.node(0).addr;
    let new_a = addr("198.18.7.7:4444");
    sim.net.set_nat(a, new_a);
    let done = sim.run_until(Duration::from_secs(120), |s| {
        s.node(1)
            .has_event(|e| matches!(e, Event::RecvFlowComplete { .. }))
    });
    assert!(done, "transfer did not finish after the move");
    assert!(sim.node(1).received[&(sb, flow)] == pattern(0, TOTAL));
    assert!(sim
        .node(1)
        .has_event(|e| matches!(e, Event::AddressChanged { new, .. } if *new == new_a)));
    assert_eq!(sim.node(1).ep.session_info(sb).unwrap().peer, new_a);
}

#[test]
fn glare_leaves_one_working_session() {
    for seed in 20..24 {
        let mut sim = pair(seed, EndpointConfig::default());
        sim.net.set_default_link(lossy(0.0));
        let now = sim.now();
        let (a, b) = (sim.node(0).addr, sim.node(1).addr);
        let s_a = sim
            .node_mut(0)
            .call(now, |ep, now| ep.connect(now, b"b", &[b]))
            .unwrap();
        let s_b = sim
            .node_mut(1)
            .call(now, |ep, now| ep.connect(now, b"a", &[a]))
            .unwrap();
        sim.run_for(Duration::from_secs(10));
        assert_eq!(sim.node(0).ep.sessions().count(), 1, "seed {seed}");
        assert_eq!(sim.node(1).ep.sessions().count(), 1, "seed {seed}");
        // one side kept its handle, the other side's handle became the responder session
        let ha = sim.node(0).ep.sessions().next().unwrap();
        let hb = sim.node(1).ep.sessions().next().unwrap();
        assert!(ha == s_a && hb == s_b, "handles preserved");
        // data flows both ways
        let f = open_flow(&mut sim, 0, ha, b"x", Priority::ROUTINE);
        send_now(&mut sim, 0, ha, f, Bytes::from_static(b"hello"));
        sim.run_for(Duration::from_secs(1));
        assert_eq!(
            sim.node(1).received.get(&(hb, f)).map(|v| &v[..]),
            Some(&b"hello"[..])
        );
    }
}

#[test]
fn many_flows_metadata_association_and_rejection() {
    let (mut sim, sa, sb) = connected_pair(14, EndpointConfig::default(), 0.05);
    let mut flows = Vec::new();
    for i in 0..20u8 {
        let f = open_flow(&mut sim, 0, sa, &[b'm', i], Priority(i % 7));
        send_now(&mut sim, 0, sa, f, Bytes::from(vec![i; 3000]));
        flows.push(f);
    }
    sim.run_for(Duration::from_secs(5));
    for (i, f) in flows.iter().enumerate() {
        assert_eq!(sim.node(1).received[&(sb, *f)], vec![i as u8; 3000]);
    }
    let meta: Vec<Bytes> = sim
        .node(1)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::IncomingFlow { metadata, .. } => Some(metadata.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(meta.len(), 20);
    assert!(meta.contains(&Bytes::from_static(b"m\x05")));
    // B answers flow 0 with an associated return flow
    let now = sim.now();
    let back = sim
        .node_mut(1)
        .call(now, |ep, now| {
            ep.open_flow(now, sb, b"reply", Some(flows[0]), Priority::ROUTINE)
        })
        .unwrap();
    send_now(&mut sim, 1, sb, back, Bytes::from_static(b"pong"));
    sim.run_for(Duration::from_secs(2));
    assert!(sim.node(0).has_event(|e| matches!(e,
        Event::IncomingFlow { association: Some(x), metadata, .. } if *x == flows[0] && &metadata[..] == b"reply")));
    // B rejects flow 1: A sees the exception and the flow refuses data
    let now = sim.now();
    sim.node_mut(1)
        .call(now, |ep, now| ep.reject_flow(now, sb, flows[1], 42))
        .unwrap();
    send_now(&mut sim, 0, sa, flows[1], Bytes::from_static(b"more"));
    sim.run_for(Duration::from_secs(3));
    assert!(sim.node(0).has_event(|e| matches!(e,
        Event::SendFlowException { flow, code: 42, .. } if *flow == flows[1])));
}

#[test]
fn introduction_through_a_forwarder_punches_through_nats() {
    // server S with public address; A and B each behind a NAT that only
    // lets in packets from addresses they have sent to.
    let mut sim: rtmfp_sim::Sim<Peer> = rtmfp_sim::Sim::new(31);
    sim.net.set_default_link(lossy(0.0));
    let now = sim.now();
    let s_addr = addr("198.18.100.1:1935");
    let a_in = addr("10.0.0.2:5000");
    let b_in = addr("10.1.0.2:6000");
    let a_pub = addr("198.18.1.1:40000");
    let b_pub = addr("198.18.2.1:50000");
    let server_cfg = EndpointConfig {
        report_foreign_ihello: true,
        ..EndpointConfig::default()
    };
    sim.add_node(peer("server", s_addr, server_cfg, 1, now), &[s_addr]);
    sim.add_node(peer("a", a_in, EndpointConfig::default(), 2, now), &[a_in]);
    sim.add_node(peer("b", b_in, EndpointConfig::default(), 3, now), &[b_in]);
    sim.net.set_nat(a_in, a_pub);
    sim.net.set_nat(b_in, b_pub);
    // B registers with the server
    let sb = sim
        .node_mut(2)
        .call(now, |ep, now| ep.connect(now, b"server", &[s_addr]))
        .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.node(2).opened().contains(&sb)));
    let server_side_b = *sim.node(0).opened().last().unwrap();
    // the NAT of B blocks unsolicited traffic from A's public address
    sim.net.block(a_pub.ip(), b_in.ip(), true);
    sim.net.block(b_pub.ip(), a_in.ip(), true);
    // A asks for B through the server
    let now = sim.now();
    let sa = sim
        .node_mut(1)
        .call(now, |ep, now| ep.connect(now, b"b", &[s_addr]))
        .unwrap();
    // the server answers the foreign IHello: Redirect to A, Forwarded IHello to B
    assert!(sim.run_until(Duration::from_secs(2), |s| s
        .node(0)
        .has_event(|e| matches!(e, Event::IHelloForOther { .. }))));
    let (from, epd, tag) = sim
        .node(0)
        .events
        .iter()
        .find_map(|e| match e {
            Event::IHelloForOther { from, epd, tag } => Some((*from, epd.clone(), tag.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(from, a_pub);
    assert_eq!(&epd[..], b"b");
    let now = sim.now();
    let b_seen = sim.node(0).ep.session_info(server_side_b).unwrap().peer;
    assert_eq!(b_seen, b_pub);
    sim.node_mut(0).call(now, |ep, now| {
        ep.send_redirect(
            from,
            &tag,
            &[Address {
                addr: b_seen,
                origin: AddressOrigin::Public,
            }],
        );
        ep.forward_ihello(now, server_side_b, &epd, from, &tag)
            .unwrap();
    });
    // B's RHello toward A's public address opens B's NAT for A
    sim.net.block(a_pub.ip(), b_in.ip(), false);
    sim.net.block(b_pub.ip(), a_in.ip(), false);
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s
            .node(1)
            .opened()
            .contains(&sa)),
        "no direct session"
    );
    let info = sim.node(1).ep.session_info(sa).unwrap();
    assert_eq!(
        info.peer, b_pub,
        "A talks to B directly, not via the server"
    );
}

#[test]
fn reconnection_after_a_restart_overrides_the_stale_session_at_once() {
    let (mut sim, _sa, sb) = connected_pair(15, EndpointConfig::default(), 0.0);
    // A restarts: a new endpoint with the same identity, same address
    let now = sim.now();
    let a = sim.node(0).addr;
    *sim.node_mut(0) = peer("a", a, EndpointConfig::default(), 999, now);
    let t0 = sim.now();
    let r = connect(&mut sim, 0, 1, Duration::from_secs(10)).expect("reconnect");
    assert!(
        sim.now() - t0 < Duration::from_millis(500),
        "reconnect took {:?}",
        sim.now() - t0
    );
    assert!(sim.node(1).has_event(|e| matches!(e,
        Event::SessionClosed { session, reason: CloseReason::Overridden } if *session == sb)));
    assert!(sim.node(1).ep.session_info(r.1).unwrap().open);
}

#[test]
fn large_certificates_use_packet_fragmentation() {
    let mut sim: rtmfp_sim::Sim<Peer> = rtmfp_sim::Sim::new(41);
    sim.net.set_default_link(lossy(0.0).with_mtu(1200));
    let now = sim.now();
    let (a, b) = (addr("198.18.0.1:1"), addr("198.18.0.2:2"));
    let big = vec![7u8; 3000];
    // a path whose MTU is 1200: startup packets must be fragmented to fit
    let config = EndpointConfig {
        max_startup_datagram_size: 1200,
        ..EndpointConfig::default()
    };
    sim.add_node(
        peer_with_cert(b"a".to_vec(), a, config.clone(), 1, now),
        &[a],
    );
    sim.add_node(peer_with_cert(big.clone(), b, config, 2, now), &[b]);
    let sid = sim
        .node_mut(0)
        .call(now, |ep, now| ep.connect(now, &big, &[b]))
        .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s
        .node(0)
        .opened()
        .contains(&sid)));
}

#[test]
fn time_critical_flow_is_served_before_bulk() {
    let mut sim = pair(16, EndpointConfig::default());
    sim.net.set_default_link(
        lossy(0.0)
            .with_bandwidth(2_000_000)
            .with_queue_bytes(32 * 1024),
    );
    let (sa, sb) = connect(&mut sim, 0, 1, Duration::from_secs(10)).expect("open");
    let bulk = open_flow(&mut sim, 0, sa, b"bulk", Priority::BULK);
    let audio = open_flow(&mut sim, 0, sa, b"audio", Priority::IMMEDIATE);
    start_source(&mut sim, 0, sa, bulk, 2 * 1024 * 1024, 8192, false);
    sim.run_for(Duration::from_secs(2));
    let mut sent = Vec::new();
    for i in 0..50u32 {
        let now = sim.now();
        send_now(
            &mut sim,
            0,
            sa,
            audio,
            Bytes::from(i.to_be_bytes().to_vec()),
        );
        sent.push(now);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(3));
    let msgs = &sim.node(1).messages[&(sb, audio)];
    assert_eq!(msgs.len(), 50);
    let mut worst = Duration::ZERO;
    for (t, d, _) in msgs {
        let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        worst = worst.max(*t - sent[i]);
    }
    // the bulk flow keeps the 2 Mbit/s link full, yet audio waits at most
    // behind what is already in flight, never behind the bulk queue
    eprintln!("worst audio latency {worst:?}");
    assert!(
        worst < Duration::from_millis(400),
        "audio latency {worst:?}"
    );
}

#[test]
fn suspended_delivery_closes_the_window_and_resuming_delivers_everything() {
    let config = EndpointConfig {
        recv_buffer: 128 * 1024,
        ..EndpointConfig::default()
    };
    let (mut sim, sa, sb) = connected_pair(17, config, 0.0);
    let flow = open_flow(&mut sim, 0, sa, b"bulk", Priority::BULK);
    send_now(&mut sim, 0, sa, flow, Bytes::from_static(b"first"));
    sim.run_for(Duration::from_millis(500));
    let now = sim.now();
    sim.node_mut(1)
        .call(now, |ep, _| {
            ep.set_recv_flow_options(sb, flow, None, None, Some(true))
        })
        .unwrap();
    start_source(&mut sim, 0, sa, flow, 1024 * 1024, 4096, true);
    sim.run_for(Duration::from_secs(5));
    let ri = sim.node(1).ep.session_info(sb).unwrap();
    assert!(
        ri.recv_buffered <= 128 * 1024 + 64 * 1024,
        "{}",
        ri.recv_buffered
    );
    let got_before = sim.node(1).received[&(sb, flow)].len();
    assert_eq!(got_before, 5, "nothing delivered while suspended");
    let now = sim.now();
    sim.node_mut(1)
        .call(now, |ep, _| {
            ep.set_recv_flow_options(sb, flow, None, None, Some(false))
        })
        .unwrap();
    assert!(sim.run_until(Duration::from_secs(60), |s| s
        .node(1)
        .has_event(|e| matches!(e, Event::RecvFlowComplete { .. }))));
    let data = &sim.node(1).received[&(sb, flow)];
    assert_eq!(&data[..5], b"first");
    assert!(data[5..] == pattern(0, 1024 * 1024)[..]);
}
