//! Flash-crypto handshakes per second per DH group over real UDP loopback:
//! one responder (ephemeral DH, default key reuse window) on a host of its
//! own thread, and `P` client slots on this thread each keeping one
//! handshake in flight, every handshake from a fresh endpoint on a fresh
//! host and socket (clients share one static DH key, as rtmfp-cpp's clients
//! share one initialised adapter). HMAC and session sequence numbers are
//! required both ways.
//!
//! ```text
//! cargo run --release -p rtmfp-flash --example loopback_bench [-- SECONDS_PER_RUN]
//! ```
//!
//! (`nimbus bench handshake --crypto flash` measures the same per DH group
//! with ephemeral client keys, as a burst and one open after another.)

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use rtmfp::{EndpointConfig, Event};
use rtmfp_flash::{DhGroup, DhKeyPair, Epd, FlashProfile};
use rtmfp_tokio::{Host, HostConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The responder: a bare engine on a host of its own thread (its events
/// are not wanted). Stops when the returned handle is dropped.
fn responder(
    group: DhGroup,
) -> Result<
    (
        SocketAddr,
        rtmfp_tokio::HostHandle<rtmfp::Endpoint>,
        std::thread::JoinHandle<()>,
    ),
    BoxError,
> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let server = FlashProfile::server(None)
        .groups(&[group])
        .require_hmac(true)
        .require_sseq(true)
        .build(&mut rng)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = rtmfp_tokio::bind_udp("127.0.0.1:0".parse()?, false, Some(4 << 20))?;
    let addr = socket.local_addr()?;
    let (host, handle, _events) = {
        let _rt = rt.enter();
        // every client comes from 127.0.0.1: without the per-source IHello
        // rate limit (20 per second by default), which would be measured
        let config = EndpointConfig {
            ihello_rate_per_source: 0,
            ..EndpointConfig::default()
        };
        let ep = common::engine(config, Box::new(server), 2);
        Host::new(ep, vec![socket], HostConfig::default())?
    };
    let thread = std::thread::Builder::new()
        .name("responder".into())
        .spawn(move || {
            rt.block_on(host.run());
        })?;
    Ok((addr, handle, thread))
}

/// One client slot: handshakes one after another, each from a fresh
/// endpoint, host and socket, until `end`; returns their latencies.
async fn slot(
    group: DhGroup,
    client_key: DhKeyPair,
    server: SocketAddr,
    mut seed: u64,
    end: tokio::time::Instant,
) -> Result<Vec<Duration>, BoxError> {
    let epd = Epd::server("rtmfp://127.0.0.1/app").encode();
    let mut latencies = Vec::new();
    while tokio::time::Instant::now() < end {
        seed += 1;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let p = FlashProfile::client()
            .groups(&[group])
            .static_key(client_key.clone())
            .require_hmac(true)
            .require_sseq(true)
            .build(&mut rng)?;
        let ep = common::engine(EndpointConfig::default(), Box::new(p), seed);
        let socket = common::bind("127.0.0.1:0".parse()?)?;
        let config = HostConfig::default().recv_batch(1).capacity(4, 16);
        let (host, mut events, _task) = Host::spawn(ep, vec![socket], config)?;
        let epd = epd.clone();
        let started = Instant::now();
        host.with(move |ep, now| ep.connect(now, &epd, &[server]))
            .await??;
        let opened = tokio::time::timeout_at(end, async {
            while let Some(e) = events.recv().await {
                if matches!(e, Event::SessionOpened { .. }) {
                    return true;
                }
            }
            false
        })
        .await;
        if opened == Ok(true) {
            latencies.push(started.elapsed());
        }
        // dropping the handle stops the client's host
    }
    Ok(latencies)
}

fn run(group: DhGroup, parallel: usize, secs: f64) -> Result<(usize, f64, Duration), BoxError> {
    let (server, server_handle, server_thread) = responder(group)?;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let client_key = DhKeyPair::generate(group, &mut rng);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut latencies = rt.block_on(async {
        let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        let mut slots = tokio::task::JoinSet::new();
        for p in 0..parallel {
            let seed = 100 + 1_000_000 * p as u64;
            slots.spawn(slot(group, client_key.clone(), server, seed, end));
        }
        let mut all = Vec::new();
        while let Some(r) = slots.join_next().await {
            all.extend(r??);
        }
        Ok::<_, BoxError>(all)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    drop(server_handle);
    let _ = server_thread.join();
    latencies.sort();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    let done = latencies.len();
    Ok((done, done as f64 / elapsed, p50))
}

fn main() -> Result<(), BoxError> {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    println!("Flash-crypto handshakes over UDP loopback (HMAC + SSEQ required)");
    println!(
        "{:<26} {:>8}  {:>10}  {:>8}  {:>10}",
        "group", "parallel", "handshakes", "hs/s", "p50 ms"
    );
    for g in DhGroup::ALL.into_iter().rev() {
        for p in [1, 4] {
            let (n, rate, p50) = run(g, p, secs)?;
            println!(
                "{:<26} {:>8}  {:>10}  {:>8.1}  {:>10.2}",
                g.to_string(),
                p,
                n,
                rate,
                p50.as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
