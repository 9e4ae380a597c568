//! [`FlashProfile`]: the RFC 7425 Cryptography Profile as an
//! [`rtmfp::CryptoProfile`], its builder and the handshake state.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use rtmfp::{
    CryptoError, CryptoProfile, IIKeyingInput, InitiatorHandshake, PacketCrypto,
    ResponderHandshake, Role, SessionKeys,
};
use zeroize::Zeroizing;

use super::cert::{fingerprint, Certificate, PeerId};
use super::dh::{is_acceptable_public_key, DhGroup, DhKeyPair};
use super::epd::{canonical_epd, Epd};
use super::keying::{derive_session_keys, KeyingComponent, Negotiated, NegotiationFlags};
use super::packet::{FlashPacketCrypto, SessionKeyMaterial, MAX_HMAC_LENGTH, MIN_HMAC_LENGTH};
use super::signature::{self, SimplePassword};

/// Bytes of Extra Randomness in an SKIC or SKRC that uses a static key
/// (one SHA-256 input block, the §4.5.2.2 maximum).
const KEYING_RANDOMNESS: usize = 64;

/// Policy for one negotiated packet feature: the HMAC (§4.5.2.4) or
/// session sequence numbers (§4.5.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Negotiation {
    /// Send it on every packet (flag SND).
    pub send_always: bool,
    /// Send it if the far end requests it (flag SOR).
    pub send_on_request: bool,
    /// Ask the far end to send it (flag REQ).
    pub request: bool,
    /// Refuse keying with a far end that will not send it (implies
    /// `request`).
    pub require: bool,
}

impl Negotiation {
    /// Always send, and require the far end to send: rtmfp-cpp's default
    /// (its tools' `-H` / `-S` switch this off).
    pub const REQUIRED: Negotiation = Negotiation {
        send_always: true,
        send_on_request: true,
        request: true,
        require: true,
    };
    /// Ask for it and send it when asked, but accept a far end that
    /// cannot (older Flash peers): the default.
    pub const PREFERRED: Negotiation = Negotiation {
        send_always: false,
        send_on_request: true,
        request: true,
        require: false,
    };
    /// Send it only when asked; do not ask.
    pub const ON_REQUEST: Negotiation = Negotiation {
        send_always: false,
        send_on_request: true,
        request: false,
        require: false,
    };
    /// Never send it, never ask.
    pub const OFF: Negotiation = Negotiation {
        send_always: false,
        send_on_request: false,
        request: false,
        require: false,
    };

    /// The flags this policy advertises.
    pub fn flags(self) -> NegotiationFlags {
        NegotiationFlags {
            send_always: self.send_always,
            send_on_request: self.send_on_request,
            request: self.request || self.require,
        }
    }

    /// Initiator side: negotiates our advertised [`flags`](Self::flags)
    /// against the responder's. Returns `(we send, far sends)`, or `None`
    /// if we require it and the far end will not send it.
    pub fn negotiate(self, far: NegotiationFlags) -> Option<(bool, bool)> {
        let near = self.flags();
        let send = near.sends(far.request);
        let recv = far.sends(near.request);
        if self.require && !recv {
            return None;
        }
        Some((send, recv))
    }

    /// Responder side: the flags to answer the initiator's `far` flags
    /// with, and `(we send, far sends)`; `None` if we require it and the
    /// far end will not send it.
    ///
    /// Unless we require it, we do not request the feature from a passive
    /// initiator (one that neither sends it always nor requests it), and
    /// when neither end ends up sending it we answer with all flags clear —
    /// the same outcome as our own flags, encoded the way Flash-era peers
    /// that never send it expect.
    pub fn answer(self, far: NegotiationFlags) -> Option<(NegotiationFlags, bool, bool)> {
        let mut near = self.flags();
        if !self.require && !far.send_always && !far.request {
            near.request = false;
        }
        let send = near.sends(far.request);
        let recv = far.sends(near.request);
        if self.require && !recv {
            return None;
        }
        if !send && !recv {
            near = NegotiationFlags::default();
        }
        Some((near, send, recv))
    }
}

/// How this end agrees keys (§4.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// Fresh DH keys per session; the certificate lists the groups (servers,
    /// for forward secrecy; §7).
    Ephemeral,
    /// Static DH public keys in the certificate (clients, so that their peer
    /// ID cannot be forged; §7).
    Static,
}

