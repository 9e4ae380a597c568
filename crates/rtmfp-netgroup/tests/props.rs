//! Property tests of the NetGroup codecs (`group::wire`, `group::p2p`):
//! encode → parse round trips, fragments map agreement, media splitting
//! and reassembly, and parsers that never panic on arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use proptest::prelude::*;
use rtmfp::wire::{Address, AddressOrigin};
use rtmfp_netgroup::p2p::{
    encode_map, split_media, FragmentHeader, FragmentMap, GroupConnect, MediaAnnounce,
    NimbusMessage, Report, ReportEntry, StreamParams, FRAG_FIRST, FRAG_LAST, FRAG_MIDDLE,
    FRAG_WHOLE, MAX_ENTRY_ADDRESSES, MAX_FRAGMENT_ID, MAX_FRAGMENT_PAYLOAD, MAX_HAVE_RANGES,
    MAX_MAP_BYTES, MAX_REPORT_ENTRIES,
};
use rtmfp_netgroup::wire::{encode_introduction, encode_join, parse_introduction, parse_join};

// ------------------------------------------------------------- strategies

fn origin() -> impl Strategy<Value = AddressOrigin> {
    prop_oneof![
        Just(AddressOrigin::Unknown),
        Just(AddressOrigin::Local),
        Just(AddressOrigin::Public),
        Just(AddressOrigin::Relay),
    ]
}

fn address() -> impl Strategy<Value = Address> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ];
    (ip, any::<u16>(), origin()).prop_map(|(ip, port, origin)| Address {
        addr: SocketAddr::new(ip, port),
        origin,
    })
}

fn addresses() -> impl Strategy<Value = Vec<Address>> {
    proptest::collection::vec(address(), 0..=MAX_ENTRY_ADDRESSES)
}

fn report_entry() -> impl Strategy<Value = ReportEntry> {
    (any::<[u8; 32]>(), 0u64..(1 << 28), addresses()).prop_map(|(peer, seconds, addresses)| {
        ReportEntry {
            peer,
            seconds,
            addresses,
        }
    })
}

fn report() -> impl Strategy<Value = Report> {
    (
        proptest::option::of(address()),
        addresses(),
        proptest::collection::vec(report_entry(), 0..40),
    )
        .prop_map(|(seen, sender_addresses, entries)| Report {
            seen,
            sender_addresses,
            entries,
        })
}

/// UTF-8 names of at most 100 bytes (25 chars of up to 4 bytes).
fn stream_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=25).prop_map(String::from_iter)
}

fn stream_params() -> impl Strategy<Value = StreamParams> {
    (
        any::<bool>(),
        0u64..=600_000,
        10u64..=10_000,
        10u64..=60_000,
    )
        .prop_map(
            |(send_to_all, window_ms, update_period_ms, fetch_period_ms)| StreamParams {
                send_to_all,
                window_ms,
                update_period_ms,
                fetch_period_ms,
            },
        )
}

fn announce() -> impl Strategy<Value = MediaAnnounce> {
    prop_oneof![
        (stream_name(), any::<[u8; 32]>(), stream_params())
            .prop_map(|(name, key, params)| MediaAnnounce::Stream { name, key, params }),
        (0..=MAX_FRAGMENT_ID).prop_map(MediaAnnounce::End),
        (0u64..1 << 21).prop_map(MediaAnnounce::End),
    ]
}

fn payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| (a.min(b), a.max(b))),
        (0u64..1000, 0u64..1000).prop_map(|(a, n)| (a, a + n)),
    ]
}

