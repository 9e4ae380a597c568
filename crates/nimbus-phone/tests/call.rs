//! Two phones and a rendezvous server on loopback: a whole call, a call
//! across a server restart, a stranger refused, chat said as the call is
//! answered, and the phone's impairment sparing the server.

mod common;

use std::time::Duration;

use nimbus_media::TestSourceConfig;
use nimbus_phone::call::Event as CallEvent;
use nimbus_phone::driver::{self, Command, DriverConfig, Impairment, SinkSpec, SourceSpec};
use nimbus_phone::phone::{MediaPath, PhoneConfig, PhoneEvent};
use nimbus_server::{Server, ServerConfig};

use common::{call, T};

fn phone(
    user: &str,
    server: std::net::SocketAddr,
    seed: u64,
    sink: SinkSpec,
) -> driver::PhoneHandle {
    let cfg = PhoneConfig::new(user, format!("rtmfp://{server}/phone"), vec![server]);
    let d = DriverConfig {
        source: SourceSpec::Test(TestSourceConfig::default()),
        sink,
        seed: Some(seed),
        ..DriverConfig::default()
    };
    spawn(cfg, d)
}

fn spawn(cfg: PhoneConfig, d: DriverConfig) -> driver::PhoneHandle {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    driver::spawn(cfg, sock, d).unwrap()
}

async fn server() -> Server {
    server_at("127.0.0.1:0".parse().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_calls_bob_media_and_chat_go_direct() {
    let srv = server().await;
    let addr = srv.local_addrs()[0];
    let dir = tempfile::tempdir().unwrap();
    let mut alice = phone(
        "alice",
        addr,
        1,
        SinkSpec::File(dir.path().join("alice.flv")),
    );
    let mut bob = phone("bob", addr, 2, SinkSpec::File(dir.path().join("bob.flv")));
    call(&mut alice, &mut bob).await;
    // media flows both ways
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let a = alice.status().await.unwrap();
        let b = bob.status().await.unwrap();
        if a.received.video_frames >= 20
            && b.received.video_frames >= 20
            && a.received.audio_packets >= 50
            && b.received.audio_packets >= 50
        {
            assert_eq!(a.path.as_deref(), Some("direct"), "{a:?}");
            assert_eq!(b.path.as_deref(), Some("direct"), "{b:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "media did not flow: {a:?}\n{b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice.send(Command::Say("hello bob".into()));
    bob.send(Command::Say("hi alice".into()));
    let e = bob
        .wait_for(T, |e| matches!(e, PhoneEvent::Chat { local: false, .. }))
        .await;
    assert!(
        matches!(&e, Some(PhoneEvent::Chat { from, text, .. }) if from == "alice" && text == "hello bob"),
        "{e:?}"
    );
    let e = alice
        .wait_for(T, |e| matches!(e, PhoneEvent::Chat { local: false, .. }))
        .await;
    assert!(
        matches!(&e, Some(PhoneEvent::Chat { from, text, .. }) if from == "bob" && text == "hi alice"),
        "{e:?}"
    );
    let st = alice.status().await.unwrap();
    assert!(
        st.audio_latency.samples > 0 && st.audio_latency.p99_ms < 500.0,
        "{st:?}"
    );
    alice.send(Command::Hangup);
    for p in [&mut alice, &mut bob] {
        let e = p
            .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Ended)))
            .await;
        assert!(e.is_some());
    }
    assert_eq!(
        srv.metrics()
            .media_bytes_relayed_total
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let ra = alice.quit().await.unwrap();
    let rb = bob.quit().await.unwrap();
    assert_eq!(ra.recordings.len(), 1);
    assert_eq!(rb.recordings.len(), 1);
    for r in [&ra, &rb] {
        let len = std::fs::metadata(&r.recordings[0]).unwrap().len();
        assert!(len > 10_000, "{len}");
        assert_eq!(r.calls.len(), 1);
    }
    // the received FLV files decode cleanly (where ffmpeg is installed)
    for r in [&ra, &rb] {
        decodes_cleanly(&r.recordings[0]);
    }
    srv.shutdown().await;
}

/// The received FLV decodes cleanly, and ffprobe sees H.264 320x240 and PCM
/// audio. `SKIPPED:` without ffmpeg.
fn decodes_cleanly(path: &std::path::Path) {
    if !common::tools_present("decode check of a received FLV") {
        return;
    }
    common::assert_decodes_cleanly(path);
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("h264,320,240"), "{text}");
    assert!(text.contains("pcm_s16le"), "{text}");
}

async fn server_at(addr: std::net::SocketAddr) -> Server {
    let mut c = ServerConfig {
        listen: vec![addr],
        shards: 2,
        dh_groups: vec![2],
        ..ServerConfig::default()
    };
    c.shutdown_grace_secs = 1;
    Server::start(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_goes_on_while_the_server_restarts_and_phones_reconnect() {
    let srv = server().await;
    let addr = srv.local_addrs()[0];
    let mut alice = phone("alice", addr, 3, SinkSpec::None);
    let mut bob = phone("bob", addr, 4, SinkSpec::None);
    call(&mut alice, &mut bob).await;
    let frames = |p: &driver::PhoneHandle| {
        let p = p.commands.clone();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            p.send(Command::Status(tx)).unwrap();
            rx.await.unwrap()
        }
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    // the server goes away (clean shutdown: the phones are told)
    srv.shutdown().await;
    for p in [&mut alice, &mut bob] {
        assert!(
            p.wait_for(T, |e| matches!(e, PhoneEvent::ServerLost { .. }))
                .await
                .is_some(),
            "the phone did not notice the server leaving"
        );
    }
    let before = frames(&alice).await.received.video_frames;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = frames(&alice).await;
    assert!(
        during.received.video_frames >= before + 15,
        "media stopped with the server: {before} -> {}",
        during.received.video_frames
    );
    assert!(!during.online);
    assert_eq!(during.path.as_deref(), Some("direct"));
    // a new server on the same address; the phones come back by themselves
    let srv = server_at(addr).await;
    for p in [&mut alice, &mut bob] {
        let e = p
            .wait_for(T, |e| matches!(e, PhoneEvent::LoggedIn { .. }))
            .await;
        assert!(
            matches!(
                e,
                Some(PhoneEvent::LoggedIn {
                    reconnected: true,
                    ..
                })
            ),
            "{e:?}"
        );
    }
    let b = frames(&bob).await;
    assert!(b.online && b.call_state == "in-call", "{b:?}");
    // signalling works again: hang up through the new server
    bob.send(Command::Hangup);
    let e = alice
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::HungUp { .. }))
        })
        .await;
    assert!(
        matches!(
            e,
            Some(PhoneEvent::Call(CallEvent::HungUp { by_peer: true }))
        ),
        "{e:?}"
    );
    alice.quit().await.unwrap();
    bob.quit().await.unwrap();
    srv.shutdown().await;
}

