//! Our default client against a responder that keys the way MonaServer2
//! does (see `interop/MONA-FACTS.md` §1–2, facts only, no code): it offers
//! ephemeral groups 2, 5 and 14 but only computes group 2; it takes the
//! initiator's public key from the *first option* of the initiator
//! certificate (skipping two bytes it assumes are `1D 02`), and takes the
//! SKIC (used only as the initiator nonce) from right after that option.
//! A key it cannot use makes it drop the IIKeying silently (or, in
//! [`Mode::Garbage`], answer anyway with a group 2 key and a meaningless
//! secret). Our client's default certificate carries static keys for
//! groups 16, 14 and 2 in that order, so it must fall back to a
//! certificate with only its group 2 key.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nimbus_testkit::identity;
use nimbus_testkit::sim::{Engine, Recorder, SimNode};
use rand_core::{RngCore, SeedableRng};
use rtmfp::{
    CryptoError, CryptoProfile, Endpoint, EndpointConfig, IIKeyingInput, InitiatorHandshake,
    OpenError, PacketCrypto, ResponderHandshake, SessionId, SessionKeys,
};
use rtmfp_flash::{
    derive_session_keys, fingerprint, is_acceptable_public_key, DhGroup, DhKeyPair, Epd,
    FlashPacketCrypto, FlashProfile, FlashProfileBuilder, Negotiated, SessionKeyMaterial,
    EMPTY_SIGNATURE,
};
use rtmfp_sim::Sim;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A key it cannot use: no answer (MonaServer2's "DH compute key error").
    Silent,
    /// A key of the wrong size: answers anyway with its group 2 key.
    Garbage,
}

/// A responder profile keying like MonaServer2 (everything else is a
/// plain Flash server profile offering groups 2, 5 and 14).
struct MonaLike {
    inner: FlashProfile,
    mode: Mode,
}

impl fmt::Debug for MonaLike {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonaLike")
            .field("mode", &self.mode)
            .finish()
    }
}

/// A VLU (RFC 7016 §2.1.2) at the start of `b`: value and length.
fn vlu(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, &x) in b.iter().enumerate().take(8) {
        v = (v << 7) | (x & 0x7f) as usize;
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

struct MonaResponder {
    skrc: Vec<u8>,
    keys: SessionKeyMaterial,
}

impl fmt::Debug for MonaResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MonaResponder")
    }
}

impl ResponderHandshake for MonaResponder {
    fn skrc(&self) -> &[u8] {
        &self.skrc
    }
    fn sign(&self, _: &[u8]) -> Vec<u8> {
        EMPTY_SIGNATURE.to_vec()
    }
    fn into_keys(self: Box<Self>) -> SessionKeys {
        SessionKeys {
            crypto: Box::new(FlashPacketCrypto::new(&self.keys)),
            near_nonce: self.keys.near_nonce.to_vec(),
            far_nonce: self.keys.far_nonce.to_vec(),
        }
    }
}

