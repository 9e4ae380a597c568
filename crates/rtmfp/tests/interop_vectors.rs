//! Checks the engine's wire layer against real datagrams exchanged with an
//! independent implementation: the RFC author's rtmfp-cpp (`test/testclient`
//! with its PlainCryptoAdapter) talking to Nimbus. See the vector file's
//! header for how it was captured.

use std::time::Instant;

use rand_core::SeedableRng;
use rtmfp::wire::{demultiplex, Chunk, Mode, Packet, OPTION_USER_METADATA};
use rtmfp::{Endpoint, EndpointConfig, PacketCrypto, PlainPacketCrypto, PlainProfile};

fn vectors() -> Vec<(bool, Vec<u8>)> {
    include_str!("vectors/rtmfp-cpp-plain-testclient.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (who, hex) = l.split_once(' ').unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (who == "cpp", bytes)
        })
        .collect()
}

#[test]
fn rtmfp_cpp_datagrams_decode_and_parse() {
    let v = vectors();
    assert!(v.len() > 50);
    let mut skic: Option<u16> = None; // cpp's salt: what nimbus adds
    let mut skrc: Option<u16> = None; // nimbus's salt: what cpp adds
    let mut tag: Vec<u8> = Vec::new();
    let mut cookie: Vec<u8> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut data_chunks = 0;
    let mut acks = 0;
    let mut metadata_seen = false;
    for (i, (from_cpp, d)) in v.iter().enumerate() {
        let (sid, enc) = demultiplex(d).expect("long enough");
        let mut buf = enc.to_vec();
        // startup packets are unsalted; session packets carry the salt the
        // receiver announced in its keying component
        let mut unsalted = PlainPacketCrypto::default();
        let range = match unsalted.decrypt(&mut buf.clone()) {
            Ok(r) => r,
            Err(_) => {
                let rx_salt =
                    if *from_cpp { skrc } else { skic }.expect("keyed before salted packets");
                let mut c = PlainPacketCrypto {
                    tx_salt: 0,
                    rx_salt,
                };
                c.decrypt(&mut buf)
                    .unwrap_or_else(|e| panic!("datagram {i} fails verification: {e}"))
            }
        };
        let packet = Packet::parse(&buf[range]).unwrap_or_else(|e| panic!("datagram {i}: {e}"));
        if packet.header.mode == Mode::Startup {
            assert!(
                sid == 0 || !from_cpp,
                "only RIKeying/cookie change use a non-zero SID at startup"
            );
        } else {
            assert_eq!(
                packet.header.mode,
                if *from_cpp {
                    Mode::Initiator
                } else {
                    Mode::Responder
                }
            );
        }
        for (ty, c) in packet.chunks() {
            let c = c.unwrap_or_else(|e| panic!("datagram {i} chunk {ty:#x}: {e}"));
            seen.insert((*from_cpp, c.chunk_type()));
            // our encoder reproduces a canonical form of every chunk
            let mut out = Vec::new();
            if c.encode(&mut out).is_ok() {
                let again = Chunk::parse(out[0], &out[3..]).unwrap();
                let mut out2 = Vec::new();
                again.encode(&mut out2).unwrap();
                assert_eq!(out, out2);
            }
            match c {
                Chunk::IHello { epd, tag: t } => {
                    assert!(*from_cpp);
                    assert_eq!(epd, b"nimbus");
                    tag = t.to_vec();
                }
                Chunk::RHello {
                    tag_echo,
                    cookie: ck,
                    certificate,
                } => {
                    assert!(!from_cpp);
                    assert_eq!(tag_echo, &tag[..]);
                    assert_eq!(certificate, b"nimbus");
                    cookie = ck.to_vec();
                }
                Chunk::IIKeying {
                    cookie_echo,
                    certificate,
                    skic: k,
                    signature,
                    ..
                } => {
                    assert_eq!(cookie_echo, &cookie[..], "rtmfp-cpp echoes our cookie");
                    assert_eq!(certificate, b"cppclient");
                    assert_eq!(signature, b"X");
                    skic = Some(u16::from_be_bytes([k[0], k[1]]));
                }
                Chunk::RIKeying {
                    skrc: k, signature, ..
                } => {
                    assert!(!from_cpp);
                    assert_eq!(signature, b"X");
                    skrc = Some(u16::from_be_bytes([k[0], k[1]]));
                }
                Chunk::UserData(u) => {
                    data_chunks += 1;
                    if let Some(opts) = u.options {
                        for o in rtmfp::wire::options(opts) {
                            let (t, val) = o.unwrap();
                            if t == OPTION_USER_METADATA {
                                assert_eq!(val, b"metadata");
                                metadata_seen = true;
                            }
                        }
                    }
                }
                Chunk::Ack(a) => {
                    acks += 1;
                    for (lo, hi) in a.ranges() {
                        assert!(lo <= hi && lo > a.cum_ack + 1);
                    }
                }
                _ => {}
            }
        }
    }
    assert!(skic.is_some() && skrc.is_some());
    assert!(metadata_seen);
    assert!(
        data_chunks > 20 && acks > 5,
        "{data_chunks} data, {acks} acks"
    );
    for ty in [0x30u8, 0x38, 0x10] {
        assert!(seen.contains(&(true, ty)), "rtmfp-cpp sent chunk {ty:#x}");
    }
    for ty in [0x70u8, 0x78] {
        assert!(seen.contains(&(false, ty)), "nimbus sent chunk {ty:#x}");
    }
}

#[test]
fn a_fresh_endpoint_answers_rtmfp_cpps_ihello() {
    let v = vectors();
    let (from_cpp, ihello) = &v[0];
    assert!(from_cpp);
    let now = Instant::now();
    let mut ep = Endpoint::new(
        EndpointConfig::default(),
        Box::new(PlainProfile::new("nimbus")),
        Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)),
        now,
    );
    let from = "127.0.0.1:53645".parse().unwrap();
    ep.handle_datagram(now, from, ihello);
    let mut out = Vec::new();
    assert_eq!(ep.poll_transmit(now, &mut out), Some(from));
    let (sid, enc) = demultiplex(&out).unwrap();
    assert_eq!(sid, 0);
    let mut buf = enc.to_vec();
    let r = PlainPacketCrypto::default().decrypt(&mut buf).unwrap();
    let p = Packet::parse(&buf[r]).unwrap();
    let (_, c) = p.chunks().next().unwrap();
    assert!(matches!(c.unwrap(), Chunk::RHello { certificate, .. } if certificate == b"nimbus"));
}
