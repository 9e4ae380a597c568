//! Fuzzes a whole endpoint: arbitrary datagrams (with a valid checksum so
//! they reach the packet parser) go to a responder with an open session.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig, PacketCrypto, PlainPacketCrypto, PlainProfile};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let rng = |s| Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(s));
    let mut a = Endpoint::new(EndpointConfig::default(), Box::new(PlainProfile::new("a")), rng(1), now);
    let mut b = Endpoint::new(EndpointConfig::default(), Box::new(PlainProfile::new("b")), rng(2), now);
    let (pa, pb) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
    let s = a.connect(now, b"b", &[pb]).unwrap();
    let mut buf = Vec::new();
    for _ in 0..4 {
        while a.poll_transmit(now, &mut buf).is_some() {
            b.handle_datagram(now, pa, &buf);
        }
        while b.poll_transmit(now, &mut buf).is_some() {
            a.handle_datagram(now, pb, &buf);
        }
    }
    let _ = a.open_flow(now, s, b"m", None, rtmfp::Priority::ROUTINE);
    // split the input into datagrams at 0xfe 0xfe
    let sid = b.sessions().next().map(|x| x.0).unwrap_or(0);
    // the salt b expects on session packets is its own keying component
    let salt = b
        .sessions()
        .next()
        .and_then(|s| b.session_info(s))
        .map(|i| u16::from_be_bytes([i.near_nonce[0], i.near_nonce[1]]))
        .unwrap_or(0);
    for (i, piece) in data.split(|&x| x == 0xfe).enumerate() {
        if piece.is_empty() {
            continue;
        }
        // the fuzzed plain packet, "encrypted" so it passes verification
        let use_sid = if piece[0] & 1 == 0 { sid } else { 0 };
        let mut c = PlainPacketCrypto {
            tx_salt: if use_sid == 0 { 0 } else { salt },
            rx_salt: 0,
        };
        let mut d = vec![0u8; 4];
        d.extend_from_slice(&piece[1..]);
        c.encrypt(&mut d, 4);
        let ssid = rtmfp::wire::scramble_session_id(use_sid, &d[4..]);
        d[..4].copy_from_slice(&ssid.to_be_bytes());
        let t = now + Duration::from_millis(i as u64 * 50);
        b.handle_datagram(t, pa, &d);
        b.handle_timeout(t);
        let mut n = 0;
        while b.poll_transmit(t, &mut buf).is_some() && n < 1000 {
            n += 1;
        }
        while b.poll_event().is_some() {}
    }
});
