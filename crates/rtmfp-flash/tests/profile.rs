//! The profile through the `rtmfp::CryptoProfile` traits, without the
//! engine: keying in every mode, identity rules, signatures and refusal of
//! bad keying.

use std::sync::{Arc, Mutex};

use rand_core::SeedableRng;
use rtmfp::wire::{encode_iikeying_signed, encode_rikeying_signed};
use rtmfp::{CryptoError, CryptoProfile, IIKeyingInput, PacketCrypto, SessionKeys};

use rtmfp_flash::*;

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

fn build(b: FlashProfileBuilder, seed: u64) -> FlashProfile {
    b.build(&mut rng(seed)).unwrap()
}

/// Runs the keying exchange the way the engine does; `tamper` may modify
/// the SKIC and SKRC in flight.
fn keying(
    client: &mut FlashProfile,
    server: &mut FlashProfile,
    tamper_skic: impl FnOnce(&mut Vec<u8>),
    tamper_skrc: impl FnOnce(&mut Vec<u8>),
) -> Result<(SessionKeys, SessionKeys), CryptoError> {
    static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
    let mut r = rng(SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let server_cert = server.certificate().to_vec();
    let client_cert = client.certificate().to_vec();
    assert!(client.is_authentic(&server_cert));
    assert!(server.is_authentic(&client_cert));
    let hs = client.begin_initiator(&server_cert, &mut r)?;
    let mut skic = hs.skic().to_vec();
    tamper_skic(&mut skic);
    let cookie = [7u8; 64];
    let mut signed = Vec::new();
    encode_iikeying_signed(&mut signed, 1, &cookie, &client_cert, &skic);
    let signature = hs.sign(&signed);
    let rh = server.respond(
        IIKeyingInput {
            certificate: &client_cert,
            skic: &skic,
            signed: &signed,
            signature: &signature,
        },
        &mut r,
    )?;
    let mut skrc = rh.skrc().to_vec();
    let mut rsigned = Vec::new();
    encode_rikeying_signed(&mut rsigned, 2, &skrc);
    rsigned.extend_from_slice(&skic);
    let rsig = rh.sign(&rsigned);
    let server_keys = rh.into_keys();
    tamper_skrc(&mut skrc);
    let mut rsigned = Vec::new();
    encode_rikeying_signed(&mut rsigned, 2, &skrc);
    rsigned.extend_from_slice(&skic);
    let client_keys = hs.complete(&skrc, &rsigned, &rsig)?;
    Ok((client_keys, server_keys))
}

fn assert_keys_work(mut c: SessionKeys, mut s: SessionKeys) {
    assert_eq!(c.near_nonce, s.far_nonce);
    assert_eq!(c.far_nonce, s.near_nonce);
    one_way(&mut *c.crypto, &mut *s.crypto);
    one_way(&mut *s.crypto, &mut *c.crypto);
}

fn one_way(a: &mut dyn PacketCrypto, b: &mut dyn PacketCrypto) {
    let mut buf = b"\x00\x00\x00\x00\x09hello".to_vec();
    a.encrypt(&mut buf, 4);
    let mut enc = buf[4..].to_vec();
    let r = b.decrypt(&mut enc).unwrap();
    assert_eq!(&enc[r][..6], b"\x09hello");
}

fn noop(_: &mut Vec<u8>) {}

#[test]
fn keying_in_every_mode_and_group() {
    for (i, g) in DhGroup::ALL.into_iter().enumerate() {
        for (j, (cs, ss)) in [(true, false), (false, false), (true, true), (false, true)]
            .into_iter()
            .enumerate()
        {
            let seed = (i * 10 + j) as u64;
            let c = FlashProfile::client().groups(&[g]);
            let c = if cs {
                c.static_keys()
            } else {
                c.ephemeral_keys()
            };
            let s = FlashProfile::server(None).groups(&DhGroup::ALL);
            let s = if ss {
                s.static_keys()
            } else {
                s.ephemeral_keys()
            };
            let (mut c, mut s) = (build(c, seed), build(s, seed + 100));
            let (ck, sk) = keying(&mut c, &mut s, noop, noop).unwrap();
            assert_keys_work(ck, sk);
        }
    }
}

#[test]
fn strongest_common_group_is_chosen() {
    let log: Arc<Mutex<Vec<u64>>> = Arc::default();
    let l2 = log.clone();
    let mut c = build(
        FlashProfile::client()
            .groups(&[DhGroup::Modp1024, DhGroup::Modp2048, DhGroup::Modp1536])
            .key_log(Arc::new(move |e: &KeyLogEntry<'_>| {
                l2.lock().unwrap().push(e.group.id())
            })),
        1,
    );
    let mut s = build(
        FlashProfile::server(None).groups(&[DhGroup::Modp1536, DhGroup::Modp1024]),
        2,
    );
    keying(&mut c, &mut s, noop, noop).unwrap();
    assert_eq!(*log.lock().unwrap(), vec![5]);
    // no common group: refused before any keying
    let mut s = build(FlashProfile::server(None).groups(&[DhGroup::Modp4096]), 3);
    let cert = s.certificate().to_vec();
    assert!(matches!(
        c.begin_initiator(&cert, &mut rng(1)),
        Err(CryptoError::BadKeying(_))
    ));
    let _ = &mut s;
}

