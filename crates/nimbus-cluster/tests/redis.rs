//! Behaviour against a real `redis-server` (started here on a free port, in
//! a temporary directory, without persistence; killed at the end). Without
//! `redis-server` on PATH each test prints `SKIPPED: redis-server not found`
//! and passes.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nimbus_cluster::{hex, Cluster, ClusterConfig, ConnState, Incoming, Message, PeerRecord, B64};

struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn redis_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Redis {
    fn start() -> Option<Redis> {
        let Some(_) = redis_binary() else {
            println!("SKIPPED: redis-server not found");
            return None;
        };
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        Some(r)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // ours answered, not another process that took the port meanwhile
        std::thread::sleep(Duration::from_millis(50));
        let exited = self.child.as_mut().map(|c| c.try_wait());
        assert!(
            matches!(exited, Some(Ok(None))),
            "redis-server exited (port {} taken?)",
            self.port
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

const TTL_MS: u64 = 2000;

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 1935 + i))
}

fn config(redis: &Redis, node: &str, i: u16) -> ClusterConfig {
    let mut c = ClusterConfig::new(redis.url(), node, addr(i));
    c.prefix = "t:".into();
    // short enough for a quick test, loose enough for a loaded machine
    c.ttl = Duration::from_millis(TTL_MS);
    c.heartbeat = Duration::from_millis(250);
    c.timeout = Duration::from_secs(2);
    c.retry = Duration::from_millis(100);
    c
}

async fn node(redis: &Redis, name: &str, i: u16) -> (Cluster, Incoming) {
    let (c, rx) = Cluster::start(config(redis, name, i)).unwrap();
    assert!(
        c.wait_up(Duration::from_secs(5)).await,
        "{name} did not join"
    );
    (c, rx)
}

fn peer(i: u8) -> [u8; 32] {
    [i; 32]
}

fn record(port: u16) -> PeerRecord {
    PeerRecord {
        public: SocketAddr::from(([198, 51, 100, 1], port)),
        reported: vec![
            SocketAddr::from(([10, 0, 0, 1], port)),
            SocketAddr::from(([10, 0, 0, 1], port)),
        ],
        introducible: true,
        since_ms: 0,
    }
}

