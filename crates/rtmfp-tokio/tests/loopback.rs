//! End-to-end tests of the tokio driver over real loopback UDP sockets,
//! with the plain (checksum-only) crypto profile.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmfp::{CloseReason, EndpointConfig, OpenError, PlainProfile, Priority, Role};
use rtmfp_tokio::{DriverConfig, Endpoint, EndpointEvent, Error, RecvFlow, SendFlow, Session};

/// Upper bound of any single test.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// Upper bound of one step inside a test.
const STEP: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

async fn run_test(fut: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, fut)
        .await
        .expect("test exceeded its time limit");
}

/// The default engine configuration, modified by `f` (the type is
/// non-exhaustive, so it cannot be built with a struct literal).
fn engine_config(f: impl FnOnce(&mut EndpointConfig)) -> EndpointConfig {
    let mut c = EndpointConfig::default();
    f(&mut c);
    c
}

fn driver_config(f: impl FnOnce(&mut DriverConfig)) -> DriverConfig {
    let mut c = DriverConfig::default();
    f(&mut c);
    c
}

fn endpoint(addr: &str, name: &str) -> Endpoint {
    endpoint_with(
        addr,
        name,
        EndpointConfig::default(),
        DriverConfig::default(),
    )
}

fn endpoint_with(addr: &str, name: &str, config: EndpointConfig, driver: DriverConfig) -> Endpoint {
    let addr: SocketAddr = addr.parse().expect("address");
    Endpoint::bind_with(addr, config, Box::new(PlainProfile::new(name)), driver).expect("bind")
}

/// Connects `client` to `server` and returns (client side, server side).
async fn connect(client: &Endpoint, server: &Endpoint, server_name: &[u8]) -> (Session, Session) {
    let target = server.local_addr();
    let (c, s) = tokio::join!(
        bounded("connect", client.connect(server_name, &[target])),
        bounded("accept", server.accept())
    );
    let c = c.expect("connect");
    let s = s.expect("accept");
    (c, s)
}

/// A server and a client endpoint on IPv4 loopback, default configurations.
fn server_and_client() -> (Endpoint, Endpoint) {
    (
        endpoint("127.0.0.1:0", "server"),
        endpoint("127.0.0.1:0", "client"),
    )
}

/// [`server_and_client`], connected: the endpoints and the client's and
/// the server's side of the session.
async fn connected_pair() -> (Endpoint, Endpoint, Session, Session) {
    let (server, client) = server_and_client();
    let (cs, ss) = connect(&client, &server, b"server").await;
    (server, client, cs, ss)
}

/// Shuts the endpoints down, in order.
async fn shutdown(endpoints: &[&Endpoint]) {
    for e in endpoints {
        e.shutdown().await;
    }
}

/// Opens a flow with no association.
async fn open_flow(session: &Session, metadata: &[u8], priority: Priority) -> SendFlow {
    session
        .open_flow(metadata, None, priority)
        .await
        .expect("open")
}

async fn accept_flow(session: &Session) -> RecvFlow {
    bounded("accept_flow", session.accept_flow())
        .await
        .expect("an incoming flow")
}

/// xorshift64* byte stream, deterministic from a seed.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// FNV-1a, 64 bits.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

