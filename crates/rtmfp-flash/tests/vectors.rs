//! Replays real handshakes recorded against rtmfp-cpp (see
//! `tests/vectors/*.json` and the `flash_client` / `flash_responder`
//! examples' `--record`): decrypts every recorded datagram, recomputes the
//! Diffie-Hellman secret from our recorded private key and the far public
//! key found in the packets, re-derives the session keys and checks them
//! against what our side derived live, and parses every chunk with
//! `rtmfp::wire`.

use rtmfp::wire::{self, Chunk, Mode, Packet};
use rtmfp::PacketCrypto;
use rtmfp_flash::{
    derive_session_keys, hex_decode, Certificate, DhGroup, DhKeyPair, Epd, FlashPacketCrypto,
    KeyingComponent, Negotiated, SessionKeyMaterial,
};
use serde_json::Value;

fn hex(v: &Value) -> Vec<u8> {
    hex_decode(v.as_str().expect("hex string")).expect("valid hex")
}

struct Startup {
    epd: Vec<u8>,
    responder_cert: Vec<u8>,
    initiator_cert: Vec<u8>,
    skic: Vec<u8>,
    skrc: Vec<u8>,
}

fn replay(file: &str) {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let k = &v["keys"];
    let initiator = k["role"] == "Initiator";
    let group = DhGroup::from_id(k["group"].as_u64().unwrap()).unwrap();

    // 1. startup packets: Default Session Key, checksum (encrypted by
    //    OpenSSL on the far side, by us on ours)
    let mut default_key = FlashPacketCrypto::default_key();
    let mut st = Startup {
        epd: vec![],
        responder_cert: vec![],
        initiator_cert: vec![],
        skic: vec![],
        skrc: vec![],
    };
    let mut session_datagrams = Vec::new();
    for d in v["datagrams"].as_array().unwrap() {
        let out = d["dir"] == "out";
        let data = hex(&d["data"]);
        let (sid, enc) = wire::demultiplex(&data).unwrap();
        let mut buf = enc.to_vec();
        let startup = sid == 0 || {
            // RIKeying and cookie changes go in the initiator's session ID
            // but with the default key
            let mut probe = buf.clone();
            default_key
                .decrypt(&mut probe)
                .ok()
                .and_then(|r| Packet::parse(&probe[r]).ok().map(|p| p.header.mode))
                == Some(Mode::Startup)
        };
        if !startup {
            session_datagrams.push((out, data));
            continue;
        }
        let r = default_key
            .decrypt(&mut buf)
            .expect("startup packet decrypts");
        let p = Packet::parse(&buf[r]).unwrap();
        assert_eq!(p.header.mode, Mode::Startup);
        for (_, c) in p.chunks() {
            match c.unwrap() {
                Chunk::IHello { epd, .. } => st.epd = epd.to_vec(),
                Chunk::RHello { certificate, .. } => st.responder_cert = certificate.to_vec(),
                Chunk::IIKeying {
                    certificate, skic, ..
                } => {
                    st.initiator_cert = certificate.to_vec();
                    st.skic = skic.to_vec();
                }
                Chunk::RIKeying {
                    skrc, signature, ..
                } => {
                    st.skrc = skrc.to_vec();
                    assert_eq!(signature, b"X");
                }
                _ => {}
            }
        }
    }
    assert_eq!(st.skic, hex(&k["skic"]));
    assert_eq!(st.skrc, hex(&k["skrc"]));

    // 2. certificates and EPD
    let rcert = Certificate::parse(&st.responder_cert).unwrap();
    let icert = Certificate::parse(&st.initiator_cert).unwrap();
    assert!(rcert.accepts_ancillary_data && !rcert.is_static());
    assert!(
        icert.is_static(),
        "rtmfp-cpp and our clients use static keys"
    );
    assert!(Epd::parse(&st.epd).unwrap().selects(&st.responder_cert));

    // 3. key agreement: our private key and the far public key in the packets
    let near = DhKeyPair::from_private(group, &hex(&k["near_private_key"])).unwrap();
    assert_eq!(near.public_key(), &hex(&k["near_public_key"])[..]);
    let skic = KeyingComponent::parse(&st.skic).unwrap();
    let skrc = KeyingComponent::parse(&st.skrc).unwrap();
    let far_public = if initiator {
        // responder (tcserver) is ephemeral: its key is in the SKRC
        let (g, key) = skrc.ephemeral_public_key.clone().unwrap();
        assert_eq!(g, group.id());
        key
    } else {
        // initiator (fcclient) is static: the SKIC selects the group of the
        // key in its certificate
        assert_eq!(skic.group_select, Some(group.id()));
        icert.static_key(group.id()).unwrap().to_vec()
    };
    assert_eq!(far_public, hex(&k["far_public_key"]));
    let secret = near.shared_secret(&far_public).unwrap();
    assert_eq!(&secret[..], &hex(&k["dh_secret"])[..]);

    // 4. negotiation as RFC 7425 §4.6.4 / §4.6.6 define it
    let (near_c, far_c) = if initiator {
        (&skic, &skrc)
    } else {
        (&skrc, &skic)
    };
    let (nh, nlen) = near_c.hmac.unwrap();
    let (fh, flen) = far_c.hmac.unwrap();
    let (ns, fs) = (near_c.sseq.unwrap(), far_c.sseq.unwrap());
    let negotiated = Negotiated {
        send_hmac_len: if nh.sends(fh.request) {
            nlen as usize
        } else {
            0
        },
        recv_hmac_len: if fh.sends(nh.request) {
            flen as usize
        } else {
            0
        },
        send_sseq: ns.sends(fs.request),
        recv_sseq: fs.sends(ns.request),
    };
    assert_eq!(
        negotiated.send_hmac_len as u64,
        k["send_hmac_len"].as_u64().unwrap()
    );
    assert_eq!(
        negotiated.recv_hmac_len as u64,
        k["recv_hmac_len"].as_u64().unwrap()
    );
    assert_eq!(negotiated.send_sseq, k["send_sseq"].as_bool().unwrap());
    assert_eq!(negotiated.recv_sseq, k["recv_sseq"].as_bool().unwrap());

    // 5. the session keys and nonces
    let (sknc, skfc) = if initiator {
        (&st.skic, &st.skrc)
    } else {
        (&st.skrc, &st.skic)
    };
    let keys: SessionKeyMaterial = derive_session_keys(&secret, sknc, skfc, negotiated);
    assert_eq!(keys.encrypt_key.to_vec(), hex(&k["encrypt_key"]));
    assert_eq!(keys.decrypt_key.to_vec(), hex(&k["decrypt_key"]));
    assert_eq!(keys.hmac_send_key.to_vec(), hex(&k["hmac_send_key"]));
    assert_eq!(keys.hmac_recv_key.to_vec(), hex(&k["hmac_recv_key"]));
    assert_eq!(keys.near_nonce.to_vec(), hex(&k["near_nonce"]));
    assert_eq!(keys.far_nonce.to_vec(), hex(&k["far_nonce"]));

    // 6. session packets both ways: received ones with our keys, sent ones
    //    with the far end's view of them
    let mut rx = FlashPacketCrypto::new(&keys);
    let mut tx_view = FlashPacketCrypto::new(&keys.reversed());
    let (my_mode, far_mode) = if initiator {
        (Mode::Initiator, Mode::Responder)
    } else {
        (Mode::Responder, Mode::Initiator)
    };
    let (mut n_out, mut n_in) = (0, 0);
    for (out, data) in session_datagrams {
        let (_, enc) = wire::demultiplex(&data).unwrap();
        let mut buf = enc.to_vec();
        let crypto = if out { &mut tx_view } else { &mut rx };
        let r = crypto.decrypt(&mut buf).expect("session packet decrypts");
        let p = Packet::parse(&buf[r]).unwrap();
        assert_eq!(p.header.mode, if out { my_mode } else { far_mode });
        let mut chunks = 0;
        for (ty, c) in p.chunks() {
            c.unwrap_or_else(|e| panic!("chunk {ty:#x}: {e}"));
            chunks += 1;
        }
        assert!(chunks > 0);
        // each packet is accepted once
        let mut again = enc.to_vec();
        assert!(crypto.decrypt(&mut again).is_err(), "replay accepted");
        if out {
            n_out += 1;
        } else {
            n_in += 1;
        }
    }
    assert!(n_out > 0 && n_in > 0, "session packets both ways");
}

#[test]
fn client_against_rtmfp_cpp_tcserver() {
    replay("tcserver_client.json");
}

#[test]
fn rtmfp_cpp_fcclient_against_responder() {
    replay("fcclient_responder.json");
}

#[test]
fn client_against_rtmfp_cpp_tcserver_checksum_and_sseq() {
    replay("tcserver_client_checksum.json");
}