#[test]
fn ephemeral_key_reuse_window() {
    let publics: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let p2 = publics.clone();
    let mut s = build(
        FlashProfile::server(None)
            .groups(&[DhGroup::Modp1024])
            .reuse_ephemeral_keys(3)
            .key_log(Arc::new(move |e: &KeyLogEntry<'_>| {
                p2.lock().unwrap().push(e.near_public_key.to_vec())
            })),
        1,
    );
    let mut nonces = Vec::new();
    for i in 0..7 {
        let mut c = build(FlashProfile::client().groups(&[DhGroup::Modp1024]), 10 + i);
        let (ck, sk) = keying(&mut c, &mut s, noop, noop).unwrap();
        nonces.push(sk.near_nonce.clone());
        assert_keys_work(ck, sk);
    }
    let p = publics.lock().unwrap();
    assert_eq!(p[0], p[1]);
    assert_eq!(p[1], p[2]);
    assert_ne!(p[2], p[3]);
    assert_eq!(p[3], p[5]);
    assert_ne!(p[5], p[6]);
    // every session still has its own keys
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 7);
}

#[test]
fn key_rotation_ends_reuse() {
    let publics: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let p2 = publics.clone();
    let rotation = KeyRotation::new();
    let mut s = build(
        FlashProfile::server(None)
            .groups(&[DhGroup::Modp1024])
            .reuse_ephemeral_keys(100)
            .key_rotation(&rotation)
            .key_log(Arc::new(move |e: &KeyLogEntry<'_>| {
                p2.lock().unwrap().push(e.near_public_key.to_vec())
            })),
        1,
    );
    for i in 0..4 {
        if i == 2 {
            rotation.rotate();
        }
        let mut c = build(FlashProfile::client().groups(&[DhGroup::Modp1024]), 20 + i);
        keying(&mut c, &mut s, noop, noop).unwrap();
    }
    let p = publics.lock().unwrap();
    assert_eq!(p[0], p[1]);
    assert_ne!(p[1], p[2]);
    assert_eq!(p[2], p[3]);
}

#[test]
fn tampered_keying_is_refused_or_yields_different_keys() {
    let mk = || {
        (
            build(FlashProfile::client().groups(&[DhGroup::Modp1024]), 1),
            build(FlashProfile::server(None), 2),
        )
    };
    // flipping a bit of the server's public key in the SKRC: the keys differ
    // (or the key is refused)
    let (mut c, mut s) = mk();
    match keying(&mut c, &mut s, noop, |k| {
        let n = k.len();
        k[n - 5] ^= 0x10;
    }) {
        Err(_) => {}
        Ok((mut ck, mut sk)) => {
            let mut buf = b"\0\0\0\0\x09hello".to_vec();
            ck.crypto.encrypt(&mut buf, 4);
            let mut enc = buf[4..].to_vec();
            assert!(sk.crypto.decrypt(&mut enc).is_err());
        }
    }
    // a truncated SKRC is malformed
    let (mut c, mut s) = mk();
    assert!(matches!(
        keying(&mut c, &mut s, noop, |k| k.truncate(k.len() - 3)),
        Err(CryptoError::BadKeying(_))
    ));
    // a degenerate public key (1) from the server is refused
    let (mut c, mut s) = mk();
    let r = keying(&mut c, &mut s, noop, |k| {
        let mut p = KeyingComponent::parse(k).unwrap();
        p.ephemeral_public_key = Some((16, vec![1]));
        *k = p.encode();
    });
    assert!(matches!(r, Err(CryptoError::BadKeying(_))), "{r:?}");
    // an SKIC selecting a group the server does not offer
    let (mut c, mut s) = mk();
    let r = keying(
        &mut c,
        &mut s,
        |k| {
            let mut p = KeyingComponent::parse(k).unwrap();
            p.group_select = Some(3);
            *k = p.encode();
        },
        noop,
    );
    assert!(matches!(r, Err(CryptoError::BadKeying(_))), "{r:?}");
    // an SKIC without key material
    let (mut c, mut s) = mk();
    let r = keying(&mut c, &mut s, |k| k.clear(), noop);
    assert!(matches!(r, Err(CryptoError::BadKeying(_))), "{r:?}");
}