/// Polls `f` until it is true or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends probes from `from` to `to` until `rx` (`to`'s queue) gets one
/// (channel subscriptions are made by their own task, a moment after
/// joining); empties the queue.
async fn heard(from: &Cluster, to: &str, rx: &mut Incoming, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let _ = from.send(to, Message::LookupReply { id: 0, peer: None });
        from.flush().await;
        if tokio::time::timeout(Duration::from_millis(100), rx.recv())
            .await
            .is_ok()
        {
            while rx.try_recv().is_ok() {}
            return true;
        }
    }
    false
}

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_others_state() {
    let Some(redis) = Redis::start() else { return };
    tokio::time::timeout(LIMIT, async {
        let (a, _ra) = node(&redis, "a", 1).await;
        let (b, _rb) = node(&redis, "b", 2).await;
        let (c, _rc) = node(&redis, "c", 3).await;
        a.set_sessions(30);
        b.set_sessions(10);
        c.set_sessions(20);

        a.register_peer(peer(1), record(1001)).unwrap();
        b.register_peer(peer(2), record(1002)).unwrap();
        assert!(a.claim_user("Alice", peer(1)).await.unwrap());
        assert!(b.claim_user("bob", peer(2)).await.unwrap());
        // the name is taken on another node (case-insensitively)
        assert!(!b.claim_user("ALICE", peer(2)).await.unwrap());
        assert!(a.claim_stream("live", "cam1", peer(1)).await.unwrap());
        assert!(!c.claim_stream("live", "cam1", peer(3)).await.unwrap());
        let g = [9u8; 32];
        a.join_group("chat", &g, peer(1)).unwrap();
        b.join_group("chat", &g, peer(2)).unwrap();
        for n in [&a, &b, &c] {
            n.flush().await;
        }

        for n in [&a, &b, &c] {
            let p = n.find_peer(&peer(2)).await.unwrap().expect("peer 2");
            assert_eq!(p.node.name, "b");
            assert_eq!(p.node.addr, addr(2));
            assert_eq!(p.record.public.port(), 1002);
            assert_eq!(p.record.reported.len(), 1, "duplicates removed");
            let u = n.find_user("alice").await.unwrap().expect("alice");
            assert_eq!((u.node.name.as_str(), u.peer), ("a", peer(1)));
            assert_eq!(u.name, "Alice");
            let s = n.find_stream("live", "cam1").await.unwrap().expect("cam1");
            assert_eq!((s.node.name.as_str(), s.peer), ("a", peer(1)));
            let members = n.group_members("chat", &g).await.unwrap();
            let got: Vec<_> = members.iter().map(|m| (m.peer, m.node.as_str())).collect();
            assert_eq!(got, vec![(peer(1), "a"), (peer(2), "b")]);
            assert!(n.find_peer(&peer(7)).await.unwrap().is_none());
            assert!(n.find_user("carol").await.unwrap().is_none());
        }

        // load: the next heartbeat publishes it
        assert!(
            eventually(Duration::from_secs(3), || async {
                let nodes = c.live_nodes().await.unwrap();
                nodes.len() == 3 && nodes.iter().any(|n| n.name == "b" && n.sessions == 10)
            })
            .await
        );
        assert_eq!(a.least_loaded().await.unwrap().unwrap().name, "b");

        // releases
        a.release_user("alice", &peer(9)); // not the holder: no effect
        a.unregister_peer(&peer(1));
        a.release_stream("live", "cam1", &peer(1));
        b.leave_group("chat", &g, &peer(2));
        a.flush().await;
        b.flush().await;
        assert!(c.find_peer(&peer(1)).await.unwrap().is_none());
        assert!(c.find_user("alice").await.unwrap().is_some());
        assert!(c.find_stream("live", "cam1").await.unwrap().is_none());
        assert!(c.claim_stream("live", "cam1", peer(3)).await.unwrap());
        assert_eq!(c.group_members("chat", &g).await.unwrap().len(), 1);

        // leaving removes the node's state at once
        b.leave().await;
        assert!(a.find_peer(&peer(2)).await.unwrap().is_none());
        assert!(a.find_user("bob").await.unwrap().is_none());
        assert_eq!(a.live_nodes().await.unwrap().len(), 2);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_disappears_within_its_ttl() {
    let Some(redis) = Redis::start() else { return };
    tokio::time::timeout(LIMIT, async {
        let (a, _ra) = node(&redis, "a", 1).await;
        let (b, rb) = node(&redis, "b", 2).await;
        a.register_peer(peer(1), record(1001)).unwrap();
        b.register_peer(peer(2), record(1002)).unwrap();
        assert!(b.claim_user("bob", peer(2)).await.unwrap());
        b.join_group("chat", &[5; 32], peer(2)).unwrap();
        b.flush().await;
        assert!(a.find_peer(&peer(2)).await.unwrap().is_some());

        // b crashes: no leave, its heartbeat just stops
        let stopped = Instant::now();
        drop(b);
        drop(rb);
        let gone = eventually(Duration::from_secs(6), || async {
            a.find_peer(&peer(2)).await.unwrap().is_none()
        })
        .await;
        assert!(gone, "b's peer outlived its TTL");
        let waited = stopped.elapsed();
        // it expires at its last heartbeat + TTL; the rest is polling
        assert!(waited <= Duration::from_millis(TTL_MS + 1000), "{waited:?}");
        assert!(a.find_user("bob").await.unwrap().is_none());
        assert!(a.group_members("chat", &[5; 32]).await.unwrap().is_empty());
        let nodes = a.live_nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].name, "a");
        // the name is free again
        assert!(a.claim_user("bob", peer(1)).await.unwrap());

        // a live node's state does not expire: well past the TTL it is there
        tokio::time::sleep(Duration::from_millis(TTL_MS + 500)).await;
        let p = a.find_peer(&peer(1)).await.unwrap().expect("a's own peer");
        assert_eq!(p.node.name, "a");
    })
    .await
    .expect("test timed out");
}

async fn recv(rx: &mut Incoming) -> Option<nimbus_cluster::Envelope> {
    tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_right_node() {
    let Some(redis) = Redis::start() else { return };
    tokio::time::timeout(LIMIT, async {
        let (a, mut ra) = node(&redis, "a", 1).await;
        let (b, mut rb) = node(&redis, "b", 2).await;
        let (_c, mut rc) = node(&redis, "c", 3).await;
        // subscriptions are made by their own task: wait until b hears
        assert!(heard(&a, "b", &mut rb, Duration::from_secs(3)).await);
        assert!(heard(&a, "c", &mut rc, Duration::from_secs(3)).await);
        assert!(heard(&b, "a", &mut ra, Duration::from_secs(3)).await);
        while rb.try_recv().is_ok() {}

        let ihello = Message::ForwardIHello {
            target: hex(&peer(2)),
            initiator: "203.0.113.5:40000".parse().unwrap(),
            epd: B64(vec![0x0f; 34]),
            tag: B64(vec![7; 16]),
        };
        a.send("b", ihello.clone()).unwrap();
        let relay = Message::Relay {
            target: hex(&peer(2)),
            sender: hex(&peer(1)),
            args: B64(vec![0x02, 0x00, 0x02, b'h', b'i']),
        };
        a.send("b", relay.clone()).unwrap();
        a.send(
            "c",
            Message::StreamPull {
                app: "live".into(),
                name: "cam1".into(),
                pull_from: addr(1),
            },
        )
        .unwrap();
        let got = recv(&mut rb).await.expect("ihello at b");
        assert_eq!((got.from.as_str(), &got.msg), ("a", &ihello));
        assert_eq!(got.incarnation, a.incarnation());
        assert_eq!(recv(&mut rb).await.expect("relay at b").msg, relay);
        let pull = recv(&mut rc).await.expect("pull at c");
        assert!(matches!(pull.msg, Message::StreamPull { .. }));
        assert!(rc.try_recv().is_err(), "c got only its own message");

        // a broadcast reaches the others, not the sender
        b.broadcast(Message::SendToUser {
            user: "carol".into(),
            sender: "bob".into(),
            args: B64(vec![5, 6]),
        })
        .unwrap();
        assert!(matches!(
            recv(&mut ra).await.expect("at a").msg,
            Message::SendToUser { .. }
        ));
        assert!(matches!(
            recv(&mut rc).await.expect("at c").msg,
            Message::SendToUser { .. }
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rb.try_recv().is_err(), "no echo of b's own broadcast");

        // a message to a node nobody runs is counted as unheard
        a.send(
            "nobody",
            Message::Lookup {
                id: 1,
                user: "x".into(),
            },
        )
        .unwrap();
        a.flush().await;
        assert!(
            a.metrics()
                .messages_unheard_total
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );

        // malformed payloads on b's channel: counted, dropped, b goes on
        let client = redis::Client::open(redis.url()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let junk: [&[u8]; 4] = [
            b"\xff\xfe not json",
            br#"{"v":1,"from":"a","msg":{"type":"relay","target":"zz","sender":"zz","args":""}}"#,
            br#"{"v":9,"from":"a","msg":{"type":"lookup","id":1,"user":"u"}}"#,
            br#"{"v":1,"from":"bad name!","msg":{"type":"lookup","id":1,"user":"u"}}"#,
        ];
        for j in junk {
            let _: i64 = redis::cmd("PUBLISH")
                .arg("t:msg:b")
                .arg(j)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
        let _: i64 = redis::cmd("PUBLISH")
            .arg("t:msg:b")
            .arg(vec![b'x'; 200 * 1024])
            .query_async(&mut raw)
            .await
            .unwrap();
        a.send("b", Message::LookupReply { id: 3, peer: None })
            .unwrap();
        let after = recv(&mut rb).await.expect("valid message after junk");
        assert_eq!(after.msg, Message::LookupReply { id: 3, peer: None });
        let m = b.metrics();
        assert_eq!(
            m.messages_malformed_total
                .load(std::sync::atomic::Ordering::Relaxed),
            5
        );
        assert!(m
            .render()
            .contains("nimbus_cluster_messages_malformed_total 5\n"));
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_resynced_after_redis_restarts() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let (a, _ra) = node(&redis, "a", 1).await;
        let (b, mut rb) = node(&redis, "b", 2).await;
        a.register_peer(peer(1), record(1001)).unwrap();
        assert!(a.claim_user("alice", peer(1)).await.unwrap());
        assert!(a.claim_stream("live", "cam1", peer(1)).await.unwrap());
        a.join_group("chat", &[4; 32], peer(1)).unwrap();
        a.flush().await;
        assert!(b.find_peer(&peer(1)).await.unwrap().is_some());

        let mut state = a.state();
        redis.kill();
        tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| *s == ConnState::Lost),
        )
        .await
        .expect("a saw the loss")
        .unwrap();
        assert!(
            b.find_peer(&peer(1)).await.is_err(),
            "lookups fail while lost"
        );
        assert_eq!(
            a.metrics()
                .redis_up
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // changes while lost are kept locally
        a.register_peer(peer(11), record(1011)).unwrap();
        a.unregister_peer(&peer(1));
        a.register_peer(peer(1), record(2001)).unwrap();
        assert!(a.claim_user("amy", peer(11)).await.unwrap());
        assert!(a
            .send(
                "b",
                Message::Lookup {
                    id: 1,
                    user: "x".into()
                }
            )
            .is_err());

        // Redis comes back empty: both nodes register everything again
        redis.spawn();
        tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| *s == ConnState::Resynced),
        )
        .await
        .expect("a resynced")
        .unwrap();
        assert!(b.wait_up(Duration::from_secs(5)).await);
        assert!(
            eventually(Duration::from_secs(5), || async {
                matches!(b.find_peer(&peer(11)).await, Ok(Some(_)))
            })
            .await
        );
        let p = b.find_peer(&peer(1)).await.unwrap().expect("peer 1");
        assert_eq!(p.record.public.port(), 2001);
        assert_eq!(b.find_user("amy").await.unwrap().unwrap().peer, peer(11));
        assert_eq!(b.find_user("ALICE").await.unwrap().unwrap().peer, peer(1));
        assert!(b.find_stream("live", "cam1").await.unwrap().is_some());
        assert_eq!(b.group_members("chat", &[4; 32]).await.unwrap().len(), 1);
        assert_eq!(b.live_nodes().await.unwrap().len(), 2);
        let m = a.metrics();
        assert!(m.resyncs_total.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        assert!(
            m.redis_losses_total
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        assert_eq!(m.redis_up.load(std::sync::atomic::Ordering::Relaxed), 1);

        // and the channels work again
        assert!(heard(&a, "b", &mut rb, Duration::from_secs(5)).await);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_becomes_a_resync() {
    let Some(redis) = Redis::start() else { return };
    tokio::time::timeout(LIMIT, async {
        let mut cfg = config(&redis, "a", 1);
        cfg.outgoing_queue = 16;
        let (a, _ra) = Cluster::start(cfg).unwrap();
        assert!(a.wait_up(Duration::from_secs(5)).await);
        let (b, _rb) = node(&redis, "b", 2).await;
        // far more changes at once than the queue holds
        for i in 0..=255u8 {
            a.register_peer(peer(i), record(u16::from(i) + 1000))
                .unwrap();
        }
        for i in 0..100u8 {
            a.unregister_peer(&peer(i));
        }
        assert_eq!(
            a.metrics().peers.load(std::sync::atomic::Ordering::Relaxed),
            156
        );
        // the next heartbeat writes the whole local copy
        assert!(
            eventually(Duration::from_secs(5), || async {
                matches!(b.find_peer(&peer(255)).await, Ok(Some(_)))
                    && matches!(b.find_peer(&peer(100)).await, Ok(Some(_)))
            })
            .await
        );
        for i in [0u8, 50, 99] {
            assert!(b.find_peer(&peer(i)).await.unwrap().is_none());
        }
        for i in [100u8, 180, 254] {
            let p = b.find_peer(&peer(i)).await.unwrap().expect("registered");
            assert_eq!(p.record.public.port(), u16::from(i) + 1000);
        }
    })
    .await
    .expect("test timed out");
}
