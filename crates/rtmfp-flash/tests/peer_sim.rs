//! Direct peer-to-peer NetStreams (RFC 7425 §5.4) in the simulator: a
//! [`PeerPlayer`] subscribing to a [`PeerPublisher`] over an RTMFP session,
//! accepted or refused, and a hostile subscriber.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    arbitrary_argument, arbitrary_bytes, arbitrary_metadata, arbitrary_typed_message, cmd,
};
use flash_amf::{DataMessage, Value};
use proptest::prelude::*;

use nimbus_testkit::identity;
use nimbus_testkit::sim::{Engine, Script, SimNode};
use rtmfp::{Endpoint, Event, Priority, SessionId};
use rtmfp_flash::message::{
    PeerEvent, PeerPlayer, PeerPublisher, PlayerEvent, RtmpMessage, MAX_PEER_SUBSCRIBERS,
};
use rtmfp_sim::{LinkConfig, Sim};

/// What the publisher application does with play requests.
#[derive(Clone, Copy, PartialEq)]
enum Policy {
    Accept,
    Refuse,
}

/// The test's side of each engine: a publisher answering play requests by
/// its policy, or a player.
struct Parts {
    publisher: Option<PeerPublisher>,
    policy: Policy,
    pub_events: Vec<PeerEvent>,
    player: Option<PeerPlayer>,
    player_events: Vec<PlayerEvent>,
}

type Peer = SimNode<Engine<Parts>>;

fn peer(addr: SocketAddr, name: &str, seed: u64, now: Instant) -> Peer {
    let parts = Parts {
        publisher: None,
        policy: Policy::Accept,
        pub_events: Vec::new(),
        player: None,
        player_events: Vec::new(),
    };
    SimNode::new(addr, Engine::new(identity::plain(name, seed, now), parts))
}

impl Script for Parts {
    fn process(&mut self, ep: &mut Endpoint, now: Instant) {
        loop {
            let next = ep.poll_event();
            if let Some(e) = &next {
                self.on_engine_event(ep, now, e);
            }
            self.drain_app_events(ep, now);
            if next.is_none() {
                break;
            }
        }
    }
}

impl Parts {
    fn on_engine_event(&mut self, ep: &mut Endpoint, now: Instant, e: &Event) {
        {
            if let Event::SessionOpened { session, .. } = e {
                if self.player.is_none() && self.publisher.is_none() {
                    self.publisher = Some(PeerPublisher::new(*session));
                }
            }
            let mut taken = false;
            if let Some(p) = self.publisher.as_mut() {
                taken |= p.on_event(ep, now, e);
            }
            if let Some(p) = self.player.as_mut() {
                taken |= p.on_event(ep, now, e);
            }
            if let (false, Event::IncomingFlow { session, flow, .. }) = (taken, e) {
                let _ = ep.reject_flow(now, *session, *flow, 0);
            }
        }
    }

    fn drain_app_events(&mut self, ep: &mut Endpoint, now: Instant) {
        {
            if let Some(p) = self.publisher.as_mut() {
                while let Some(ev) = p.poll_event() {
                    if let PeerEvent::PlayRequest { subscriber, .. } = ev {
                        match self.policy {
                            // may fail if the subscriber is already gone
                            Policy::Accept => {
                                let _ = p.accept(ep, now, subscriber);
                            }
                            Policy::Refuse => {
                                let _ = p.refuse(ep, now, subscriber, "not you");
                            }
                        }
                    }
                    self.pub_events.push(ev);
                }
            }
            if let Some(p) = self.player.as_mut() {
                while let Some(ev) = p.poll_event() {
                    self.player_events.push(ev);
                }
            }
        }
    }

    fn statuses(&self) -> Vec<String> {
        self.player_events
            .iter()
            .filter_map(|e| match e {
                PlayerEvent::Status { status, .. } => Some(status.code.clone()),
                _ => None,
            })
            .collect()
    }
}

const PUBLISHER: usize = 0;
const PLAYER: usize = 1;

/// Publisher at node 0, a subscriber at node 1 with an open session to it.
fn setup(seed: u64, link: LinkConfig, policy: Policy) -> (Sim<Peer>, SessionId) {
    let mut sim: Sim<Peer> = Sim::new(seed);
    sim.net.set_default_link(link);
    let now = sim.now();
    let a: SocketAddr = "198.18.0.1:1935".parse().unwrap();
    let b: SocketAddr = "198.18.0.2:5000".parse().unwrap();
    let mut publisher = peer(a, "publisher", seed ^ 1, now);
    publisher.policy = policy;
    sim.add_node(publisher, &[a]);
    let mut player = peer(b, "player", seed ^ 2, now);
    let s = player
        .call(now, |ep, now| ep.connect(now, b"publisher", &[a]))
        .unwrap();
    player.player = Some(PeerPlayer::new(s));
    sim.add_node(player, &[b]);
    assert!(sim.run_until(Duration::from_secs(10), |x| {
        x.node(PUBLISHER).publisher.is_some() && x.node(PLAYER).ep.sessions().any(|y| y == s)
    }));
    (sim, s)
}