/// Everything about one handshake's key agreement, for debugging and test
/// vectors (like an NSS key log). **Contains secrets.**
pub struct KeyLogEntry<'a> {
    /// Our role.
    pub role: Role,
    /// The DH group agreed.
    pub group: DhGroup,
    /// Our private exponent (static or ephemeral).
    pub near_private_key: &'a [u8],
    /// Our public key.
    pub near_public_key: &'a [u8],
    /// The far end's public key.
    pub far_public_key: &'a [u8],
    /// DH_SECRET.
    pub dh_secret: &'a [u8],
    /// The Session Key Initiator Component.
    pub skic: &'a [u8],
    /// The Session Key Responder Component.
    pub skrc: &'a [u8],
    /// The derived keys and negotiated settings.
    pub keys: &'a SessionKeyMaterial,
}

impl fmt::Debug for KeyLogEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLogEntry")
            .field("role", &self.role)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// A key log callback (see [`FlashProfileBuilder::key_log`]).
pub type KeyLogFn = Arc<dyn Fn(&KeyLogEntry<'_>) + Send + Sync>;

/// A filter on an EPD's Ancillary Data (the server URI) for servers.
pub type AncillaryFilter = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// A handle to end the reuse of responder ephemeral keys from outside the
/// engine (see [`FlashProfileBuilder::reuse_ephemeral_keys`]): the profile
/// has no clock, so an application that wants keys reused for at most, say,
/// 10 seconds calls [`rotate`](Self::rotate) from its own timer every 10
/// seconds. Clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct KeyRotation(Arc<AtomicU64>);

impl KeyRotation {
    /// A new handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retires every cached ephemeral key: the next handshake in each group
    /// gets a fresh one.
    pub fn rotate(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn epoch(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An invalid [`FlashProfileBuilder`] configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No Diffie-Hellman group is enabled.
    #[error("no Diffie-Hellman group")]
    NoGroups,
    /// The HMAC length is not between 4 and 32.
    #[error("HMAC length must be between 4 and 32")]
    BadHmacLength,
    /// A static key is given for a group that is not enabled.
    #[error("static key for {0}, which is not enabled")]
    StaticKeyGroup(DhGroup),
}

/// Settings shared by the profile and its handshakes.
#[derive(Clone)]
struct Policy {
    hmac: Negotiation,
    hmac_len: usize,
    sseq: Negotiation,
    sign_with: Arc<[SimplePassword]>,
    accept: Arc<[SimplePassword]>,
    require_signature: bool,
    key_log: Option<KeyLogFn>,
}

impl Policy {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        signature::sign(msg, &self.sign_with)
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        signature::verify(msg, sig, &self.accept, self.require_signature)
    }

    fn hmac_option(&self, flags: NegotiationFlags) -> (NegotiationFlags, u64) {
        let len = if flags.send_always || flags.send_on_request {
            self.hmac_len as u64
        } else {
            0
        };
        (flags, len)
    }

    /// Initiator: our negotiation options in the SKIC.
    fn advertise(&self, k: &mut KeyingComponent) {
        k.hmac = Some(self.hmac_option(self.hmac.flags()));
        k.sseq = Some(self.sseq.flags());
    }

    /// Initiator: negotiates against the SKRC (§4.6.4, §4.6.6).
    fn negotiate(&self, far: &KeyingComponent) -> Result<Negotiated, CryptoError> {
        let (far_hmac, far_len) = far.hmac.unwrap_or_default();
        let (send_hmac, recv_hmac) = self.hmac.negotiate(far_hmac).ok_or_else(no_hmac)?;
        let (send_sseq, recv_sseq) = self
            .sseq
            .negotiate(far.sseq.unwrap_or_default())
            .ok_or_else(no_sseq)?;
        self.negotiated(send_hmac, recv_hmac, far_len, send_sseq, recv_sseq)
    }

    /// Responder: negotiates against the SKIC and puts our answer in the
    /// SKRC `k`.
    fn answer(
        &self,
        far: &KeyingComponent,
        k: &mut KeyingComponent,
    ) -> Result<Negotiated, CryptoError> {
        let (far_hmac, far_len) = far.hmac.unwrap_or_default();
        let (hf, send_hmac, recv_hmac) = self.hmac.answer(far_hmac).ok_or_else(no_hmac)?;
        let (sf, send_sseq, recv_sseq) = self
            .sseq
            .answer(far.sseq.unwrap_or_default())
            .ok_or_else(no_sseq)?;
        k.hmac = Some(self.hmac_option(hf));
        k.sseq = Some(sf);
        self.negotiated(send_hmac, recv_hmac, far_len, send_sseq, recv_sseq)
    }

    fn negotiated(
        &self,
        send_hmac: bool,
        recv_hmac: bool,
        far_len: u64,
        send_sseq: bool,
        recv_sseq: bool,
    ) -> Result<Negotiated, CryptoError> {
        let recv_hmac_len = if recv_hmac {
            let ok = (MIN_HMAC_LENGTH as u64..=MAX_HMAC_LENGTH as u64).contains(&far_len);
            if !ok {
                return Err(CryptoError::BadKeying("bad hmacLength".into()));
            }
            far_len as usize
        } else {
            0
        };
        Ok(Negotiated {
            send_hmac_len: if send_hmac { self.hmac_len } else { 0 },
            recv_hmac_len,
            send_sseq,
            recv_sseq,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
        &self,
        role: Role,
        near: &DhKeyPair,
        far_public: &[u8],
        dh_secret: &[u8],
        skic: &[u8],
        skrc: &[u8],
        keys: &SessionKeyMaterial,
    ) {
        if let Some(f) = &self.key_log {
            let private = near.private_key();
            f(&KeyLogEntry {
                role,
                group: near.group(),
                near_private_key: &private,
                near_public_key: near.public_key(),
                far_public_key: far_public,
                dh_secret,
                skic,
                skrc,
                keys,
            });
        }
    }
}

fn no_hmac() -> CryptoError {
    CryptoError::BadKeying("far end will not send an HMAC".into())
}

fn no_sseq() -> CryptoError {
    CryptoError::BadKeying("far end will not send session sequence numbers".into())
}

fn session_keys(keys: &SessionKeyMaterial) -> SessionKeys {
    SessionKeys {
        crypto: Box::new(FlashPacketCrypto::new(keys)),
        near_nonce: keys.near_nonce.to_vec(),
        far_nonce: keys.far_nonce.to_vec(),
    }
}

fn random_bytes(rng: &mut dyn RngCore, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Builder of a [`FlashProfile`]; start from [`FlashProfile::client`] or
/// [`FlashProfile::server`].
#[derive(Clone)]
pub struct FlashProfileBuilder {
    hostname: Option<Vec<u8>>,
    accepts_ancillary_data: bool,
    groups: Vec<DhGroup>,
    key_mode: KeyMode,
    static_keys: Vec<DhKeyPair>,
    hmac: Negotiation,
    hmac_len: usize,
    sseq: Negotiation,
    sign_with: Vec<SimplePassword>,
    accept: Vec<SimplePassword>,
    require_signature: bool,
    reuse: u32,
    rotation: KeyRotation,
    cert_randomness: usize,
    ancillary_filter: Option<AncillaryFilter>,
    key_log: Option<KeyLogFn>,
}

impl fmt::Debug for FlashProfileBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashProfileBuilder")
            .field("hostname", &self.hostname)
            .field("accepts_ancillary_data", &self.accepts_ancillary_data)
            .field("groups", &self.groups)
            .field("key_mode", &self.key_mode)
            .field("hmac", &self.hmac)
            .field("hmac_len", &self.hmac_len)
            .field("sseq", &self.sseq)
            .field("require_signature", &self.require_signature)
            .field("reuse", &self.reuse)
            .finish_non_exhaustive()
    }
}

impl FlashProfileBuilder {
    /// Sets (or clears) the certificate's Hostname option.
    pub fn hostname(mut self, hostname: Option<&str>) -> Self {
        self.hostname = hostname.map(|h| h.as_bytes().to_vec());
        self
    }

    /// Whether the certificate says it accepts Ancillary Data, i.e. answers
    /// "any server" EPDs (true for servers).
    pub fn accepts_ancillary_data(mut self, yes: bool) -> Self {
        self.accepts_ancillary_data = yes;
        self
    }

    /// The enabled DH groups; the strongest one both ends support is used.
    pub fn groups(mut self, groups: &[DhGroup]) -> Self {
        self.groups = groups.to_vec();
        self
    }

    /// Sets the key mode ([`ephemeral_keys`](Self::ephemeral_keys) or
    /// [`static_keys`](Self::static_keys)).
    pub fn key_mode(mut self, mode: KeyMode) -> Self {
        self.key_mode = mode;
        self
    }

    /// Use ephemeral DH keys (the certificate lists groups).
    pub fn ephemeral_keys(mut self) -> Self {
        self.key_mode = KeyMode::Ephemeral;
        self
    }

    /// Use static DH keys, generated at build time for every enabled group
    /// unless given with [`static_key`](Self::static_key).
    pub fn static_keys(mut self) -> Self {
        self.key_mode = KeyMode::Static;
        self
    }

    /// Adds a static key (and selects static keying): restoring saved keys
    /// restores the peer ID.
    pub fn static_key(mut self, key: DhKeyPair) -> Self {
        self.key_mode = KeyMode::Static;
        self.static_keys.retain(|k| k.group() != key.group());
        self.static_keys.push(key);
        self
    }

    /// HMAC policy (§4.5.2.4).
    pub fn hmac(mut self, policy: Negotiation) -> Self {
        self.hmac = policy;
        self
    }

    /// Length of the HMAC we send (4 to 32; default 16).
    pub fn hmac_length(mut self, len: usize) -> Self {
        self.hmac_len = len;
        self
    }

    /// Session sequence number policy (§4.5.2.5).
    pub fn sseq(mut self, policy: Negotiation) -> Self {
        self.sseq = policy;
        self
    }

    /// Require HMAC both ways (true: [`Negotiation::REQUIRED`]; false:
    /// [`Negotiation::PREFERRED`]).
    pub fn require_hmac(self, yes: bool) -> Self {
        self.hmac(if yes {
            Negotiation::REQUIRED
        } else {
            Negotiation::PREFERRED
        })
    }

    /// Require session sequence numbers both ways (true:
    /// [`Negotiation::REQUIRED`]; false: [`Negotiation::PREFERRED`]).
    pub fn require_sseq(self, yes: bool) -> Self {
        self.sseq(if yes {
            Negotiation::REQUIRED
        } else {
            Negotiation::PREFERRED
        })
    }

    /// Signs our Initial Keying messages with a Simple Password (§4.3.5.1.1).
    pub fn sign_with_password(mut self, credential: SimplePassword) -> Self {
        self.sign_with.push(credential);
        self
    }

    /// Accepts a Simple Password identifier and password in far signatures.
    pub fn accept_password(mut self, credential: SimplePassword) -> Self {
        self.accept.push(credential);
        self
    }

    /// Require far Initial Keying messages to be signed with an accepted
    /// password.
    pub fn require_signature(mut self, yes: bool) -> Self {
        self.require_signature = yes;
        self
    }

    /// Responders with ephemeral keys: use one DH key pair for up to `n`
    /// handshakes per group (0 or 1: a fresh key every time). Saves one
    /// modular exponentiation per handshake; sessions still get distinct
    /// keys because the initiator's key or randomness differs. The window
    /// is counted in handshakes, not time (the profile has no clock); bound
    /// it in time too with [`key_rotation`](Self::key_rotation).
    pub fn reuse_ephemeral_keys(mut self, n: u32) -> Self {
        self.reuse = n;
        self
    }

    /// Ends ephemeral key reuse whenever `handle` is rotated.
    pub fn key_rotation(mut self, handle: &KeyRotation) -> Self {
        self.rotation = handle.clone();
        self
    }

    /// Bytes of Extra Randomness in an ephemeral-key certificate (so every
    /// instance has its own peer ID); default 32. More makes the RHello
    /// bigger: past 57 bytes (without a hostname) a server behind a 3x
    /// anti-amplification limit can no longer answer the smallest IHello
    /// at once.
    pub fn certificate_randomness(mut self, n: usize) -> Self {
        self.cert_randomness = n;
        self
    }

    /// Servers: only EPDs whose Ancillary Data passes `filter` select us.
    pub fn ancillary_filter(mut self, filter: AncillaryFilter) -> Self {
        self.ancillary_filter = Some(filter);
        self
    }

    /// Calls `f` with the key agreement details of every handshake.
    /// **Debugging only: it exposes session secrets.**
    pub fn key_log(mut self, f: KeyLogFn) -> Self {
        self.key_log = Some(f);
        self
    }

    /// Builds the profile (generating static keys and certificate
    /// randomness from `rng`).
    pub fn build(self, rng: &mut (impl RngCore + CryptoRng)) -> Result<FlashProfile, ConfigError> {
        self.build_dyn(rng)
    }

    fn build_dyn(self, rng: &mut dyn RngCore) -> Result<FlashProfile, ConfigError> {
        let mut groups: Vec<DhGroup> = DhGroup::ALL
            .into_iter()
            .filter(|g| self.groups.contains(g))
            .collect();
        if groups.is_empty() {
            return Err(ConfigError::NoGroups);
        }
        if !(MIN_HMAC_LENGTH..=MAX_HMAC_LENGTH).contains(&self.hmac_len) {
            return Err(ConfigError::BadHmacLength);
        }
        let mut cert = Certificate {
            hostname: self.hostname,
            accepts_ancillary_data: self.accepts_ancillary_data,
            ..Certificate::default()
        };
        let mut static_keys = Vec::new();
        match self.key_mode {
            KeyMode::Static => {
                for k in &self.static_keys {
                    if !groups.contains(&k.group()) {
                        return Err(ConfigError::StaticKeyGroup(k.group()));
                    }
                }
                for &g in &groups {
                    let key = match self.static_keys.iter().find(|k| k.group() == g) {
                        Some(k) => k.clone(),
                        None => DhKeyPair::generate(g, rng),
                    };
                    cert.static_keys.push((g.id(), key.public_key().to_vec()));
                    static_keys.push(Arc::new(key));
                }
            }
            KeyMode::Ephemeral => {
                cert.ephemeral_groups = groups.iter().map(|g| g.id()).collect();
                if self.cert_randomness > 0 {
                    cert.extra_randomness = Some(random_bytes(rng, self.cert_randomness));
                }
            }
        }
        groups.dedup();
        let compat = compat_identity(&cert);
        Ok(FlashProfile {
            primary: Identity::new(cert),
            compat,
            fallen_back: AtomicBool::new(false),
            groups,
            static_keys,
            policy: Policy {
                hmac: self.hmac,
                hmac_len: self.hmac_len,
                sseq: self.sseq,
                sign_with: self.sign_with.into(),
                accept: self.accept.into(),
                require_signature: self.require_signature,
                key_log: self.key_log,
            },
            reuse: self.reuse,
            rotation: self.rotation,
            cache: std::sync::Mutex::new(Vec::new()),
            ancillary_filter: self.ancillary_filter,
        })
    }
}

/// A certificate, decoded, and its fingerprint.
#[derive(Debug)]
struct Identity {
    cert: Vec<u8>,
    info: Certificate,
    peer_id: PeerId,
}

impl Identity {
    fn new(info: Certificate) -> Self {
        let cert = info.encode();
        Identity {
            peer_id: fingerprint(&cert),
            cert,
            info,
        }
    }
}

/// The identity a static-key profile falls back to when a responder goes
/// silent after IIKeying: a certificate that is exactly one option, the
/// group 2 static key (`81 02 1D 02` + key), the only layout MonaServer2
/// reads right (it takes the initiator's key from the certificate's first
/// option, computes only group 2, and reads the SKIC from where the second
/// option would begin). `None` when the certificate has no group 2 key
/// (group 2 not allowed) or already is that.
fn compat_identity(cert: &Certificate) -> Option<Identity> {
    let key = cert.static_key(DhGroup::Modp1024.id())?;
    let compat = Certificate {
        static_keys: vec![(DhGroup::Modp1024.id(), key.to_vec())],
        ..Certificate::default()
    };
    (compat != *cert).then(|| Identity::new(compat))
}

#[derive(Debug)]
struct CachedKey {
    key: Arc<DhKeyPair>,
    uses_left: u32,
    epoch: u64,
}

/// The RFC 7425 Cryptography Profile.
///
/// ```
/// use rand_core::SeedableRng;
/// use rtmfp_flash::{DhGroup, FlashProfile};
///
/// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
/// let server = FlashProfile::server(Some("example.com")).build(&mut rng).unwrap();
/// let client = FlashProfile::client()
///     .groups(&[DhGroup::Modp1024])
///     .require_hmac(true)
///     .build(&mut rng)
///     .unwrap();
/// assert_eq!(client.peer_id().to_hex().len(), 64);
/// assert_ne!(client.peer_id(), server.peer_id());
/// ```
pub struct FlashProfile {
    primary: Identity,
    /// See [`compat_identity`].
    compat: Option<Identity>,
    /// Whether [`CryptoProfile::fall_back`] switched to `compat`.
    fallen_back: AtomicBool,
    groups: Vec<DhGroup>,
    static_keys: Vec<Arc<DhKeyPair>>,
    policy: Policy,
    reuse: u32,
    rotation: KeyRotation,
    /// Ephemeral keys being reused; shared by keyings on several threads.
    cache: std::sync::Mutex<Vec<CachedKey>>,
    ancillary_filter: Option<AncillaryFilter>,
}

impl fmt::Debug for FlashProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashProfile")
            .field("peer_id", &self.peer_id())
            .field("groups", &self.groups)
            .field("static", &!self.static_keys.is_empty())
            .field("hmac", &self.policy.hmac)
            .field("sseq", &self.policy.sseq)
            .finish_non_exhaustive()
    }
}

impl FlashProfile {
    fn builder(server: bool) -> FlashProfileBuilder {
        FlashProfileBuilder {
            hostname: None,
            accepts_ancillary_data: server,
            // groups 16, 14, 2 as rtmfp-cpp; group 5 on request (with static
            // keys it would make the certificate, hence IIKeying, bigger)
            groups: vec![DhGroup::Modp4096, DhGroup::Modp2048, DhGroup::Modp1024],
            key_mode: if server {
                KeyMode::Ephemeral
            } else {
                KeyMode::Static
            },
            static_keys: Vec::new(),
            hmac: Negotiation::PREFERRED,
            hmac_len: 16,
            sseq: Negotiation::PREFERRED,
            sign_with: Vec::new(),
            accept: Vec::new(),
            require_signature: false,
            reuse: if server { 32 } else { 0 },
            rotation: KeyRotation::new(),
            // 32 bytes (a unique peer ID needs no more): with no hostname a
            // server certificate is then 45 bytes and an RHello 148, small
            // enough to answer the smallest IHello (36 bytes, 64 on the
            // wire) at once under a 3x anti-amplification limit counted in
            // wire bytes. (rtmfp-cpp and MonaServer send 64 bytes, 77 in
            // all; librtmfp reads up to 77 bytes of it only to log them.)
            cert_randomness: 32,
            ancillary_filter: None,
            key_log: None,
        }
    }

    /// A client (or peer): static DH keys for groups 16, 14 and 2 (RFC 7425
    /// §7: clients SHOULD use static keys; build a new profile per
    /// connection for a new identity), HMAC and sequence numbers preferred.
    pub fn client() -> FlashProfileBuilder {
        Self::builder(false)
    }

    /// A server: ephemeral DH keys in groups 16, 14 and 2 (each key reused
    /// for up to 32 handshakes), Accepts Ancillary Data, an optional
    /// Hostname, 32 bytes of certificate randomness, HMAC and sequence
    /// numbers preferred.
    pub fn server(hostname: Option<&str>) -> FlashProfileBuilder {
        Self::builder(true).hostname(hostname)
    }

    /// The identity in use: the compatible one once the profile fell back.
    fn identity(&self) -> &Identity {
        match &self.compat {
            Some(c) if self.fallen_back.load(Ordering::Acquire) => c,
            _ => &self.primary,
        }
    }

    /// Our peer ID (certificate fingerprint). It changes if the profile
    /// falls back (see [`has_fallen_back`](Self::has_fallen_back)).
    pub fn peer_id(&self) -> PeerId {
        self.identity().peer_id
    }

    /// Our decoded certificate.
    pub fn certificate_info(&self) -> &Certificate {
        &self.identity().info
    }

    /// The peer ID we fall back to when a responder goes silent after our
    /// IIKeying ([`CryptoProfile::fall_back`]): that of a certificate with
    /// only our group 2 static key, which MonaServer2 understands. `None`
    /// with ephemeral keys, without group 2, or when our certificate is
    /// that already.
    pub fn fallback_peer_id(&self) -> Option<PeerId> {
        self.compat.as_ref().map(|c| c.peer_id)
    }

    /// Whether the profile fell back to [`fallback_peer_id`](Self::fallback_peer_id).
    pub fn has_fallen_back(&self) -> bool {
        self.compat.is_some() && self.fallen_back.load(Ordering::Acquire)
    }

    /// The enabled groups, strongest first.
    pub fn groups(&self) -> &[DhGroup] {
        &self.groups
    }

    /// Our static keys (empty with ephemeral keying): save their private
    /// keys to keep the peer ID.
    pub fn static_key_pairs(&self) -> impl Iterator<Item = &DhKeyPair> {
        self.static_keys.iter().map(|k| &**k)
    }

    /// Our Canonical EPD (§4.4.4).
    pub fn near_canonical_epd(&self) -> [u8; 34] {
        canonical_epd(&self.peer_id())
    }

    fn static_key(&self, g: DhGroup) -> Option<&Arc<DhKeyPair>> {
        self.static_keys.iter().find(|k| k.group() == g)
    }

    /// The strongest enabled group the far certificate supports and for
    /// which we have a key (in our certificate in use).
    fn choose_group(&self, far: &Certificate) -> Option<DhGroup> {
        let near = &self.identity().info;
        self.groups.iter().copied().find(|&g| {
            far.supports_group(g.id())
                && (self.static_keys.is_empty() || near.static_key(g.id()).is_some())
        })
    }

    fn ephemeral_key(&self, g: DhGroup, rng: &mut dyn RngCore) -> Arc<DhKeyPair> {
        if self.reuse <= 1 {
            return Arc::new(DhKeyPair::generate(g, rng));
        }
        let epoch = self.rotation.epoch();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache
                .iter_mut()
                .find(|c| c.key.group() == g && c.uses_left > 0 && c.epoch == epoch)
            {
                c.uses_left -= 1;
                return c.key.clone();
            }
        }
        // generated outside the lock: other keyings go on meanwhile
        let key = Arc::new(DhKeyPair::generate(g, rng));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|c| c.key.group() != g);
        cache.push(CachedKey {
            key: key.clone(),
            uses_left: self.reuse - 1,
            epoch,
        });
        key
    }
}

