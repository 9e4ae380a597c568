//! Heap bytes per open idle session on a responder.
//!
//! Opens `N` sessions (default 2000; `cargo run --release -p rtmfp
//! --example session_memory -- 5000` for another count) from `N` initiator
//! endpoints to one responder, all with [`PlainProfile`], moving datagrams
//! between them in memory. Each initiator opens a flow and sends a 250-byte
//! message (a NetConnection `connect`); the responder answers on a return
//! flow with 300 bytes. Once everything is acknowledged the initiators are
//! dropped and the responder's live heap is compared with an empty
//! responder's, counted by a global allocator.
//!
//! This is the engine's share only: a real server adds its crypto profile's
//! per-session state (e.g. AES keys and HMAC contexts with the RFC 7425
//! profile) and its own application state.
#![allow(unsafe_code)] // the counting allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig, Event, PlainProfile, Priority, SessionId};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn rng(seed: u64) -> Box<rand_chacha::ChaCha8Rng> {
    Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

struct Client {
    ep: Endpoint,
    addr: SocketAddr,
    session: SessionId,
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let mut now = Instant::now();
    let server_addr: SocketAddr = "10.0.0.1:1935".parse().unwrap();
    let config = EndpointConfig::default();

    let base = live();
    let mut server = Endpoint::new(
        config.clone(),
        Box::new(PlainProfile::new("server")),
        rng(0),
        now,
    );
    let empty_server = live() - base;

    let mut clients: Vec<Client> = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 5000));
            let mut ep = Endpoint::new(
                config.clone(),
                Box::new(PlainProfile::new(format!("client-{i}"))),
                rng(i as u64 + 1),
                now,
            );
            let session = ep.connect(now, b"server", &[server_addr]).expect("connect");
            Client { ep, addr, session }
        })
        .collect();
    let by_addr: HashMap<SocketAddr, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.addr, i))
        .collect();

    let connect = Bytes::from(vec![b'c'; 250]);
    let answer = Bytes::from(vec![b'a'; 300]);
    let mut buf = Vec::new();
    let mut flows_opened = vec![false; n];
    for _round in 0..40 {
        // initiators -> responder
        for (i, c) in clients.iter_mut().enumerate() {
            c.ep.handle_timeout(now);
            while let Some(e) = c.ep.poll_event() {
                if let Event::SessionOpened { session, .. } = e {
                    if session == c.session && !flows_opened[i] {
                        let f =
                            c.ep.open_flow(now, session, b"TC\x04\x00", None, Priority::ROUTINE)
                                .expect("open_flow");
                        c.ep.send(now, session, f, connect.clone(), None)
                            .expect("send");
                        flows_opened[i] = true;
                    }
                }
                if let Event::Readable { session, flow } = e {
                    while c.ep.read(now, session, flow).is_some() {}
                }
            }
            while let Some(dst) = c.ep.poll_transmit(now, &mut buf) {
                debug_assert_eq!(dst, server_addr);
                server.handle_datagram(now, c.addr, &buf);
            }
        }
        // responder -> initiators
        server.handle_timeout(now);
        loop {
            let mut any = false;
            while let Some(e) = server.poll_event() {
                any = true;
                match e {
                    Event::IncomingFlow { session, flow, .. } => {
                        let f = server
                            .open_flow(now, session, b"TC\x04\x00", Some(flow), Priority::ROUTINE)
                            .expect("return flow");
                        server
                            .send(now, session, f, answer.clone(), None)
                            .expect("send");
                    }
                    Event::Readable { session, flow } => {
                        while server.read(now, session, flow).is_some() {}
                    }
                    _ => {}
                }
            }
            while let Some(dst) = server.poll_transmit(now, &mut buf) {
                any = true;
                if let Some(&i) = by_addr.get(&dst) {
                    clients[i].ep.handle_datagram(now, server_addr, &buf);
                }
            }
            if !any {
                break;
            }
        }
        now += Duration::from_millis(250);
    }

    let open = server.sessions().count();
    let mut idle = 0;
    for s in server.sessions() {
        let info = server.session_info(s).expect("open");
        if info.send_flows == 1
            && info.recv_flows == 1
            && info.outstanding == 0
            && info.send_buffered == 0
            && info.recv_buffered == 0
        {
            idle += 1;
        }
    }
    drop(clients);
    drop(by_addr);
    let with_sessions = live() - base;
    let per = (with_sessions - empty_server) as f64 / open.max(1) as f64;
    println!("sessions open on the responder: {open} ({idle} idle with one flow each way, all acknowledged)");
    println!("empty responder: {empty_server} bytes; with sessions: {with_sessions} bytes");
    println!("heap per open idle session (engine, PlainProfile): {per:.0} bytes");
    drop(server);
}