fn nimbus() -> impl Strategy<Value = NimbusMessage> {
    prop_oneof![
        (any::<[u8; 32]>(), payload())
            .prop_map(|(id, payload)| NimbusMessage::Post { id, payload }),
        (any::<[u8; 32]>(), any::<u8>(), any::<[u8; 32]>(), payload()).prop_map(
            |(dest, hops, origin, payload)| NimbusMessage::Route {
                dest,
                hops,
                origin,
                payload
            }
        ),
        (any::<[u8; 32]>(), payload())
            .prop_map(|(origin, payload)| NimbusMessage::Neighbor { origin, payload }),
        proptest::collection::vec(range(), 0..40).prop_map(NimbusMessage::Have),
        any::<u64>().prop_map(NimbusMessage::Want),
        (any::<u64>(), payload())
            .prop_map(|(index, object)| NimbusMessage::Object { index, object }),
        any::<u64>().prop_map(NimbusMessage::Deny),
    ]
}

/// Arbitrary bytes, often behind a type byte the parsers know.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let first = prop_oneof![
        Just(None),
        prop::sample::select(vec![
            0x00u8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0a, 0x0b, 0x10, 0x20, 0x21, 0x22,
            0x30,
        ])
        .prop_map(Some),
    ];
    (first, proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(f, mut v)| {
        if let Some(f) = f {
            v.insert(0, f);
        }
        v
    })
}

