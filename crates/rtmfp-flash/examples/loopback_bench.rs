//! Flash-crypto handshakes per second per DH group over real UDP loopback:
//! one responder thread (ephemeral DH, default key reuse window) and a
//! client thread keeping `P` handshakes in flight, each from a fresh
//! endpoint and socket (clients share one static DH key, as rtmfp-cpp's
//! clients share one initialised adapter). HMAC and session sequence
//! numbers are required both ways.
//!
//! ```text
//! cargo run --release -p rtmfp-flash --example loopback_bench [-- SECONDS_PER_RUN]
//! ```

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use rtmfp::{EndpointConfig, Event};
use rtmfp_flash::{DhGroup, DhKeyPair, Epd, FlashProfile};

fn run(group: DhGroup, parallel: usize, secs: f64) -> (usize, f64, Duration) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let server = FlashProfile::server(None)
        .groups(&[group])
        .require_hmac(true)
        .require_sseq(true)
        .build(&mut rng)
        .unwrap();
    let mut node = common::UdpNode::bind(
        "127.0.0.1:0".parse().unwrap(),
        EndpointConfig::default(),
        Box::new(server),
        2,
    )
    .unwrap();
    let server_addr = node.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            node.turn(Duration::from_millis(5)).unwrap();
            while node.ep.poll_event().is_some() {}
        }
    });

    let client_key = DhKeyPair::generate(group, &mut rng);
    let epd = Epd::server("rtmfp://127.0.0.1/app").encode();
    let new_client = |seed: u64| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let p = FlashProfile::client()
            .groups(&[group])
            .static_key(client_key.clone())
            .require_hmac(true)
            .require_sseq(true)
            .build(&mut rng)
            .unwrap();
        let mut c = common::UdpNode::bind(
            "127.0.0.1:0".parse().unwrap(),
            EndpointConfig::default(),
            Box::new(p),
            seed,
        )
        .unwrap();
        c.ep.connect(Instant::now(), &epd, &[server_addr]).unwrap();
        (c, Instant::now())
    };
    let mut seed = 100;
    let mut clients: Vec<_> = (0..parallel)
        .map(|_| {
            seed += 1;
            new_client(seed)
        })
        .collect();
    let started = Instant::now();
    let mut done = 0;
    let mut latencies = Vec::new();
    while started.elapsed().as_secs_f64() < secs {
        for slot in clients.iter_mut() {
            slot.0.turn(Duration::ZERO).unwrap();
            let mut opened = false;
            while let Some(e) = slot.0.ep.poll_event() {
                opened |= matches!(e, Event::SessionOpened { .. });
            }
            if opened {
                done += 1;
                latencies.push(slot.1.elapsed());
                seed += 1;
                *slot = new_client(seed);
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    latencies.sort();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    (done, done as f64 / elapsed, p50)
}

fn main() {
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
            let (n, rate, p50) = run(g, p, secs);
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
}
