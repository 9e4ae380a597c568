//! The host's contract, machine by machine: datagrams both ways, commands
//! and calls, events with backpressure, a full socket that waits instead of
//! dropping, timers on tokio's (paused) clock, the impairment stage.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointCommand, EndpointConfig, Event, Machine, PlainProfile};
use rtmfp_tokio::{bind_udp, Host, HostConfig, HostHandle, Impairment};
use tokio::sync::mpsc;

fn loopback() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Sends `count` numbered datagrams to `to` when told, counts what it
/// receives, and reports every received sequence number.
#[derive(Debug, Default)]
struct Blaster {
    to: Option<SocketAddr>,
    queued: VecDeque<u32>,
    received: u64,
    events: VecDeque<u32>,
    timer: Option<Instant>,
    fired: u32,
}

enum BlasterCmd {
    Blast(SocketAddr, u32),
    TimerIn(Duration),
    Events(u32),
}

impl Machine for Blaster {
    type Command = BlasterCmd;
    type Event = u32;

    fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, data: &[u8]) {
        self.received += 1;
        if let Ok(b) = <[u8; 4]>::try_from(&data[..4.min(data.len())]) {
            self.events.push_back(u32::from_be_bytes(b));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.timer.is_some_and(|t| t <= now) {
            self.timer = None;
            self.fired += 1;
        }
    }

    fn handle_command(&mut self, now: Instant, c: BlasterCmd) {
        match c {
            BlasterCmd::Blast(to, n) => {
                self.to = Some(to);
                self.queued.extend(0..n);
            }
            BlasterCmd::TimerIn(d) => self.timer = Some(now + d),
            BlasterCmd::Events(n) => self.events.extend(0..n),
        }
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let n = self.queued.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&n.to_be_bytes());
        buf.resize(1200, 0xAB);
        self.to
    }

    fn poll_event(&mut self) -> Option<u32> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.timer
    }
}

/// A plain-profile engine named `name`, its randomness seeded by `seed`.
fn engine(name: &str, seed: u64) -> Endpoint {
    Endpoint::new(
        EndpointConfig::default(),
        Box::new(PlainProfile::new(name)),
        Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
        rtmfp_tokio::now(),
    )
}

/// The first event that `pick` turns into a value, within five seconds;
/// `None` when the time runs out or the host stops.
async fn first_event<T>(
    events: &mut mpsc::Receiver<Event>,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> Option<T> {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = events.recv().await {
            if let Some(v) = pick(e) {
                return Some(v);
            }
        }
        None
    });
    found.await.ok().flatten()
}

/// A [`Blaster`] on a host of its own with a loopback socket.
fn blaster(
    config: HostConfig,
) -> (
    HostHandle<Blaster>,
    mpsc::Receiver<u32>,
    tokio::task::JoinHandle<Blaster>,
) {
    Host::spawn(Blaster::default(), vec![loopback()], config).unwrap()
}

#[tokio::test]
async fn two_engines_open_a_session_through_their_hosts() {
    let (ha, mut ea, _ja) =
        Host::spawn(engine("a", 1), vec![loopback()], HostConfig::default()).unwrap();
    let (hb, mut eb, _jb) =
        Host::spawn(engine("b", 2), vec![loopback()], HostConfig::default()).unwrap();
    let to = hb.local_addr();
    let session = ha
        .with(move |ep, now| ep.connect(now, b"b", &[to]))
        .await
        .unwrap()
        .unwrap();
    let opened = first_event(&mut ea, |e| match e {
        Event::SessionOpened { session: s, .. } => Some(s),
        _ => None,
    })
    .await
    .expect("a opens the session");
    assert_eq!(opened, session);
    let responder = first_event(&mut eb, |e| {
        matches!(e, Event::SessionOpened { .. }).then_some(())
    })
    .await;
    assert!(responder.is_some(), "b sees the session open");
    // a command (rather than a call) that closes it
    ha.send(EndpointCommand::new(move |ep, now| {
        ep.close_session(now, session)
    }))
    .await
    .unwrap();
    let closed = first_event(&mut ea, |e| {
        matches!(e, Event::SessionClosed { .. }).then_some(())
    })
    .await;
    assert!(closed.is_some(), "the session closes");
    let st = ha.stats();
    assert!(
        st.datagrams_sent >= 3 && st.datagrams_received >= 2,
        "{st:?}"
    );
}

