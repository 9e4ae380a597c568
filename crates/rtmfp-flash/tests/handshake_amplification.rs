//! The RFC 7425 server's first RHello fits the 3x anti-amplification limit
//! (counted in wire bytes) for the smallest IHello there is, so Flash-era
//! clients, which do not pad their IHello, are answered at their first one.

use std::net::SocketAddr;
use std::time::Instant;

use nimbus_testkit::identity;
use rtmfp::{Endpoint, EndpointConfig};
use rtmfp_flash::{DhGroup, Epd, FlashProfile};

fn drain(ep: &mut Endpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(d) = ep.poll_transmit(now, &mut buf) {
        out.push((d, buf.clone()));
    }
    out
}

fn wire(a: SocketAddr, payload: usize) -> usize {
    payload + if a.is_ipv4() { 28 } else { 48 }
}

fn server(hostname: Option<&str>, now: Instant) -> Endpoint {
    let config = EndpointConfig {
        amplification_factor: 3,
        ..EndpointConfig::default()
    };
    identity::flash_with(FlashProfile::server(hostname), config, 2, now)
}

/// A 36-byte IHello, like librtmfp's: a 16-byte tag and a short EPD.
fn small_ihello(now: Instant, to: SocketAddr) -> (Endpoint, Vec<u8>) {
    let mut c = identity::flash(FlashProfile::client().groups(&[DhGroup::Modp1024]), 1, now);
    c.connect(now, &Epd::server("live").encode(), &[to])
        .unwrap();
    let mut d = drain(&mut c, now);
    assert_eq!(d.len(), 1);
    let ih = d.pop().unwrap().1;
    assert_eq!(ih.len(), 36);
    (c, ih)
}

#[test]
fn the_smallest_ihello_is_answered_at_once_and_the_session_opens() {
    let now = Instant::now();
    for (hostname, client, srv) in [
        (None, "198.51.100.1:1000", "192.0.2.10:1935"),
        (
            Some("rtmfp.example.com"),
            "198.51.100.1:1000",
            "192.0.2.10:1935",
        ),
        (None, "[2001:db8::1]:1000", "[2001:db8::10]:1935"),
    ] {
        let (ca, sa): (SocketAddr, SocketAddr) = (client.parse().unwrap(), srv.parse().unwrap());
        let mut s = server(hostname, now);
        let cert = s.profile().certificate().len();
        assert_eq!(cert, 45 + hostname.map_or(0, |h| 2 + h.len()));
        let (mut c, ih) = small_ihello(now, sa);
        s.handle_datagram(now, ca, &ih);
        let rh = drain(&mut s, now);
        assert_eq!(rh.len(), 1, "{hostname:?}: answered at the first IHello");
        let n = rh[0].1.len();
        // 148 bytes without a hostname (176 on the wire over IPv4), at most
        // 164 with one of up to 23 bytes: within 3 x 64
        assert_eq!(
            n,
            if hostname.is_some() { 164 } else { 148 },
            "{hostname:?}"
        );
        assert!(wire(ca, n) <= 3 * wire(ca, ih.len()));
        assert_eq!(s.stats().amplification_drops, 0);
        // the handshake completes without any retransmission
        c.handle_datagram(now, sa, &rh[0].1);
        for _ in 0..4 {
            for (_, d) in drain(&mut c, now) {
                s.handle_datagram(now, ca, &d);
            }
            for (_, d) in drain(&mut s, now) {
                c.handle_datagram(now, sa, &d);
            }
        }
        assert!(c.sessions().next().is_some(), "{hostname:?}");
        assert_eq!(s.stats().sessions_accepted, 1);
    }
}

#[test]
fn a_spoofed_flood_of_small_ihellos_gets_at_most_three_times_back() {
    let now = Instant::now();
    let mut s = server(None, now);
    let (_c, ih) = small_ihello(now, "192.0.2.10:1935".parse().unwrap());
    let (mut inb, mut outb) = (0usize, 0usize);
    for i in 0..10_000u32 {
        let a = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000));
        s.handle_datagram(now, a, &ih);
        inb += wire(a, ih.len());
        for (dst, d) in drain(&mut s, now) {
            assert_eq!(dst, a);
            outb += wire(dst, d.len());
        }
    }
    assert!(outb <= 3 * inb, "sent {outb} wire bytes for {inb}");
    assert_eq!(s.stats().rhellos_sent, 10_000);
    assert_eq!(s.session_count(), 0);
}