impl CryptoProfile for MonaLike {
    fn default_session_crypto(&self) -> Box<dyn PacketCrypto> {
        self.inner.default_session_crypto()
    }
    fn certificate(&self) -> &[u8] {
        self.inner.certificate()
    }
    fn epd_selects_near(&self, epd: &[u8]) -> bool {
        self.inner.epd_selects_near(epd)
    }
    fn epd_selects(&self, epd: &[u8], certificate: &[u8]) -> bool {
        self.inner.epd_selects(epd, certificate)
    }
    fn is_authentic(&self, certificate: &[u8]) -> bool {
        !certificate.is_empty()
    }
    fn canonical_epd(&self, certificate: &[u8]) -> Vec<u8> {
        self.inner.canonical_epd(certificate)
    }
    fn far_prevails(&self, far: &[u8]) -> bool {
        self.inner.far_prevails(far)
    }
    /// In [`Mode::Garbage`] the responder opened a session the initiator
    /// could not key; a new keying from the same address replaces it (our
    /// engine would otherwise drop it while the dead session lasts).
    fn overrides(&self, _existing: &[u8], _new: &[u8]) -> bool {
        true
    }
    fn begin_initiator(
        &self,
        cert: &[u8],
        rng: &mut dyn RngCore,
    ) -> Result<Box<dyn InitiatorHandshake>, CryptoError> {
        self.inner.begin_initiator(cert, rng)
    }
    fn respond(
        &self,
        k: IIKeyingInput<'_>,
        rng: &mut dyn RngCore,
    ) -> Result<Box<dyn ResponderHandshake>, CryptoError> {
        let silent = || CryptoError::BadKeying("DH compute key error".into());
        let cert = k.certificate;
        // the first option: its length, two "unknown" bytes, the key
        let (len, n) = vlu(cert).ok_or_else(silent)?;
        let first = cert.get(n..n + len).ok_or_else(silent)?;
        let key = first.get(2..).ok_or_else(silent)?;
        let usable = key.len() == 128 && is_acceptable_public_key(DhGroup::Modp1024, key);
        let near = DhKeyPair::generate(DhGroup::Modp1024, rng);
        let secret = match (usable, self.mode) {
            (true, _) => near.shared_secret(key).map_err(|_| silent())?.to_vec(),
            (false, Mode::Silent) => return Err(silent()),
            (false, Mode::Garbage) => {
                let mut s = vec![0u8; 128];
                rng.fill_bytes(&mut s);
                s
            }
        };
        // "the SKIC": wherever the bytes after the first option say
        let rest = &cert[n + len..];
        let nonce: Vec<u8> = if rest.is_empty() {
            k.skic.to_vec()
        } else {
            let (l2, m) = vlu(rest).unwrap_or((0, 0));
            let tail = &rest[m..];
            tail[..l2.min(tail.len())].to_vec()
        };
        // the SKRC MonaServer2 writes: HMAC and session sequence
        // negotiation all clear, then its group 2 ephemeral key
        let mut skrc = vec![
            0x03, 0x1a, 0x00, 0x00, 0x02, 0x1e, 0x00, 0x81, 0x02, 0x0d, 0x02,
        ];
        skrc.extend_from_slice(near.public_key());
        let keys = derive_session_keys(&secret, &skrc, &nonce, Negotiated::default());
        Ok(Box::new(MonaResponder { skrc, keys }))
    }
}

type Peer = SimNode<Engine<Recorder>>;

const CLIENT: usize = 0;
const SERVER: usize = 1;

fn mona(mode: Mode, seed: u64, now: Instant) -> Endpoint {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let inner = FlashProfile::server(None)
        .groups(&[DhGroup::Modp1024, DhGroup::Modp1536, DhGroup::Modp2048])
        .build(&mut rng)
        .unwrap();
    let profile = MonaLike { inner, mode };
    Endpoint::new(
        EndpointConfig::default(),
        Box::new(profile),
        Box::new(rng),
        now,
    )
}

fn pair(seed: u64, client: FlashProfileBuilder, mode: Mode) -> Sim<Peer> {
    let mut sim: Sim<Peer> = Sim::new(seed);
    let now = sim.now();
    let a: SocketAddr = "198.18.0.1:1000".parse().unwrap();
    let b: SocketAddr = "198.18.0.2:1935".parse().unwrap();
    let c = identity::flash(client, seed ^ 1, now);
    sim.add_node(SimNode::new(a, Engine::new(c, Recorder::default())), &[a]);
    let m = mona(mode, seed ^ 2, now);
    sim.add_node(SimNode::new(b, Engine::new(m, Recorder::default())), &[b]);
    sim
}

fn connect(sim: &mut Sim<Peer>) -> Result<(SessionId, SessionId), Option<OpenError>> {
    let now = sim.now();
    let to = sim.node(SERVER).addr;
    let epd = Epd::server("rtmfp://127.0.0.1/live").encode();
    let sid = sim
        .node_mut(CLIENT)
        .call(now, |ep, now| ep.connect(now, &epd, &[to]))
        .unwrap();
    let ok = sim.run_until(Duration::from_secs(30), |s| {
        s.node(CLIENT).opened().contains(&sid) || s.node(CLIENT).failed().is_some()
    });
    if !ok || !sim.node(CLIENT).opened().contains(&sid) {
        return Err(sim.node(CLIENT).failed());
    }
    sim.run_until(Duration::from_secs(5), |s| {
        !s.node(SERVER).opened().is_empty()
    });
    let far = *sim.node(SERVER).opened().last().ok_or(None)?;
    Ok((sid, far))
}