async fn exchange_several_flows(client: &Endpoint, server: &Endpoint) {
    let (cs, ss) = connect(client, server, b"server").await;
    assert_eq!(cs.role(), Role::Initiator);
    assert_eq!(ss.role(), Role::Responder);
    assert_eq!(cs.peer_addr(), server.local_addr());
    assert_eq!(ss.peer_addr(), client.local_addr());

    // Three flows from the client, each answered by a return flow.
    const FLOWS: usize = 3;
    const MESSAGES: usize = 50;
    let mut sends = Vec::new();
    for i in 0..FLOWS {
        let meta = format!("flow-{i}");
        let f = cs
            .open_flow(meta.as_bytes(), None, Priority::ROUTINE)
            .await
            .expect("open_flow");
        sends.push(f);
    }
    for (i, f) in sends.iter_mut().enumerate() {
        for m in 0..MESSAGES {
            f.send(Bytes::from(format!("c{i}:{m}")))
                .await
                .expect("send");
        }
    }

    let mut returns = Vec::new();
    let mut seen = [false; FLOWS];
    for _ in 0..FLOWS {
        let mut rf = accept_flow(&ss).await;
        let meta = std::str::from_utf8(rf.metadata()).expect("utf8").to_owned();
        let i: usize = meta
            .strip_prefix("flow-")
            .expect("prefix")
            .parse()
            .expect("index");
        assert!(!seen[i], "flow {i} delivered twice");
        seen[i] = true;
        assert_eq!(rf.association(), None);
        for m in 0..MESSAGES {
            let msg = bounded("recv", rf.recv()).await.expect("message");
            assert_eq!(msg.data, Bytes::from(format!("c{i}:{m}")));
            assert!(!msg.after_gap);
        }
        // Answer on a return flow associated with the client's flow.
        let mut back = ss
            .open_flow(
                format!("return-{i}").as_bytes(),
                Some(rf.id()),
                Priority::PRIORITY,
            )
            .await
            .expect("open return flow");
        for m in 0..MESSAGES {
            back.send(Bytes::from(format!("s{i}:{m}")))
                .await
                .expect("send back");
        }
        returns.push((rf, back));
    }

    // The client sees the return flows, associated with its own flows.
    let mut client_returns = Vec::new();
    for _ in 0..FLOWS {
        let mut rf = accept_flow(&cs).await;
        let meta = std::str::from_utf8(rf.metadata()).expect("utf8").to_owned();
        let i: usize = meta
            .strip_prefix("return-")
            .expect("prefix")
            .parse()
            .expect("index");
        assert_eq!(rf.association(), Some(sends[i].id()));
        for m in 0..MESSAGES {
            let msg = bounded("recv back", rf.recv()).await.expect("message");
            assert_eq!(msg.data, Bytes::from(format!("s{i}:{m}")));
        }
        client_returns.push(rf);
    }

    // Orderly flow close: the receiving side sees the end of the flow.
    for f in sends {
        bounded("close flow", f.close()).await.expect("close flow");
    }
    for (mut rf, back) in returns {
        assert!(bounded("end of flow", rf.recv()).await.is_none());
        assert!(rf.is_finished());
        bounded("close return flow", back.close())
            .await
            .expect("close return flow");
    }
    for mut rf in client_returns {
        assert!(bounded("end of return flow", rf.recv()).await.is_none());
        assert!(rf.is_finished());
    }

    assert_eq!(bounded("close", cs.close()).await, CloseReason::Local);
    assert_eq!(bounded("closed", ss.closed()).await, CloseReason::Remote);
}

#[tokio::test]
async fn several_flows_both_ways_ipv4() {
    run_test(async {
        let (server, client) = server_and_client();
        exchange_several_flows(&client, &server).await;
        shutdown(&[&client, &server]).await;
    })
    .await;
}

#[tokio::test]
async fn several_flows_both_ways_ipv6() {
    run_test(async {
        let probe = std::net::UdpSocket::bind("[::1]:0");
        if let Err(e) = probe {
            eprintln!("SKIPPED several_flows_both_ways_ipv6: IPv6 loopback unavailable ({e})");
            return;
        }
        let server = endpoint("[::1]:0", "server");
        let client = endpoint("[::1]:0", "client");
        assert!(server.local_addr().is_ipv6());
        exchange_several_flows(&client, &server).await;
        shutdown(&[&client, &server]).await;
    })
    .await;
}