impl CryptoProfile for FlashProfile {
    fn default_session_crypto(&self) -> Box<dyn PacketCrypto> {
        Box::new(FlashPacketCrypto::default_key())
    }

    fn certificate(&self) -> &[u8] {
        &self.identity().cert
    }

    fn epd_selects_near(&self, epd: &[u8]) -> bool {
        let Ok(e) = Epd::parse(epd) else {
            return false;
        };
        let me = self.identity();
        if !e.selects_certificate(&me.info, &me.peer_id) {
            return false;
        }
        match (&e.fingerprint, &e.ancillary_data, &self.ancillary_filter) {
            (None, Some(a), Some(filter)) => filter(a),
            _ => true,
        }
    }

    fn epd_selects(&self, epd: &[u8], certificate: &[u8]) -> bool {
        Epd::parse(epd).is_ok_and(|e| e.selects(certificate))
    }

    fn is_authentic(&self, certificate: &[u8]) -> bool {
        // §4.3.4: any properly encoded certificate; one that offers no key
        // agreement (or both modes) could never key a session
        Certificate::parse(certificate).is_ok_and(|c| c.has_keying())
    }

    fn canonical_epd(&self, certificate: &[u8]) -> Vec<u8> {
        canonical_epd(&fingerprint(certificate)).to_vec()
    }

