//! Three NetGroup members and a rendezvous server on loopback: one publishes
//! the test source as a multicast stream, two play it; posts reach every
//! other member once.

use std::net::SocketAddr;
use std::time::Duration;

use nimbus_group::{
    decode_post_text, encode_post_text, GroupCommand, GroupHandle, GroupMember, GroupMemberConfig,
    MemberCommand, MemberEvent, SinkSpec, SourceSpec,
};
use nimbus_media::{self as media, MediaKind, TestSourceConfig};
use nimbus_server::{Server, ServerConfig};
use rtmfp_netgroup::GroupEvent;
use tokio::sync::mpsc::Receiver;

/// Longest wait of the whole scenario.
const T: Duration = Duration::from_secs(20);

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

fn member(server: SocketAddr, spec: &str, seed: u64) -> (GroupHandle, Receiver<MemberEvent>) {
    let mut cfg = GroupMemberConfig::new(&format!("rtmfp://{server}/group"), spec).unwrap();
    cfg.seed = Some(seed);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    GroupMember::spawn(cfg, Some(sock)).unwrap()
}

/// Every post text seen in `rx` so far (other events are dropped).
fn drain_posts(rx: &mut Receiver<MemberEvent>, posts: &mut Vec<String>) {
    while let Ok(e) = rx.try_recv() {
        if let MemberEvent::Group(GroupEvent::PostingNotify { message, .. }) = e {
            posts.push(decode_post_text(&message));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_publishes_two_play_and_posts_reach_everyone_once() {
    let srv = server().await;
    let addr = srv.local_addrs()[0];
    let spec = GroupMemberConfig::spec_for("nimbus-test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (publisher, mut ev_p) = member(addr, &spec, 11);
    let (alice, mut ev_a) = member(addr, &spec, 12);
    let (bob, mut ev_b) = member(addr, &spec, 13);
    publisher
        .send(GroupCommand::Publish {
            name: "cam".into(),
            source: SourceSpec::Test(TestSourceConfig::default()),
        })
        .await
        .unwrap();
    let rec = dir.path().join("alice.flv");
    alice
        .send(GroupCommand::Play {
            name: "cam".into(),
            sink: SinkSpec::File(rec.clone()),
        })
        .await
        .unwrap();
    bob.send(MemberCommand::Play("cam".into())).await.unwrap();

    // media reaches both players
    let start = tokio::time::Instant::now();
    let deadline = start + T;
    loop {
        let a = alice.status().await.unwrap();
        let b = bob.status().await.unwrap();
        let frames = |s: &nimbus_group::GroupStatus| s.playing.get("cam").map_or(0, |p| p.video);
        // 3 s of video at 15 frames/s: past the second key frame (at 2 s)
        if frames(&a) >= 45 && frames(&b) >= 45 {
            eprintln!(
                "media after {:?}: alice {:?} / {:?}, bob {:?} / {:?}",
                start.elapsed(),
                a.playing["cam"],
                a.stats,
                b.playing["cam"],
                b.stats
            );
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let p = publisher.status().await.unwrap();
            panic!("media did not reach the players:\npublisher {p:#?}\nalice {a:#?}\nbob {b:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // a post from each member reaches the two others, once
    let mut seen = [Vec::new(), Vec::new(), Vec::new()];
    drain_posts(&mut ev_p, &mut seen[0]);
    drain_posts(&mut ev_a, &mut seen[1]);
    drain_posts(&mut ev_b, &mut seen[2]);
    let post = |t: &str| MemberCommand::Post(encode_post_text(t));
    publisher.send(post("from the publisher")).await.unwrap();
    alice.send(post("from alice")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        drain_posts(&mut ev_p, &mut seen[0]);
        drain_posts(&mut ev_a, &mut seen[1]);
        drain_posts(&mut ev_b, &mut seen[2]);
        let done = seen[0].contains(&"from alice".to_string())
            && seen[1].contains(&"from the publisher".to_string())
            && seen[2].len() >= 2;
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // let duplicates, if any, arrive
    tokio::time::sleep(Duration::from_millis(500)).await;
    drain_posts(&mut ev_p, &mut seen[0]);
    drain_posts(&mut ev_a, &mut seen[1]);
    drain_posts(&mut ev_b, &mut seen[2]);
    assert_eq!(seen[0], vec!["from alice".to_string()], "publisher");
    assert_eq!(seen[1], vec!["from the publisher".to_string()], "alice");
    let mut b = seen[2].clone();
    b.sort();
    assert_eq!(
        b,
        vec!["from alice".to_string(), "from the publisher".to_string()],
        "bob"
    );

    let sa = alice.quit().await.unwrap();
    let sb = bob.quit().await.unwrap();
    let sp = publisher.quit().await.unwrap();
    assert!(sp.stats.fragments_published > 0, "{sp:?}");
    assert!(sp.publishing["cam"] > 0, "{sp:?}");
    for s in [&sa, &sb] {
        assert!(s.first_media_after_join.is_some(), "{s:?}");
        assert_eq!(s.posts_received, s.stats.posts_delivered, "{s:?}");
    }
    // the recording is a readable FLV with video
    let flv = std::fs::read(&rec).unwrap();
    let tags = media::flv::read_all(&flv).unwrap();
    assert_eq!(tags.len() as u64, sa.playing["cam"].written);
    assert!(
        tags.iter().filter(|t| t.kind == MediaKind::Video).count() >= 10,
        "{} tags",
        tags.len()
    );
    // it starts at a key frame and decodes cleanly (where ffmpeg is installed)
    let first_video = tags.iter().find(|t| t.kind == MediaKind::Video).unwrap();
    assert!(first_video.is_keyframe(), "{first_video:?}");
    if nimbus_testkit::ffmpeg::tools_present("group recording decodes") {
        nimbus_testkit::ffmpeg::assert_decodes_cleanly(&rec);
    }
    srv.shutdown().await;
}

/// In a group without multicast, streams asked for before the join are
/// refused once joined: the member says so and forgets them, no source
/// starts, and quitting does not wait for anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_refused_at_the_join_are_reported_and_forgotten() {
    let srv = server().await;
    let addr = srv.local_addrs()[0];
    let spec = rtmfp_netgroup::GroupSpecifier::new("posting-only")
        .unwrap()
        .posting_enabled(true)
        .group_spec_with_authorizations();
    let (m, mut ev) = member(addr, &spec, 31);
    // sent at once: the member is still connecting
    m.send(GroupCommand::Publish {
        name: "cam".into(),
        source: SourceSpec::Test(TestSourceConfig::default()),
    })
    .await
    .unwrap();
    m.send(MemberCommand::Play("cam".into())).await.unwrap();
    let mut errors = Vec::new();
    let joined = tokio::time::timeout(T, async {
        while let Some(e) = ev.recv().await {
            if let MemberEvent::Error(s) = e {
                errors.push(s);
                if errors.len() == 2 {
                    return;
                }
            }
        }
    })
    .await;
    assert!(joined.is_ok(), "errors so far: {errors:?}");
    errors.sort();
    assert!(errors[0].starts_with("play cam: "), "{errors:?}");
    assert!(errors[1].starts_with("publish cam: "), "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("multicast")), "{errors:?}");
    let s = m.status().await.unwrap();
    assert!(s.joined, "{s:?}");
    assert!(s.playing.is_empty() && s.publishing.is_empty(), "{s:?}");
    let started = tokio::time::Instant::now();
    let last = m.quit().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(last.joined && last.publishing.is_empty(), "{last:?}");
    srv.shutdown().await;
}