#[tokio::test]
async fn dual_stack_socket_reaches_ipv4_peer() {
    run_test(async {
        let server = match Endpoint::bind(
            "[::]:0".parse().expect("addr"),
            EndpointConfig::default(),
            Box::new(PlainProfile::new("server")),
        ) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("SKIPPED dual_stack_socket_reaches_ipv4_peer: no IPv6 ({e})");
                return;
            }
        };
        let client = endpoint("127.0.0.1:0", "client");
        let target: SocketAddr = format!("127.0.0.1:{}", server.local_addr().port())
            .parse()
            .expect("addr");
        let (c, s) = tokio::join!(
            bounded("connect", client.connect(b"server", &[target])),
            bounded("accept", server.accept())
        );
        let (c, s) = (c.expect("connect"), s.expect("accept"));
        // The server reports the IPv4 peer without the IPv4-mapped form.
        assert_eq!(s.peer_addr(), client.local_addr());
        let mut f = open_flow(&c, b"x", Priority::ROUTINE).await;
        f.send(&b"over dual stack"[..]).await.expect("send");
        let mut rf = accept_flow(&s).await;
        let msg = bounded("recv", rf.recv()).await.expect("message");
        assert_eq!(&msg.data[..], b"over dual stack");
        shutdown(&[&client, &server]).await;
    })
    .await;
}

#[tokio::test]
async fn many_sessions_on_one_socket() {
    run_test(async {
        let server = endpoint("127.0.0.1:0", "server");
        let server_task = {
            let server = server.clone();
            tokio::spawn(async move {
                // Echo every message of every flow of every session.
                let mut tasks = Vec::new();
                for _ in 0..5 {
                    let Some(s) = server.accept().await else {
                        break;
                    };
                    tasks.push(tokio::spawn(async move {
                        let mut rf = s.accept_flow().await.expect("flow");
                        let mut back = s
                            .open_flow(b"echo", Some(rf.id()), Priority::ROUTINE)
                            .await
                            .expect("open echo");
                        while let Some(m) = rf.recv().await {
                            back.send(m.data).await.expect("echo");
                        }
                        back.close().await.expect("close echo");
                        s
                    }));
                }
                let mut sessions = Vec::new();
                for t in tasks {
                    sessions.push(t.await.expect("join"));
                }
                sessions
            })
        };
        let mut clients = Vec::new();
        for i in 0..5 {
            let client = endpoint("127.0.0.1:0", &format!("client-{i}"));
            let server_addr = server.local_addr();
            clients.push(tokio::spawn(async move {
                let s = client
                    .connect(b"server", &[server_addr])
                    .await
                    .expect("connect");
                let mut f = open_flow(&s, b"ping", Priority::ROUTINE).await;
                for m in 0..20 {
                    f.send(Bytes::from(format!("{i}/{m}"))).await.expect("send");
                }
                f.close().await.expect("close");
                let mut echo = s.accept_flow().await.expect("echo flow");
                let mut got = 0;
                while let Some(m) = echo.recv().await {
                    assert_eq!(m.data, Bytes::from(format!("{i}/{got}")));
                    got += 1;
                }
                assert!(echo.is_finished());
                assert_eq!(got, 20);
                s.close().await;
                client.shutdown().await;
            }));
        }
        for c in clients {
            bounded("client", c).await.expect("client task");
        }
        let sessions = bounded("server", server_task).await.expect("server task");
        assert_eq!(sessions.len(), 5);
        for s in &sessions {
            assert_eq!(bounded("closed", s.closed()).await, CloseReason::Remote);
        }
        server.shutdown().await;
    })
    .await;
}