    fn far_prevails(&self, far_certificate: &[u8]) -> bool {
        // §4.3.6: the near end prevails if its certificate orders before or
        // equals the far one (byte-wise, shorter first on a common prefix)
        far_certificate < self.identity().cert.as_slice()
    }

    fn overrides(&self, existing: &[u8], new: &[u8]) -> bool {
        existing == new // §4.3.7
    }

    fn begin_initiator(
        &self,
        responder_certificate: &[u8],
        rng: &mut dyn RngCore,
    ) -> Result<Box<dyn InitiatorHandshake>, CryptoError> {
        let far = Certificate::parse(responder_certificate)
            .map_err(|e| CryptoError::BadCertificate(e.to_string()))?;
        let group = self
            .choose_group(&far)
            .ok_or_else(|| CryptoError::BadKeying("no common Diffie-Hellman group".into()))?;
        let far_static = match far.is_static() {
            true => Some(far.static_key(group.id()).unwrap_or_default().to_vec()),
            false => None,
        };
        if let Some(k) = &far_static {
            if !is_acceptable_public_key(group, k) {
                return Err(CryptoError::BadCertificate("bad static public key".into()));
            }
        }
        let mut skic = KeyingComponent::default();
        let near = match self.static_key(group) {
            // §4.6.1.3 / §4.6.1.4
            Some(k) => {
                skic.group_select = Some(group.id());
                skic.extra_randomness = Some(random_bytes(rng, KEYING_RANDOMNESS));
                k.clone()
            }
            // §4.6.1.1 / §4.6.1.2
            None => {
                let k = DhKeyPair::generate(group, rng);
                skic.ephemeral_public_key = Some((group.id(), k.public_key().to_vec()));
                Arc::new(k)
            }
        };
        self.policy.advertise(&mut skic);
        Ok(Box::new(FlashInitiator {
            policy: self.policy.clone(),
            near,
            far_static,
            skic: skic.encode(),
        }))
    }

