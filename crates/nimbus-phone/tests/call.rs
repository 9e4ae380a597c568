//! Two phones and a rendezvous server on loopback: a whole call.

use std::time::Duration;

use nimbus_phone::call::Event as CallEvent;
use nimbus_phone::driver::{self, Command, DriverConfig, SinkSpec, SourceSpec};
use nimbus_phone::media::TestSourceConfig;
use nimbus_phone::phone::{MediaPath, PhoneConfig, PhoneEvent};
use nimbus_server::{Server, ServerConfig};

const T: Duration = Duration::from_secs(15);

fn phone(
    user: &str,
    server: std::net::SocketAddr,
    seed: u64,
    sink: SinkSpec,
) -> driver::PhoneHandle {
    let cfg = PhoneConfig::new(user, format!("rtmfp://{server}/phone"), vec![server]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let d = DriverConfig {
        source: SourceSpec::Test(TestSourceConfig::default()),
        sink,
        seed: Some(seed),
        ..DriverConfig::default()
    };
    driver::spawn(cfg, sock, d).unwrap()
}

async fn server() -> Server {
    let mut c = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 2,
        dh_groups: vec![2],
        ..ServerConfig::default()
    };
    c.shutdown_grace_secs = 1;
    Server::start(c).await.unwrap()
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
    for p in [&mut alice, &mut bob] {
        let e = p
            .wait_for(T, |e| {
                matches!(
                    e,
                    PhoneEvent::LoggedIn { .. } | PhoneEvent::LoginFailed { .. }
                )
            })
            .await;
        assert!(matches!(e, Some(PhoneEvent::LoggedIn { .. })), "{e:?}");
    }
    alice.send(Command::Call("bob".into()));
    let e = bob
        .wait_for(T, |e| {
            matches!(e, PhoneEvent::Call(CallEvent::Incoming { .. }))
        })
        .await;
    match e {
        Some(PhoneEvent::Call(CallEvent::Incoming {
            from_name,
            from_peer,
        })) => {
            assert_eq!(from_name, "alice");
            assert_eq!(from_peer, alice.peer_id);
        }
        other => panic!("no incoming call: {other:?}"),
    }
    bob.send(Command::Accept);
    let e = alice
        .wait_for(T, |e| matches!(e, PhoneEvent::Call(CallEvent::Accepted)))
        .await;
    assert!(e.is_some(), "alice not told of the accept");
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
    let _ = MediaPath::Relay;
    srv.shutdown().await;
}