// ------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn join_and_introduction_round_trip(id in any::<[u8; 32]>()) {
        prop_assert_eq!(parse_join(&encode_join(&id)), Ok(id));
        let m = encode_introduction(&id);
        prop_assert_eq!(parse_introduction(&m), Ok(id));
        for n in 0..m.len() {
            prop_assert!(parse_introduction(&m[..n]).is_err());
        }
    }

    #[test]
    fn group_connect_round_trip(
        group_id in any::<[u8; 32]>(),
        key in any::<[u8; 32]>(),
        receiver in any::<[u8; 32]>(),
    ) {
        let c = GroupConnect { group_id, key, receiver };
        let m = c.encode();
        prop_assert_eq!(m.len(), 137);
        prop_assert_eq!(GroupConnect::parse(&m), Ok(c));
        for n in 0..m.len() {
            prop_assert!(GroupConnect::parse(&m[..n]).is_err());
        }
    }

    #[test]
    fn report_round_trip(rep in report()) {
        prop_assert!(rep.entries.len() <= MAX_REPORT_ENTRIES);
        let m = rep.encode();
        let back = Report::parse(&m);
        prop_assert_eq!(back.as_ref(), Ok(&rep), "encoded {:02x?}", m);
    }

    #[test]
    fn announce_round_trip(a in announce()) {
        let m = a.encode();
        prop_assert_eq!(MediaAnnounce::parse(&m), Ok(a), "encoded {:02x?}", m);
    }

    #[test]
    fn fragments_map_agrees_with_held_set(
        last in prop_oneof![1u64..100_000, 1..=MAX_FRAGMENT_ID, (MAX_FRAGMENT_ID - 100)..=MAX_FRAGMENT_ID],
        span in 0u64..(8 * MAX_MAP_BYTES as u64),
        held in proptest::collection::vec(any::<bool>(), 0..2000),
    ) {
        // `held[k % len]` says whether id `last - 1 - k` is held
        let first = last.saturating_sub(span);
        let is_held = |id: u64| {
            let k = (last - 1 - id) as usize;
            !held.is_empty() && held[k % held.len()]
        };
        let m = encode_map(last, first, is_held);
        prop_assert!(m.len() <= 1 + 10 + MAX_MAP_BYTES);
        let map = FragmentMap::parse(&m).unwrap();
        prop_assert_eq!(map.last, last);
        // `last` itself is implicit
        prop_assert!(map.has(last));
        prop_assert!(!map.has(0));
        if last < MAX_FRAGMENT_ID {
            prop_assert!(!map.has(last + 1));
        }
        for id in first.max(1)..last {
            prop_assert_eq!(map.has(id), is_held(id), "id {} in {}..{}", id, first, last);
        }
        // below `first` nothing is described
        for id in first.saturating_sub(20).max(1)..first.max(1) {
            prop_assert!(!map.has(id), "id {} below first {}", id, first);
        }
    }

    #[test]
    fn split_media_reassembles(
        first_id in prop_oneof![1u64..1000, 1u64..(MAX_FRAGMENT_ID - 300)],
        message_type in any::<u8>(),
        timestamp in any::<u32>(),
        size in 0usize..20_000,
        seed in any::<u8>(),
    ) {
        let payload: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let parts = split_media(first_id, message_type, timestamp, &payload);
        let n = size.div_ceil(MAX_FRAGMENT_PAYLOAD).max(1);
        prop_assert_eq!(parts.len(), n);
        let mut got = Vec::with_capacity(size);
        for (i, p) in parts.iter().enumerate() {
            let h = FragmentHeader::parse(p).unwrap();
            prop_assert_eq!(h.id, first_id + i as u64);
            let body = &p[h.payload_at..];
            prop_assert!(body.len() <= MAX_FRAGMENT_PAYLOAD);
            let want_marker = if n == 1 {
                FRAG_WHOLE
            } else if i == 0 {
                FRAG_FIRST
            } else if i + 1 < n {
                FRAG_MIDDLE
            } else {
                FRAG_LAST
            };
            prop_assert_eq!(h.marker, want_marker);
            if h.marker == FRAG_FIRST || h.marker == FRAG_MIDDLE {
                prop_assert_eq!(usize::from(h.left), n - 1 - i);
            } else {
                prop_assert_eq!(h.left, 0);
            }
            if i == 0 {
                prop_assert_eq!(h.message_type, message_type);
                prop_assert_eq!(h.timestamp, timestamp);
            }
            got.extend_from_slice(body);
        }
        prop_assert_eq!(got, payload);
    }

    #[test]
    fn nimbus_round_trip(m in nimbus()) {
        let e = Bytes::from(m.encode());
        prop_assert_eq!(NimbusMessage::parse(&e), Ok(m));
    }

    #[test]
    fn nimbus_have_is_capped(n in 0usize..1100) {
        let ranges: Vec<(u64, u64)> = (0..n as u64).map(|i| (2 * i, 2 * i)).collect();
        let e = Bytes::from(NimbusMessage::Have(ranges.clone()).encode());
        let keep = n.min(MAX_HAVE_RANGES);
        prop_assert_eq!(
            NimbusMessage::parse(&e),
            Ok(NimbusMessage::Have(ranges[..keep].to_vec()))
        );
    }

    #[test]
    fn parsers_never_panic(data in hostile_bytes()) {
        let _ = parse_join(&data);
        let _ = parse_introduction(&data);
        let _ = GroupConnect::parse(&data);
        if let Ok(r) = Report::parse(&data) {
            prop_assert!(r.entries.len() <= MAX_REPORT_ENTRIES);
            prop_assert!(r.sender_addresses.len() <= MAX_ENTRY_ADDRESSES);
            for e in &r.entries {
                prop_assert!(e.addresses.len() <= MAX_ENTRY_ADDRESSES);
            }
        }
        let _ = MediaAnnounce::parse(&data);
        if let Ok(m) = FragmentMap::parse(&data) {
            prop_assert!(m.bitmap.len() <= MAX_MAP_BYTES);
            for id in [0, 1, m.last / 2, m.last.saturating_sub(1), m.last, m.last.saturating_add(1), u64::MAX] {
                let _ = m.has(id);
            }
        }
        if let Ok(h) = FragmentHeader::parse(&data) {
            prop_assert!(h.payload_at <= data.len());
            prop_assert!(h.id != 0);
        }
        let _ = NimbusMessage::parse(&Bytes::from(data));
    }
}

/// A name longer than an announce carries is cut at a character boundary
/// (`NetGroup::publish` and `play` refuse such names).
#[test]
fn long_announce_names_still_parse() {
    let name = format!("{}é", "a".repeat(254));
    let a = MediaAnnounce::Stream {
        name,
        key: [7; 32],
        params: StreamParams::default(),
    };
    let m = a.encode();
    assert!(MediaAnnounce::parse(&m).is_ok(), "encoded {m:02x?}");
}