/// Runs `f` on node `i`'s engine and script.
fn act<R>(
    sim: &mut Sim<Peer>,
    i: usize,
    f: impl FnOnce(&mut Parts, &mut Endpoint, Instant) -> R,
) -> R {
    let now = sim.now();
    sim.node_mut(i).with(now, |m, now| {
        let Engine { ep, user } = m;
        let r = f(user, ep, now);
        user.process(ep, now);
        r
    })
}

fn frame(ty: u8, ts: u32, payload: Vec<u8>) -> Bytes {
    RtmpMessage::new(ty, ts, payload).encode()
}

fn play_and_publish(seed: u64, link: LinkConfig) {
    let (mut sim, _) = setup(seed, link, Policy::Accept);
    let stream = act(&mut sim, PLAYER, |p, ep, now| {
        p.player.as_mut().unwrap().play(ep, now, "cam").unwrap()
    });
    assert!(sim.run_until(Duration::from_secs(10), |x| x
        .node(PLAYER)
        .statuses()
        .contains(&"NetStream.Play.Start".to_owned())));
    let (session, name) = match &sim.node(PUBLISHER).pub_events[0] {
        PeerEvent::PlayRequest {
            session,
            name,
            stream: s,
            ..
        } => {
            assert_eq!(*s, stream);
            (*session, name.clone())
        }
        e => panic!("{e:?}"),
    };
    assert_eq!(name, "cam");
    assert_eq!(
        session,
        sim.node(PUBLISHER).publisher.as_ref().unwrap().session()
    );
    assert_eq!(
        sim.node(PLAYER).statuses(),
        ["NetStream.Play.Reset", "NetStream.Play.Start"]
    );
    assert!(sim
        .node(PLAYER)
        .player_events
        .iter()
        .any(|e| *e == PlayerEvent::StreamBegin { stream }));

    // media: 20 audio, 10 video, 5 data messages
    act(&mut sim, PUBLISHER, |p, ep, now| {
        let publ = p.publisher.as_mut().unwrap();
        let sub = publ.playing().next().unwrap();
        for i in 0..20u32 {
            publ.send_media(ep, now, sub, frame(8, i * 20, vec![0xaf, i as u8]), None)
                .unwrap();
            if i % 2 == 0 {
                publ.send_media(ep, now, sub, frame(9, i * 20, vec![0x17; 3000]), None)
                    .unwrap();
            }
            if i % 4 == 0 {
                let m = DataMessage::new("onIm", vec![Value::from(format!("hi {i}").as_str())]);
                publ.send_data(ep, now, sub, i * 20, m).unwrap();
            }
        }
    });
    let count = |x: &Sim<Peer>| x.node(PLAYER).player_events.len();
    let ok = sim.run_until(Duration::from_secs(30), |x| count(x) >= 3 + 20 + 10 + 5);
    assert!(
        ok,
        "{:#?}",
        sim.node(PLAYER)
            .player_events
            .iter()
            .map(|e| format!("{e:?}").chars().take(90).collect::<String>())
            .collect::<Vec<_>>()
    );
    let ev = &sim.node(PLAYER).player_events;
    let ts = |k: u8| -> Vec<u32> {
        ev.iter()
            .filter_map(|e| match (k, e) {
                (
                    8,
                    PlayerEvent::Audio {
                        timestamp,
                        stream: s,
                        payload,
                    },
                ) => {
                    assert_eq!(*s, stream);
                    assert_eq!(payload[1] as u32 * 20, *timestamp);
                    Some(*timestamp)
                }
                (
                    9,
                    PlayerEvent::Video {
                        timestamp, payload, ..
                    },
                ) => {
                    assert_eq!(payload.len(), 3000);
                    Some(*timestamp)
                }
                (
                    18,
                    PlayerEvent::Data {
                        timestamp, message, ..
                    },
                ) => {
                    assert_eq!(message.handler, "onIm");
                    assert_eq!(
                        message.values[0],
                        Value::from(format!("hi {}", timestamp / 20).as_str())
                    );
                    Some(*timestamp)
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(ts(8), (0..20).map(|i| i * 20).collect::<Vec<_>>());
    assert_eq!(
        ts(9),
        (0..20).step_by(2).map(|i| i * 20).collect::<Vec<_>>()
    );
    assert_eq!(
        ts(18),
        (0..20).step_by(4).map(|i| i * 20).collect::<Vec<_>>()
    );

    // the player stops: the publisher sees the subscriber go
    act(&mut sim, PLAYER, |p, ep, now| {
        p.player.as_mut().unwrap().close(ep, now, stream)
    });
    assert!(sim.run_until(Duration::from_secs(10), |x| x
        .node(PUBLISHER)
        .pub_events
        .iter()
        .any(|e| matches!(e, PeerEvent::Closed { .. }))));
    assert_eq!(
        sim.node(PUBLISHER)
            .publisher
            .as_ref()
            .unwrap()
            .playing()
            .count(),
        0
    );
    assert!(player_closed(&sim, stream, false));
}

#[test]
fn player_plays_publisher_accepts_media_in_order() {
    play_and_publish(1, LinkConfig::perfect());
}

#[test]
fn player_plays_over_a_lossy_link() {
    let mut link = LinkConfig::perfect();
    link.loss = 0.1;
    play_and_publish(2, link);
}

#[test]
fn refused_player_gets_rejected_status_and_flows_close() {
    let (mut sim, _) = setup(3, LinkConfig::perfect(), Policy::Refuse);
    let stream = act(&mut sim, PLAYER, |p, ep, now| {
        p.player.as_mut().unwrap().play(ep, now, "secret").unwrap()
    });
    assert!(sim.run_until(Duration::from_secs(10), |x| x
        .node(PLAYER)
        .player_events
        .iter()
        .any(|e| matches!(e, PlayerEvent::Closed { .. }))));
    assert_eq!(sim.node(PLAYER).statuses(), ["NetStream.Connect.Rejected"]);
    assert!(player_closed(&sim, stream, true));
    let pe = sim.node(PUBLISHER).pub_events.clone();
    assert!(matches!(pe[0], PeerEvent::PlayRequest { .. }));
    assert!(matches!(pe[1], PeerEvent::Closed { .. }));
    assert_eq!(pe.len(), 2);
    sim.run_for(Duration::from_secs(2));
    // nothing left open on the publisher side
    let publ = sim.node(PUBLISHER).publisher.as_ref().unwrap();
    assert_eq!(publ.playing().count(), 0);
    // media to the refused subscriber fails
    let sub = match pe[0] {
        PeerEvent::PlayRequest { subscriber, .. } => subscriber,
        _ => unreachable!(),
    };
    act(&mut sim, PUBLISHER, |p, ep, now| {
        assert!(p
            .publisher
            .as_mut()
            .unwrap()
            .send_media(ep, now, sub, frame(8, 0, vec![1]), None)
            .is_err());
    });
}

// ------------------------------------------------------------ hostile input

fn arbitrary_message() -> impl Strategy<Value = Bytes> {
    let names = &["play", "closeStream", "deleteStream", "receiveAudio", "x"];
    let names = proptest::sample::select(&names[..]);
    let value = arbitrary_argument(vec![]);
    prop_oneof![
        (names, proptest::collection::vec(value, 0..3)).prop_map(|(n, a)| cmd(n, 0.0, a)),
        arbitrary_typed_message(any::<u8>()),
        arbitrary_bytes(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A raw subscriber opening arbitrary flows with arbitrary messages, and a
    /// publisher answering arbitrary messages back to a real player: nothing
    /// panics, state stays bounded.
    #[test]
    fn hostile_input_never_panics(
        refuse in any::<bool>(),
        flows in proptest::collection::vec(
            (arbitrary_metadata(), proptest::collection::vec(arbitrary_message(), 0..10)),
            1..6,
        ),
        back in proptest::collection::vec((arbitrary_metadata(), arbitrary_message()), 0..6),
    ) {
        let policy = if refuse { Policy::Refuse } else { Policy::Accept };
        let (mut sim, s) = setup(7, LinkConfig::perfect(), policy);
        act(&mut sim, PLAYER, |p, ep, now| {
            p.player.as_mut().unwrap().play(ep, now, "cam").unwrap();
            for (md, msgs) in flows {
                let f = ep.open_flow(now, s, &md, None, Priority::ROUTINE).unwrap();
                for m in msgs {
                    let _ = ep.send(now, s, f, m, None);
                }
            }
        });
        sim.run_for(Duration::from_millis(500));
        // hostile publisher: arbitrary return flows to the player's control flow
        let psess = sim.node(PUBLISHER).publisher.as_ref().unwrap().session();
        let sub = sim.node(PUBLISHER).pub_events.iter().find_map(|e| match e {
            PeerEvent::PlayRequest { subscriber, .. } => Some(*subscriber),
            _ => None,
        });
        act(&mut sim, PUBLISHER, |_, ep, now| {
            for (md, m) in back {
                if let Ok(f) = ep.open_flow(now, psess, &md, sub, Priority::ROUTINE) {
                    let _ = ep.send(now, psess, f, m, None);
                }
            }
        });
        sim.run_for(Duration::from_secs(1));
        let n = sim.node(PUBLISHER);
        prop_assert!(n.publisher.as_ref().unwrap().playing().count() <= MAX_PEER_SUBSCRIBERS);
        prop_assert!(n.pub_events.len() < 200);
        prop_assert!(sim.node(PLAYER).player_events.len() < 200);
    }
}

/// Whether the player saw `stream` close, refused by the publisher or not.
fn player_closed(sim: &Sim<Peer>, stream: u32, rejected: bool) -> bool {
    let closed = PlayerEvent::Closed { stream, rejected };
    sim.node(PLAYER).player_events.contains(&closed)
}