/// A third peer that opens a direct session to a phone in a call and asks
/// for its stream is refused (`NetStream.Connect.Rejected`), as Flash's
/// `onPeerConnect` returning false; the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_not_in_the_call_is_refused() {
    use rand_core::SeedableRng;
    use rtmfp::{Endpoint, EndpointConfig, Event};
    use rtmfp_flash::message::{PeerPlayer, PlayerEvent};
    use rtmfp_flash::{Epd, FlashProfile, PeerId};
    use std::time::Instant;

    let srv = server().await;
    let addr = srv.local_addrs()[0];
    let mut alice = phone("alice", addr, 5, SinkSpec::None);
    let mut bob = phone("bob", addr, 6, SinkSpec::None);
    call(&mut alice, &mut bob).await;

    // eve: a bare Flash-profile endpoint, introduced to alice by the server
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(77);
    let profile = FlashProfile::client().build(&mut rng).unwrap();
    let eve_id = profile.peer_id().to_hex();
    let mut ep = Endpoint::new(
        EndpointConfig::default(),
        Box::new(profile),
        Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(78)),
        Instant::now(),
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let id: PeerId = alice.peer_id.parse().unwrap();
    let sid = ep
        .connect(Instant::now(), &Epd::peer(id).encode(), &[addr])
        .unwrap();
    let mut player: Option<PeerPlayer> = None;
    let mut refused = false;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    let deadline = Instant::now() + T;
    while Instant::now() < deadline && !refused {
        let now = Instant::now();
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            ep.handle_datagram(now, from, &buf[..n]);
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        while let Some(e) = ep.poll_event() {
            if matches!(e, Event::SessionOpened { session, .. } if session == sid) {
                let mut p = PeerPlayer::new(sid);
                p.play(&mut ep, now, "media-caller").unwrap();
                player = Some(p);
                continue;
            }
            if let Some(p) = player.as_mut() {
                p.on_event(&mut ep, now, &e);
            }
        }
        if let Some(p) = player.as_mut() {
            while let Some(e) = p.poll_event() {
                match e {
                    PlayerEvent::Status { status, .. } => {
                        assert_ne!(status.code, "NetStream.Play.Start", "a stranger was let in");
                        if status.code == "NetStream.Connect.Rejected" {
                            refused = true;
                        }
                    }
                    PlayerEvent::Audio { .. } | PlayerEvent::Video { .. } => {
                        panic!("a stranger received the call's media")
                    }
                    _ => {}
                }
            }
        }
        while let Some(dst) = ep.poll_transmit(now, &mut out) {
            let _ = sock.send_to(&out, dst);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(refused, "eve was not refused");
    let e = alice
        .wait_for(T, |e| matches!(e, PhoneEvent::Refused { .. }))
        .await;
    assert!(
        matches!(&e, Some(PhoneEvent::Refused { peer_id, stream }) if *peer_id == eve_id && stream == "media-caller"),
        "{e:?}"
    );
    // the call is unaffected
    let st = bob.status().await.unwrap();
    assert_eq!(st.call_state, "in-call");
    alice.quit().await.unwrap();
    bob.quit().await.unwrap();
    srv.shutdown().await;
}

/// Chat lines said the moment the call is established (as `nimbus phone
/// --say` does), before the peer's subscription has arrived, wait for it
/// and are delivered, and counted in the call's summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_said_as_the_call_is_accepted_is_delivered() {
    let srv = server().await;
    let addr = srv.local_addrs()[0];
    let mut alice = phone("alice", addr, 7, SinkSpec::None);
    let mut bob = phone("bob", addr, 8, SinkSpec::None);
    common::login(&mut alice).await;
    common::login(&mut bob).await;
    alice.send(Command::Call("bob".into()));
    let e = bob
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
        })
        .await;
    assert!(e.is_some(), "bob's phone did not ring");
    bob.send(Command::Accept);
    bob.send(Command::Say("hello alice, as I answer".into()));
    let e = alice
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Accepted)))
        .await;
    assert!(e.is_some(), "alice not told of the accept");
    alice.send(Command::Say("hi bob, as you answer".into()));
    for (p, from, text) in [
        (&mut alice, "bob", "hello alice, as I answer"),
        (&mut bob, "alice", "hi bob, as you answer"),
    ] {
        let e = p
            .wait_for(T, |e| {
                matches!(
                    e,
                    PhoneEvent::Chat { local: false, .. } | PhoneEvent::Notice(_)
                )
            })
            .await;
        assert!(
            matches!(&e, Some(PhoneEvent::Chat { from: f, text: t, .. }) if f == from && t == text),
            "{e:?}"
        );
    }
    alice.send(Command::Hangup);
    for p in [&mut alice, &mut bob] {
        let e = p
            .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Ended)))
            .await;
        assert!(e.is_some(), "the call did not end");
    }
    let (ra, rb) = (alice.quit().await.unwrap(), bob.quit().await.unwrap());
    for (r, peer) in [(&ra, "bob"), (&rb, "alice")] {
        assert_eq!(r.calls.len(), 1, "{r:?}");
        let c = &r.calls[0];
        assert_eq!((c.chat_sent, c.chat_received), (1, 1), "{c:?}");
        // the side hung up on still names its peer
        assert_eq!(c.peer_name.as_deref(), Some(peer), "{c:?}");
    }
    srv.shutdown().await;
}