#[test]
fn hmac_length_negotiation() {
    let mut c = build(
        FlashProfile::client()
            .groups(&[DhGroup::Modp1024])
            .hmac(Negotiation::REQUIRED)
            .hmac_length(4),
        1,
    );
    let mut s = build(
        FlashProfile::server(None)
            .hmac(Negotiation::REQUIRED)
            .hmac_length(32),
        2,
    );
    let (ck, sk) = keying(&mut c, &mut s, noop, noop).unwrap();
    // 32-byte tags from the server, 4-byte ones from the client (plus
    // padding and room for a sequence number)
    assert_eq!(ck.crypto.overhead(), 10 + 15 + 4);
    assert_eq!(sk.crypto.overhead(), 10 + 15 + 32);
    assert_keys_work(ck, sk);
    // an advertised HMAC length out of range is refused by the receiver
    let mut c = build(
        FlashProfile::client()
            .groups(&[DhGroup::Modp1024])
            .hmac(Negotiation::REQUIRED),
        3,
    );
    let mut s = build(FlashProfile::server(None), 4);
    let r = keying(
        &mut c,
        &mut s,
        |k| {
            let mut p = KeyingComponent::parse(k).unwrap();
            p.hmac = Some((NegotiationFlags::from_byte(7), 33));
            *k = p.encode();
        },
        noop,
    );
    assert!(matches!(r, Err(CryptoError::BadKeying(_))), "{r:?}");
    assert!(FlashProfile::client()
        .hmac_length(3)
        .build(&mut rng(1))
        .is_err());
}

#[test]
fn simple_password_signatures() {
    let cred = SimplePassword::new("app", "s3cret");
    let mut c = build(
        FlashProfile::client()
            .groups(&[DhGroup::Modp1024])
            .sign_with_password(cred.clone())
            .accept_password(cred.clone())
            .require_signature(true),
        1,
    );
    let mut s = build(
        FlashProfile::server(None)
            .sign_with_password(cred.clone())
            .accept_password(cred.clone())
            .require_signature(true),
        2,
    );
    let (ck, sk) = keying(&mut c, &mut s, noop, noop).unwrap();
    assert_keys_work(ck, sk);
    // a server requiring a password refuses an unsigned client ("X")
    let mut anon = build(FlashProfile::client().groups(&[DhGroup::Modp1024]), 3);
    assert_eq!(
        keying(&mut anon, &mut s, noop, noop).err(),
        Some(CryptoError::BadSignature)
    );
    // a client requiring a signed RIKeying refuses an unsigned server, and
    // a tampered SKRC breaks the signature over it
    let mut plain_server = build(FlashProfile::server(None), 4);
    assert_eq!(
        keying(&mut c, &mut plain_server, noop, noop).err(),
        Some(CryptoError::BadSignature)
    );
    assert_eq!(
        keying(&mut c, &mut s, noop, |k| k.push(0)).err(),
        Some(CryptoError::BadSignature)
    );
}

#[test]
fn identity_rules() {
    let c = build(FlashProfile::client().groups(&[DhGroup::Modp1024]), 1);
    let s = build(FlashProfile::server(Some("example.com")), 2);
    let cc = c.certificate().to_vec();
    let sc = s.certificate().to_vec();
    // peer ID and canonical EPD
    assert_eq!(c.peer_id(), fingerprint(&cc));
    assert_eq!(c.near_canonical_epd().to_vec(), s.canonical_epd(&cc));
    assert_eq!(c.peer_id().to_hex().len(), 64);
    // server certificate: 45 bytes (accepts ancillary data, groups 16 14 2,
    // 32 bytes of randomness) plus the hostname option; 77 with 64 bytes of
    // randomness like rtmfp-cpp's and MonaServer's
    let bare = build(FlashProfile::server(None), 3);
    assert_eq!(bare.certificate().len(), 45);
    let wide = build(FlashProfile::server(None).certificate_randomness(64), 3);
    assert_eq!(wide.certificate().len(), 77);
    // EPDs selecting the near end
    assert!(s.epd_selects_near(&Epd::server("rtmfp://example.com/app").encode()));
    assert!(s.epd_selects_near(&Epd::hostname("example.com").encode()));
    assert!(!s.epd_selects_near(&Epd::hostname("other.com").encode()));
    assert!(s.epd_selects_near(&Epd::peer(s.peer_id()).encode()));
    assert!(!c.epd_selects_near(&Epd::server("rtmfp://example.com/app").encode()));
    assert!(c.epd_selects_near(&c.near_canonical_epd()));
    assert!(!c.epd_selects_near(&[]));
    assert!(!c.epd_selects_near(&[0xff]));
    assert!(c.epd_selects(&s.canonical_epd(&sc), &sc));
    // authenticity: well formed with a key mode
    assert!(c.is_authentic(&sc) && s.is_authentic(&cc));
    assert!(!c.is_authentic(&[]));
    assert!(!c.is_authentic(&[9, 9, 9]));
    // glare: the smaller certificate prevails, identical means near prevails
    assert_eq!(c.far_prevails(&sc), sc < cc);
    assert_eq!(s.far_prevails(&cc), cc < sc);
    assert!(!c.far_prevails(&cc));
    let mut longer = cc.clone();
    longer.push(0);
    assert!(!c.far_prevails(&longer));
    assert!(c.far_prevails(&cc[..cc.len() - 1]));
    // session override: identical certificates only
    assert!(c.overrides(&sc, &sc));
    assert!(!c.overrides(&sc, &cc));
}