    fn fall_back(&self) -> Option<String> {
        let compat = self.compat.as_ref()?;
        if self.fallen_back.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(format!(
            "a certificate with only our DH group 2 static key, the layout MonaServer2 reads \
             (peer ID {} instead of {})",
            compat.peer_id, self.primary.peer_id
        ))
    }

    fn respond(
        &self,
        iikeying: IIKeyingInput<'_>,
        rng: &mut dyn RngCore,
    ) -> Result<Box<dyn ResponderHandshake>, CryptoError> {
        let far = Certificate::parse(iikeying.certificate)
            .map_err(|e| CryptoError::BadCertificate(e.to_string()))?;
        if !self.policy.verify(iikeying.signed, iikeying.signature) {
            return Err(CryptoError::BadSignature);
        }
        let skic = KeyingComponent::parse(iikeying.skic)
            .map_err(|e| CryptoError::BadKeying(e.to_string()))?;
        // cheap checks first, before any modular exponentiation
        let mut skrc = KeyingComponent::default();
        let negotiated = self.policy.answer(&skic, &mut skrc)?;
        let (group_id, far_public) = if far.is_static() {
            let g = skic
                .group_select
                .ok_or_else(|| CryptoError::BadKeying("no group select".into()))?;
            let k = far
                .static_key(g)
                .ok_or_else(|| CryptoError::BadKeying("no static key in that group".into()))?;
            (g, k.to_vec())
        } else {
            skic.ephemeral_public_key
                .clone()
                .ok_or_else(|| CryptoError::BadKeying("no ephemeral public key".into()))?
        };
        let group = DhGroup::from_id(group_id)
            .filter(|g| self.groups.contains(g))
            .ok_or_else(|| CryptoError::BadKeying(format!("unsupported group {group_id}")))?;
        if !is_acceptable_public_key(group, &far_public) {
            return Err(CryptoError::BadKeying("unacceptable public key".into()));
        }
        let near = if self.static_keys.is_empty() {
            let k = self.ephemeral_key(group, rng);
            skrc.ephemeral_public_key = Some((group.id(), k.public_key().to_vec()));
            k
        } else {
            let k = self
                .static_key(group)
                .ok_or_else(|| CryptoError::BadKeying("no static key in that group".into()))?
                .clone();
            skrc.extra_randomness = Some(random_bytes(rng, KEYING_RANDOMNESS));
            k
        };
        let skrc = skrc.encode_negotiation_first();
        let secret = near
            .shared_secret(&far_public)
            .map_err(|e| CryptoError::BadKeying(e.to_string()))?;
        let keys = derive_session_keys(&secret, &skrc, iikeying.skic, negotiated);
        self.policy.log(
            Role::Responder,
            &near,
            &far_public,
            &secret,
            iikeying.skic,
            &skrc,
            &keys,
        );
        Ok(Box::new(FlashResponder {
            policy: self.policy.clone(),
            skrc,
            keys,
        }))
    }
}