/// The phone's impairment spares the server: with everything from the
/// peer lost, the phones still log in and signal through the server, no
/// direct session opens, and the call's media goes through the server's
/// relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impairment_of_everything_from_the_peer_leaves_the_relay() {
    let srv = server().await;
    let addr = srv.local_addrs()[0];
    let impaired = |user: &str, seed| {
        let mut cfg = PhoneConfig::new(user, format!("rtmfp://{addr}/phone"), vec![addr]);
        cfg.direct_timeout = Duration::from_secs(1);
        spawn(
            cfg,
            DriverConfig {
                source: SourceSpec::Test(TestSourceConfig::default()),
                impair: Some(Impairment {
                    loss: 1.0,
                    delay: Duration::from_millis(5),
                    jitter: Duration::from_millis(5),
                    seed,
                }),
                seed: Some(seed),
                ..DriverConfig::default()
            },
        )
    };
    let mut alice = impaired("alice", 9);
    let mut bob = impaired("bob", 10);
    call(&mut alice, &mut bob).await;
    for p in [&mut alice, &mut bob] {
        let e = p
            .wait_for(T, |e| {
                matches!(e, PhoneEvent::Path(MediaPath::Relay | MediaPath::Direct(_)))
            })
            .await;
        assert_eq!(e, Some(PhoneEvent::Path(MediaPath::Relay)));
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let a = alice.status().await.unwrap();
        let b = bob.status().await.unwrap();
        if a.received.video_frames >= 10 && b.received.video_frames >= 10 {
            assert!(a.relayed && b.relayed, "{a:?}\n{b:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no media through the relay: {a:?}\n{b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice.send(Command::Hangup);
    let e = bob
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Ended)))
        .await;
    assert!(e.is_some(), "the hang-up did not reach bob");
    alice.quit().await.unwrap();
    bob.quit().await.unwrap();
    srv.shutdown().await;
}
