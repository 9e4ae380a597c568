//! The web phone's parsers: the page's WebSocket messages
//! (`PageMsg::parse`), then the WebRTC bridge fed arbitrary SDP offers,
//! datagrams, frames to send and timeouts (str0m's SDP, STUN, DTLS, RTP and
//! RTCP parsers behind it). Nothing may panic; the bridge stays bounded.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nimbus_web::bridge::{Bridge, BridgeCommand, BridgeConfig, FrameOut};
use nimbus_web::protocol::PageMsg;
use rtmfp::Machine;

fn take(n: usize, rest: &mut &[u8]) -> Vec<u8> {
    let n = n.min(rest.len());
    let (a, r) = rest.split_at(n);
    *rest = r;
    a.to_vec()
}

fuzz_target!(|data: &[u8]| {
    // the WebSocket message parser on the whole input
    let _ = PageMsg::parse(&String::from_utf8_lossy(data));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        return;
    }
    // the bridge: a stream of operations
    let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let from: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let t0 = Instant::now();
    let mut now = t0;
    let mut b = Bridge::new(local, BridgeConfig::default());
    let mut rest = rest;
    let mut buf = Vec::new();
    let mut offers = 0;
    while let Some((&op, r)) = rest.split_first() {
        rest = r;
        let len = usize::from(rest.first().copied().unwrap_or(0)) * 8;
        match op % 6 {
            0 if offers < 2 => {
                offers += 1;
                let sdp = take(len * 4, &mut rest);
                b.handle_command(
                    now,
                    BridgeCommand::Offer {
                        request: 1,
                        sdp: String::from_utf8_lossy(&sdp).into_owned(),
                    },
                );
            }
            1 => {
                let d = take(len, &mut rest);
                b.handle_datagram(now, from, &d);
            }
            2 | 3 => {
                let d = take(len, &mut rest);
                let f = FrameOut {
                    rtp_time: u64::from(op),
                    wallclock: now,
                    received: now,
                    data: d,
                };
                let c = if op % 6 == 2 {
                    BridgeCommand::Video(f)
                } else {
                    BridgeCommand::Audio(f)
                };
                b.handle_command(now, c);
            }
            4 => b.handle_command(now, BridgeCommand::RequestKeyframe),
            _ => {
                now += Duration::from_millis(u64::from(op) * 7);
                b.handle_timeout(now);
            }
        }
        while b.poll_transmit(now, &mut buf).is_some() {}
        while b.poll_event().is_some() {}
        let _ = b.poll_timeout();
    }
    b.handle_close(now);
    let _ = b.is_done();
});