/// Sends 20 MiB of pseudo-random data on one flow and checks that the
/// receiver got exactly those bytes (length and FNV-1a checksum).
async fn twenty_megabytes(label: &str, config: EndpointConfig) {
    const TOTAL: usize = 20 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let server = endpoint_with(
        "127.0.0.1:0",
        "server",
        config.clone(),
        DriverConfig::default(),
    );
    let client = endpoint_with("127.0.0.1:0", "client", config, DriverConfig::default());
    let (cs, ss) = connect(&client, &server, b"server").await;

    let receiver = tokio::spawn(async move {
        let mut rf = ss.accept_flow().await.expect("flow");
        let mut hash = Fnv::new();
        let mut len = 0usize;
        let mut max_buffered = 0usize;
        while let Some(m) = rf.recv().await {
            // Queued in the handle, not counting the message just taken.
            max_buffered = max_buffered.max(rf.buffered());
            hash.update(&m.data);
            len += m.data.len();
        }
        assert!(rf.is_finished(), "flow ended without being finished");
        (len, hash.0, max_buffered, ss)
    });

    let started = Instant::now();
    let mut f = open_flow(&cs, b"bulk", Priority::BULK).await;
    let mut pattern = Pattern(0x1234_5678_9abc_def1);
    let mut hash = Fnv::new();
    let mut sent = 0usize;
    while sent < TOTAL {
        let mut chunk = vec![0u8; CHUNK.min(TOTAL - sent)];
        pattern.fill(&mut chunk);
        hash.update(&chunk);
        sent += chunk.len();
        bounded("send", f.send(chunk)).await.expect("send");
    }
    bounded("close", f.close()).await.expect("close");
    let (len, rhash, max_buffered, ss) = bounded("receiver", receiver).await.expect("receiver");
    let elapsed = started.elapsed();
    assert_eq!(len, TOTAL);
    assert_eq!(rhash, hash.0, "checksum mismatch");
    let mbps = (TOTAL as f64 * 8.0) / elapsed.as_secs_f64() / 1e6;
    let cstats = client.io_stats().await.expect("stats");
    let sstats = server.io_stats().await.expect("stats");
    let info = cs.info().await.expect("info");
    println!(
        "20 MiB ({label}) in {elapsed:?}: {mbps:.0} Mbit/s; {} datagrams in {} sendmsg calls \
         (largest GSO batch {}); receiver {} datagrams in {} recvmmsg calls (largest batch {}); \
         retransmitted fragments {}; largest handle buffer {max_buffered} B",
        cstats.datagrams_sent,
        cstats.send_calls,
        cstats.max_send_batch,
        sstats.datagrams_received,
        sstats.recv_calls,
        sstats.max_recv_batch,
        info.stats.fragments_retransmitted
    );
    // The driver stops reading at the budget, so at most one message more.
    assert!(max_buffered <= DriverConfig::default().recv_flow_buffer + CHUNK + 64);

    cs.close().await;
    assert_eq!(bounded("closed", ss.closed()).await, CloseReason::Remote);
    shutdown(&[&client, &server]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabytes_byte_exact() {
    run_test(twenty_megabytes(
        "default config",
        EndpointConfig::default(),
    ))
    .await;
}

/// The same with the engine's pacer off: datagrams leave in bursts as
/// large as the congestion window allows, which exercises GSO batching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabytes_byte_exact_unpaced() {
    run_test(twenty_megabytes(
        "pacing off",
        engine_config(|c| c.pacing = false),
    ))
    .await;
}

#[tokio::test]
async fn slow_reader_keeps_memory_bounded() {
    run_test(async {
        const MSG: usize = 16 * 1024;
        const TOTAL: usize = 4 * 1024 * 1024;
        const ENGINE_RECV: usize = 128 * 1024;
        const ENGINE_SEND: usize = 128 * 1024;
        const HANDLE_BUFFER: usize = 64 * 1024;

        let server_cfg = engine_config(|c| c.recv_buffer = ENGINE_RECV);
        let driver_cfg = driver_config(|c| c.recv_flow_buffer = HANDLE_BUFFER);
        let server = endpoint_with("127.0.0.1:0", "server", server_cfg, driver_cfg);
        let client_cfg = engine_config(|c| c.send_buffer = ENGINE_SEND);
        let client = endpoint_with("127.0.0.1:0", "client", client_cfg, DriverConfig::default());
        let (cs, ss) = connect(&client, &server, b"server").await;

        let sent = Arc::new(AtomicUsize::new(0));
        let sender = {
            let sent = sent.clone();
            let cs = cs.clone();
            tokio::spawn(async move {
                let mut f = open_flow(&cs, b"flood", Priority::BULK).await;
                let mut n = 0usize;
                while n < TOTAL {
                    f.send(vec![(n / MSG) as u8; MSG]).await.expect("send");
                    n += MSG;
                    sent.store(n, Ordering::Release);
                }
                f.close().await.expect("close");
            })
        };

        let mut rf = accept_flow(&ss).await;
        let mut read = 0usize;
        let mut max_lead = 0usize;
        let mut max_engine_buffered = 0usize;
        let mut max_handle_buffered = 0usize;
        let mut index = 0usize;
        while let Some(m) = bounded("slow recv", rf.recv()).await {
            assert_eq!(m.data.len(), MSG);
            assert!(
                m.data.iter().all(|&b| b == index as u8),
                "message {index} corrupted"
            );
            index += 1;
            read += m.data.len();
            // Sample the buffers every few messages (a round trip to the
            // driver each time).
            if index % 4 == 0 {
                let info = ss.info().await.expect("info");
                max_engine_buffered = max_engine_buffered.max(info.recv_buffered);
                max_handle_buffered = max_handle_buffered.max(rf.buffered());
                max_lead = max_lead.max(sent.load(Ordering::Acquire).saturating_sub(read));
            }
            // The reader is slow: about 2 ms per 16 KiB, i.e. 8 MB/s at most.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(rf.is_finished());
        assert_eq!(read, TOTAL);
        bounded("sender", sender).await.expect("sender");
        println!(
            "slow reader: max engine recv buffer {max_engine_buffered} B, max handle buffer \
             {max_handle_buffered} B, max sender lead {max_lead} B"
        );
        // The engine holds at most its receive buffer (plus a little slack
        // for data in flight when the window closed).
        assert!(
            max_engine_buffered <= ENGINE_RECV + 64 * 1024,
            "engine buffered {max_engine_buffered} bytes"
        );
        // The handle holds at most its budget plus one message.
        assert!(max_handle_buffered <= HANDLE_BUFFER + MSG + 64);
        // The sender cannot run away from the reader: everything it got
        // ahead is in one of the bounded buffers (send buffer, in flight,
        // engine receive buffer, handle budget).
        let bound = ENGINE_SEND + ENGINE_RECV + HANDLE_BUFFER + 4 * MSG + 256 * 1024;
        assert!(
            max_lead <= bound,
            "sender ran {max_lead} bytes ahead (bound {bound})"
        );
        assert!(max_lead < TOTAL / 2);

        cs.close().await;
        shutdown(&[&client, &server]).await;
    })
    .await;
}

#[tokio::test]
async fn close_is_seen_on_both_sides() {
    run_test(async {
        let (server, client) = server_and_client();
        let mut events = server.events();
        let (cs, ss) = connect(&client, &server, b"server").await;

        let mut f = open_flow(&ss, b"to-client", Priority::ROUTINE).await;
        f.send(&b"one"[..]).await.expect("send");
        let mut rf = accept_flow(&cs).await;
        assert_eq!(
            &bounded("recv", rf.recv()).await.expect("msg").data[..],
            b"one"
        );

        // The server closes; the client sees a remote close and its flow ends.
        assert_eq!(bounded("close", ss.close()).await, CloseReason::Local);
        assert_eq!(bounded("closed", cs.closed()).await, CloseReason::Remote);
        assert!(bounded("flow end", rf.recv()).await.is_none());
        assert!(!rf.is_finished());
        assert_eq!(cs.close_reason(), Some(CloseReason::Remote));
        // Operations on a closed session fail cleanly.
        assert_eq!(f.send(&b"late"[..]).await, Err(Error::SessionClosed));
        assert!(matches!(
            cs.open_flow(b"late", None, Priority::ROUTINE).await,
            Err(Error::SessionClosed)
        ));
        assert!(bounded("accept_flow after close", cs.accept_flow())
            .await
            .is_none());

        // The server's event stream reported the session's life.
        let mut opened = false;
        let mut closed = false;
        while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            match ev {
                EndpointEvent::SessionOpened { session, role, .. } if session == ss.id() => {
                    assert_eq!(role, Role::Responder);
                    opened = true;
                }
                EndpointEvent::SessionClosed { session, reason } if session == ss.id() => {
                    assert_eq!(reason, CloseReason::Local);
                    closed = true;
                }
                _ => {}
            }
        }
        assert!(opened && closed, "opened {opened}, closed {closed}");
        shutdown(&[&client, &server]).await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_sessions_in_order() {
    run_test(async {
        let (server, client) = server_and_client();
        let other = endpoint("127.0.0.1:0", "other");
        let (cs1, _ss1) = connect(&client, &server, b"server").await;
        let (cs2, _ss2) = connect(&other, &server, b"server").await;
        let count = server
            .with_engine(|engine, _now| engine.session_count())
            .await
            .expect("with_engine");
        assert_eq!(count, 2);

        let started = Instant::now();
        bounded("shutdown", server.shutdown()).await;
        let took = started.elapsed();
        assert!(server.is_closed());
        // The orderly close got its Close Ack long before the timeout.
        assert!(
            took < DriverConfig::default().shutdown_timeout,
            "shutdown took {took:?}"
        );
        // The client saw both sessions closed by the far end.
        assert_eq!(bounded("closed 1", cs1.closed()).await, CloseReason::Remote);
        assert_eq!(bounded("closed 2", cs2.closed()).await, CloseReason::Remote);
        // The server endpoint is gone for good.
        assert!(bounded("accept after shutdown", server.accept())
            .await
            .is_none());
        assert!(matches!(
            server.connect(b"client", &[client.local_addr()]).await,
            Err(Error::EndpointClosed)
        ));
        assert!(matches!(
            server.with_engine(|_, _| ()).await,
            Err(Error::EndpointClosed)
        ));
        // Shutting down twice is harmless.
        server.shutdown().await;
        client.shutdown().await;
        other.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_stops_the_driver() {
    run_test(async {
        let (server, client) = server_and_client();
        let addr = client.local_addr();
        let (cs, ss) = connect(&client, &server, b"server").await;
        drop(client);
        // The session handle keeps the client endpoint alive.
        let mut f = open_flow(&cs, b"still alive", Priority::ROUTINE).await;
        f.send(&b"x"[..]).await.expect("send");
        drop(f);
        drop(cs);
        // Now nothing refers to the client endpoint: its driver closes the
        // session in order and releases the socket.
        assert_eq!(bounded("closed", ss.closed()).await, CloseReason::Remote);
        let rebound = bounded("socket released", async {
            for _ in 0..200 {
                if let Ok(s) = std::net::UdpSocket::bind(addr) {
                    return Some(s);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            None
        })
        .await;
        assert!(rebound.is_some(), "the client socket was not released");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn rejected_flow_fails_sender() {
    run_test(async {
        let (server, client, cs, ss) = connected_pair().await;
        let mut f = open_flow(&cs, b"unwanted", Priority::ROUTINE).await;
        f.send(&b"hello?"[..]).await.expect("send");
        let rf = accept_flow(&ss).await;
        rf.reject(42);
        let result = bounded("rejection", async {
            for _ in 0..400 {
                match f.send(&b"more"[..]).await {
                    Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await;
        assert_eq!(result, Err(Error::FlowRejected(42)));
        assert_eq!(
            bounded("close", f.close()).await,
            Err(Error::FlowRejected(42))
        );
        shutdown(&[&client, &server]).await;
    })
    .await;
}

#[tokio::test]
async fn connect_to_nobody_times_out() {
    run_test(async {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let cfg = engine_config(|c| {
            c.open_timeout = Duration::from_millis(800);
            c.handshake_retry = Duration::from_millis(200);
        });
        let client = endpoint_with("127.0.0.1:0", "client", cfg, DriverConfig::default());
        let result = bounded(
            "connect",
            client.connect(b"nobody", &[silent.local_addr().expect("addr")]),
        )
        .await;
        assert!(
            matches!(result, Err(Error::Open(OpenError::Timeout))),
            "unexpected {result:?}"
        );
        client.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn partially_reliable_messages_flow() {
    run_test(async {
        let (server, client, cs, ss) = connected_pair().await;
        let mut f = open_flow(&cs, b"live", Priority::IMMEDIATE).await;
        for i in 0..10u8 {
            f.send_with_lifetime(vec![i; 100], Duration::from_secs(5))
                .await
                .expect("send");
        }
        let mut rf = accept_flow(&ss).await;
        for i in 0..10u8 {
            let m = bounded("recv", rf.recv()).await.expect("message");
            assert_eq!(m.data, vec![i; 100]);
        }
        let info = ss.info().await.expect("info");
        assert!(info.open);
        assert_eq!(info.peer, client.local_addr());
        shutdown(&[&client, &server]).await;
    })
    .await;
}

#[tokio::test]
async fn dropping_a_session_closes_it() {
    run_test(async {
        let (server, client, cs, ss) = connected_pair().await;
        let f = open_flow(&cs, b"keeps it open", Priority::ROUTINE).await;
        let clone = cs.clone();
        drop(cs);
        drop(clone);
        // A flow handle still refers to the session.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ss.close_reason(), None);
        drop(f);
        // Now no handle is left: the client closes the session in order.
        assert_eq!(bounded("closed", ss.closed()).await, CloseReason::Remote);

        // A connect whose future is dropped before it resolves leaves no
        // session behind either.
        let pending = tokio::spawn(client.connect(b"server", &[server.local_addr()]));
        let accepted = bounded("accept", server.accept()).await.expect("accept");
        pending.abort();
        let _ = pending.await;
        let reason = bounded("abandoned session closed", accepted.closed()).await;
        // Either the open completed and the handle-less session was closed,
        // or the abort came first and the open never finished on our side.
        assert!(
            matches!(reason, CloseReason::Remote | CloseReason::IdleTimeout),
            "unexpected {reason:?}"
        );
        shutdown(&[&client, &server]).await;
    })
    .await;
}

#[tokio::test]
async fn redirect_through_with_engine() {
    run_test(async {
        let redirector = endpoint_with(
            "127.0.0.1:0",
            "redirector",
            engine_config(|c| c.report_foreign_ihello = true),
            DriverConfig::default(),
        );
        let target = endpoint("127.0.0.1:0", "target");
        let client = endpoint("127.0.0.1:0", "client");
        let target_addr = target.local_addr();

        // The redirector answers IHellos for "target" with its address.
        let mut events = redirector.events();
        let redirect = {
            let redirector = redirector.clone();
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(EndpointEvent::IHelloForOther { from, epd, tag }) => {
                            assert_eq!(&epd[..], b"target");
                            redirector
                                .with_engine(move |engine, _now| {
                                    engine.send_redirect(
                                        from,
                                        &tag,
                                        &[rtmfp::Address {
                                            addr: target_addr,
                                            origin: rtmfp::AddressOrigin::Public,
                                        }],
                                    );
                                })
                                .await
                                .expect("with_engine");
                            return from;
                        }
                        Ok(_) => {}
                        Err(e) => panic!("event stream ended: {e}"),
                    }
                }
            })
        };

        let (cs, ts) = tokio::join!(
            bounded(
                "connect via redirect",
                client.connect(b"target", &[redirector.local_addr()])
            ),
            bounded("accept at target", target.accept())
        );
        let cs = cs.expect("connect");
        let ts = ts.expect("accept");
        assert_eq!(cs.peer_addr(), target_addr);
        assert_eq!(ts.peer_addr(), client.local_addr());
        let asked_from = bounded("redirect task", redirect).await.expect("join");
        assert_eq!(asked_from, client.local_addr());
        let sessions = redirector
            .with_engine(|engine, _| engine.session_count())
            .await
            .expect("with_engine");
        assert_eq!(sessions, 0);

        shutdown(&[&client, &target, &redirector]).await;
    })
    .await;
}