/// Sends `len` bytes from `from` on a new flow and checks that `to`
/// receives them (wrong session keys would lose every packet).
fn move_data(sim: &mut Sim<Peer>, from: usize, to: usize, sid: SessionId, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    nimbus_testkit::sim::move_data(sim, from, to, sid, &data, Duration::from_secs(30));
}

fn client_cert(sim: &Sim<Peer>) -> Vec<u8> {
    sim.node(CLIENT).ep.profile().certificate().to_vec()
}

/// The default client falls back to its group 2 certificate, and the
/// session's keys agree both ways.
fn falls_back_and_works(mode: Mode, seed: u64) {
    let mut sim = pair(seed, FlashProfile::client(), mode);
    let before = client_cert(&sim);
    assert!(before.len() > 255, "default certificate: three static keys");
    let (c, s) = connect(&mut sim).expect("connects after falling back");
    let after = client_cert(&sim);
    // one option, 130 bytes: 1D 02 and the group 2 key
    assert_eq!(after.len(), 132);
    assert_eq!(&after[..4], &[0x81, 0x02, 0x1d, 0x02]);
    assert_eq!(&after[4..], &before[before.len() - 128..]);
    // the responder knows us by the new certificate's fingerprint
    let far = sim.node(SERVER).ep.session_info(s).unwrap();
    assert_eq!(fingerprint(&far.far_certificate), fingerprint(&after));
    move_data(&mut sim, CLIENT, SERVER, c, 20_000);
    move_data(&mut sim, SERVER, CLIENT, s, 20_000);
}

#[test]
fn default_client_falls_back_when_the_responder_goes_silent() {
    falls_back_and_works(Mode::Silent, 7);
}

#[test]
fn default_client_falls_back_when_the_answer_is_in_another_group() {
    falls_back_and_works(Mode::Garbage, 8);
}

#[test]
fn no_fallback_below_the_allowed_groups() {
    let client = FlashProfile::client().groups(&[DhGroup::Modp4096, DhGroup::Modp2048]);
    let mut sim = pair(9, client, Mode::Silent);
    let before = client_cert(&sim);
    let r = connect(&mut sim);
    assert!(r.is_err(), "must not connect: {r:?}");
    assert_eq!(client_cert(&sim), before);
}

#[test]
fn group_2_only_client_needs_no_fallback() {
    let client = FlashProfile::client().groups(&[DhGroup::Modp1024]);
    let mut sim = pair(10, client, Mode::Silent);
    let before = client_cert(&sim);
    let t0 = sim.now();
    let (c, _) = connect(&mut sim).expect("connects");
    assert!(sim.now() - t0 < Duration::from_secs(1));
    assert_eq!(client_cert(&sim), before);
    move_data(&mut sim, CLIENT, SERVER, c, 5_000);
}

#[test]
fn profile_falls_back_once() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let p = FlashProfile::client().build(&mut rng).unwrap();
    let primary = p.peer_id();
    let compat = p.fallback_peer_id().expect("group 2 is allowed");
    assert_ne!(primary, compat);
    assert!(!p.has_fallen_back());
    let what = p.fall_back().expect("falls back");
    assert!(what.contains(&compat.to_string()), "{what}");
    assert!(p.has_fallen_back());
    assert_eq!(p.peer_id(), compat);
    assert_eq!(fingerprint(p.certificate()), compat);
    assert!(p.fall_back().is_none(), "only once");
    let server = FlashProfile::server(None).build(&mut rng).unwrap();
    assert!(server.fallback_peer_id().is_none());
    assert!(server.fall_back().is_none());
}