#[tokio::test]
async fn a_full_socket_makes_the_host_wait_not_drop() {
    // a small send buffer fills at once: 20,000 datagrams of 1,200 bytes
    // must still all reach the kernel
    let tx = bind_udp("127.0.0.1:0".parse().unwrap(), false, None).unwrap();
    socket2::SockRef::from(&tx)
        .set_send_buffer_size(4096)
        .unwrap();
    let rx = bind_udp("127.0.0.1:0".parse().unwrap(), false, Some(8 << 20)).unwrap();
    let cfg = HostConfig::default().socket_buffer(None);
    let (sender, _e1, _j1) = Host::spawn(Blaster::default(), vec![tx], cfg.clone()).unwrap();
    let (receiver, _e2, _j2) = Host::spawn(Blaster::default(), vec![rx], cfg).unwrap();
    const N: u32 = 20_000;
    sender
        .send(BlasterCmd::Blast(receiver.local_addr(), N))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sender.stats().datagrams_sent < u64::from(N) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = sender.stats();
    assert_eq!(st.datagrams_sent, u64::from(N), "{st:?}");
    assert_eq!(st.send_errors, 0, "{st:?}");
    let left = sender.with(|m, _| m.queued.len()).await.unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn events_wait_for_a_slow_consumer_and_none_is_lost() {
    let cfg = HostConfig::default().capacity(16, 4);
    let (h, mut events, _j) = blaster(cfg);
    h.send(BlasterCmd::Events(5_000)).await.unwrap();
    for expected in 0..5_000u32 {
        if expected % 1000 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event")
            .expect("host running");
        assert_eq!(got, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn timers_run_on_tokios_clock() {
    let (h, _e, _j) = blaster(HostConfig::default());
    let started = std::time::Instant::now();
    h.send(BlasterCmd::TimerIn(Duration::from_secs(3600)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3599)).await;
    assert_eq!(h.with(|m, _| m.fired).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.with(|m, _| m.fired).await.unwrap(), 1);
    assert!(started.elapsed() < Duration::from_secs(60), "virtual time");
}

#[tokio::test]
async fn impairment_drops_and_delays_what_the_host_receives() {
    let lossy = HostConfig::default().impairment(Some(Impairment::loss(0.5, 7)));
    let (rx, _e, _j) = blaster(lossy);
    let (tx, _e2, _j2) = blaster(HostConfig::default());
    tx.send(BlasterCmd::Blast(rx.local_addr(), 2000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = rx.stats();
    let got = rx.with(|m, _| m.received).await.unwrap();
    assert_eq!(got + st.impaired_drops, st.datagrams_received, "{st:?}");
    assert!(
        (700..1300).contains(&st.impaired_drops),
        "about half dropped: {st:?}"
    );

    // delay: nothing arrives before 200 ms, everything after
    let slow = HostConfig::default().impairment(Some(Impairment {
        loss: 0.0,
        delay: Duration::from_millis(200),
        jitter: Duration::from_millis(10),
        seed: 1,
        exempt: Vec::new(),
    }));
    let (rx, _e3, _j3) = blaster(slow);
    tx.send(BlasterCmd::Blast(rx.local_addr(), 50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.with(|m, _| m.received).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.with(|m, _| m.received).await.unwrap(), 50);
    assert_eq!(rx.stats().impaired_delays, 50);
}

#[tokio::test]
async fn one_host_serves_ipv4_and_ipv6_sockets() {
    let Ok(v6) = std::net::UdpSocket::bind("[::1]:0") else {
        println!("SKIPPED: no IPv6 loopback");
        return;
    };
    let (h, mut events, _j) = Host::spawn(
        Blaster::default(),
        vec![loopback(), v6],
        HostConfig::default(),
    )
    .unwrap();
    let addrs = h.local_addrs();
    assert_eq!(addrs.len(), 2);
    let c4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let c6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
    c4.send_to(&7u32.to_be_bytes(), addrs[0]).unwrap();
    c6.send_to(&9u32.to_be_bytes(), addrs[1]).unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got.sort_unstable();
    assert_eq!(got, vec![7, 9]);
    // replies leave from the socket of the destination's family
    h.send(BlasterCmd::Blast(c6.local_addr().unwrap(), 1))
        .await
        .unwrap();
    c6.set_nonblocking(true).unwrap();
    let c6 = tokio::net::UdpSocket::from_std(c6).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), c6.recv_from(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    assert_eq!(n, 1200);
    assert_eq!(from, addrs[1]);
}