/// Initiator state between IIKeying and RIKeying.
struct FlashInitiator {
    policy: Policy,
    near: Arc<DhKeyPair>,
    /// The responder's static key in the chosen group, if it has one.
    far_static: Option<Vec<u8>>,
    skic: Vec<u8>,
}

impl fmt::Debug for FlashInitiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashInitiator")
            .field("group", &self.near.group())
            .finish_non_exhaustive()
    }
}

impl InitiatorHandshake for FlashInitiator {
    fn skic(&self) -> &[u8] {
        &self.skic
    }

    fn sign(&self, signed_parameters: &[u8]) -> Vec<u8> {
        self.policy.sign(signed_parameters)
    }

    fn complete(
        self: Box<Self>,
        skrc: &[u8],
        responder_signed: &[u8],
        signature: &[u8],
    ) -> Result<SessionKeys, CryptoError> {
        if !self.policy.verify(responder_signed, signature) {
            return Err(CryptoError::BadSignature);
        }
        let k = KeyingComponent::parse(skrc).map_err(|e| CryptoError::BadKeying(e.to_string()))?;
        let negotiated = self.policy.negotiate(&k)?;
        let group = self.near.group();
        let far_public = match (&self.far_static, &k.ephemeral_public_key) {
            (Some(s), _) => s.clone(),
            (None, Some((g, key))) if *g == group.id() => key.clone(),
            _ => {
                return Err(CryptoError::BadKeying(
                    "no responder public key in the selected group".into(),
                ))
            }
        };
        let secret: Zeroizing<Vec<u8>> = self
            .near
            .shared_secret(&far_public)
            .map_err(|e| CryptoError::BadKeying(e.to_string()))?;
        let keys = derive_session_keys(&secret, &self.skic, skrc, negotiated);
        self.policy.log(
            Role::Initiator,
            &self.near,
            &far_public,
            &secret,
            &self.skic,
            skrc,
            &keys,
        );
        Ok(session_keys(&keys))
    }
}

/// Responder state while the engine builds RIKeying.
struct FlashResponder {
    policy: Policy,
    skrc: Vec<u8>,
    keys: SessionKeyMaterial,
}

impl fmt::Debug for FlashResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashResponder").finish_non_exhaustive()
    }
}

impl ResponderHandshake for FlashResponder {
    fn skrc(&self) -> &[u8] {
        &self.skrc
    }

    fn sign(&self, responder_signed: &[u8]) -> Vec<u8> {
        self.policy.sign(responder_signed)
    }

    fn into_keys(self: Box<Self>) -> SessionKeys {
        session_keys(&self.keys)
    }
}