#[test]
fn ancillary_filter() {
    let s = build(
        FlashProfile::server(None).ancillary_filter(Arc::new(|uri: &[u8]| uri.ends_with(b"/live"))),
        1,
    );
    assert!(s.epd_selects_near(&Epd::server("rtmfp://h/live").encode()));
    assert!(!s.epd_selects_near(&Epd::server("rtmfp://h/vod").encode()));
    // a fingerprint EPD is not filtered
    let mut e = Epd::peer(s.peer_id());
    e.ancillary_data = Some(b"rtmfp://h/vod".to_vec());
    assert!(s.epd_selects_near(&e.encode()));
}

#[test]
fn secrets_are_not_printed() {
    let c = build(FlashProfile::client().groups(&[DhGroup::Modp1024]), 1);
    let key = c.static_key_pairs().next().unwrap();
    let priv_hex = hex_encode(&key.private_key());
    assert!(!format!("{key:?}").contains(&priv_hex[..16]));
    let m = derive_session_keys(b"s", b"a", b"b", Negotiated::default());
    let dbg = format!("{m:?} {:?}", FlashPacketCrypto::new(&m));
    assert!(!dbg.contains(&hex_encode(&m.encrypt_key)[..16]));
    assert!(!dbg.contains(&format!("{:?}", &m.encrypt_key[..4])));
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_inputs_never_panic(
            cert in proptest::collection::vec(any::<u8>(), 0..200),
            skic in proptest::collection::vec(any::<u8>(), 0..200),
            sig in proptest::collection::vec(any::<u8>(), 0..50),
        ) {
            let s = build(FlashProfile::server(None).groups(&[DhGroup::Modp1024]), 1);
            let c = build(FlashProfile::client().groups(&[DhGroup::Modp1024]), 2);
            let input = IIKeyingInput { certificate: &cert, skic: &skic, signed: &skic, signature: &sig };
            prop_assert!(s.respond(input, &mut rng(3)).is_err());
            let _ = c.begin_initiator(&cert, &mut rng(4));
            let _ = s.epd_selects_near(&cert);
            let _ = s.epd_selects(&skic, &cert);
            let _ = s.is_authentic(&cert);
            prop_assert_eq!(s.canonical_epd(&cert).len(), 34);
            let _ = s.far_prevails(&cert);
        }

        #[test]
        fn mutated_keying_never_panics(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            // a real client certificate and SKIC, then corrupted
            let c = build(FlashProfile::client().groups(&[DhGroup::Modp1024]), 5);
            let s = build(FlashProfile::server(None).groups(&[DhGroup::Modp1024]), 6);
            let cert = c.certificate().to_vec();
            let server_cert = s.certificate().to_vec();
            let hs = c.begin_initiator(&server_cert, &mut rng(7)).unwrap();
            let mut skic = hs.skic().to_vec();
            for (i, x) in &flips {
                let i = i.index(skic.len());
                skic[i] ^= x;
            }
            let mut cert2 = cert.clone();
            cert2.truncate(cut.index(cert.len() + 1));
            for cert in [&cert, &cert2] {
                let input = IIKeyingInput { certificate: cert, skic: &skic, signed: &skic, signature: b"X" };
                if let Ok(r) = s.respond(input, &mut rng(8)) {
                    // whatever was accepted yields a usable (if mismatched) key
                    let mut k = r.into_keys();
                    let mut buf = vec![0; 4];
                    buf.push(9);
                    k.crypto.encrypt(&mut buf, 4);
                }
            }
            let mut skrc = skic.clone();
            skrc.reverse();
            let _ = hs.complete(&skrc, &skrc, b"X");
        }
    }
}
