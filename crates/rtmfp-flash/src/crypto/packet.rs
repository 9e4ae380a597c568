//! Packet encryption and verification (RFC 7425 §4.1, §4.7).

use std::fmt;
use std::ops::Range;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::{Aes128Dec, Aes128Enc};
use hmac::{Hmac, Mac};
use rtmfp::wire::{put_vlu, Reader};
use rtmfp::{CryptoError, PacketCrypto};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The Default Session Key (§4.1): "Adobe Systems 02" in UTF-8.
pub const DEFAULT_SESSION_KEY: [u8; 16] = *b"Adobe Systems 02";

/// AES block size.
const BLOCK: usize = 16;
/// Shortest and longest negotiable HMAC (§4.5.2.4).
pub const MIN_HMAC_LENGTH: usize = 4;
/// Longest negotiable HMAC (§4.5.2.4).
pub const MAX_HMAC_LENGTH: usize = 32;
/// Longest VLU encoding of a session sequence number.
const MAX_SSEQ_LEN: usize = 10;

type CbcEnc = cbc::Encryptor<Aes128Enc>;
type CbcDec = cbc::Decryptor<Aes128Dec>;

/// The simple checksum of §4.7.3.1: the 16-bit ones' complement of the
/// ones' complement sum of the big-endian 16-bit words of `data`.
///
/// Unlike RFC 1071's reference code, an odd final byte is the **lower**
/// 8 bits of a word whose upper 8 bits are 0, exactly as §4.7.3.1 says
/// (and as rtmfp-cpp and Flash compute it). Odd lengths occur whenever a
/// session sequence number with an odd-length VLU precedes the checksum.
pub fn simple_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        sum += u64::from(*b);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Anti-replay window for session sequence numbers (§4.7.3.3): accepts
/// each number once, and tolerates reordering by up to
/// [`ReplayWindow::SIZE`] − 1 numbers (the RFC asks for at least 32).
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// One more than the highest number accepted (0: none yet).
    top: u64,
    /// Bit i set: number `top - 1 - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// Width of the window.
    pub const SIZE: u64 = 128;

    /// A window that has accepted nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `seq` would be accepted (not seen, not too old).
    pub fn check(&self, seq: u64) -> bool {
        if seq >= self.top {
            return seq != u64::MAX; // u64::MAX cannot be recorded
        }
        let back = self.top - 1 - seq;
        back < Self::SIZE && self.seen & (1u128 << back) == 0
    }

    /// Records `seq` as accepted. Call only after [`check`](Self::check)
    /// and after the packet was verified.
    pub fn commit(&mut self, seq: u64) {
        if seq >= self.top {
            let shift = seq + 1 - self.top;
            self.seen = if shift >= Self::SIZE {
                0
            } else {
                self.seen << shift
            };
            self.top = seq + 1;
            self.seen |= 1;
        } else {
            let back = self.top - 1 - seq;
            if back < Self::SIZE {
                self.seen |= 1u128 << back;
            }
        }
    }
}

/// Everything that keys one session direction pair: the output of §4.6
/// plus the negotiated HMAC and sequence-number settings. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeyMaterial {
    /// ENCRYPT_KEY (§4.6.3); the first 16 bytes key AES-128.
    pub encrypt_key: [u8; 32],
    /// DECRYPT_KEY (§4.6.3).
    pub decrypt_key: [u8; 32],
    /// HMAC_SEND_KEY (§4.6.4).
    pub hmac_send_key: [u8; 32],
    /// HMAC_RECV_KEY (§4.6.4).
    pub hmac_recv_key: [u8; 32],
    /// Length of the HMAC we append, or 0 to use the simple checksum.
    pub send_hmac_len: usize,
    /// Length of the HMAC the far end appends, or 0 (checksum).
    pub recv_hmac_len: usize,
    /// Whether we send session sequence numbers.
    pub send_sseq: bool,
    /// Whether the far end sends session sequence numbers.
    pub recv_sseq: bool,
    /// NEAR_NONCE (§4.6.5).
    pub near_nonce: [u8; 32],
    /// FAR_NONCE (§4.6.5).
    pub far_nonce: [u8; 32],
}

impl fmt::Debug for SessionKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeyMaterial")
            .field("send_hmac_len", &self.send_hmac_len)
            .field("recv_hmac_len", &self.recv_hmac_len)
            .field("send_sseq", &self.send_sseq)
            .field("recv_sseq", &self.recv_sseq)
            .finish_non_exhaustive()
    }
}

impl SessionKeyMaterial {
    /// The far end's view of the same session (directions swapped): its
    /// packet crypto decrypts what ours encrypts.
    pub fn reversed(&self) -> Self {
        Self {
            encrypt_key: self.decrypt_key,
            decrypt_key: self.encrypt_key,
            hmac_send_key: self.hmac_recv_key,
            hmac_recv_key: self.hmac_send_key,
            send_hmac_len: self.recv_hmac_len,
            recv_hmac_len: self.send_hmac_len,
            send_sseq: self.recv_sseq,
            recv_sseq: self.send_sseq,
            near_nonce: self.far_nonce,
            far_nonce: self.near_nonce,
        }
    }
}

/// AES-128-CBC packet crypto of this profile, for the Default Session Key
/// ([`FlashPacketCrypto::default_key`]) or a session's negotiated keys.
#[derive(Clone)]
pub struct FlashPacketCrypto {
    // the raw AES keys, expanded for each packet (cheap, and the CBC mode
    // needs a fresh cipher per packet anyway): an expanded schedule is
    // ~750 bytes per direction, too much for a server holding 20,000+
    // sessions
    enc: Zeroizing<[u8; 16]>,
    dec: Zeroizing<[u8; 16]>,
    /// HMAC_SEND_KEY and length, when we append an HMAC.
    tx_hmac: Option<(Zeroizing<[u8; 32]>, usize)>,
    /// HMAC_RECV_KEY and length, when the far end appends one.
    rx_hmac: Option<(Zeroizing<[u8; 32]>, usize)>,
    /// Next session sequence number to send, when we send them.
    tx_sseq: Option<u64>,
    /// Replay window, when the far end sends sequence numbers.
    rx_sseq: Option<ReplayWindow>,
}

impl fmt::Debug for FlashPacketCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashPacketCrypto")
            .field("tx_hmac_len", &self.tx_hmac.as_ref().map(|h| h.1))
            .field("rx_hmac_len", &self.rx_hmac.as_ref().map(|h| h.1))
            .field("tx_sseq", &self.tx_sseq)
            .field("rx_sseq", &self.rx_sseq.is_some())
            .finish_non_exhaustive()
    }
}

fn new_hmac(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

impl FlashPacketCrypto {
    /// Crypto for the Default Session Key (§4.1): checksum verification,
    /// no session sequence numbers.
    pub fn default_key() -> Self {
        Self {
            enc: Zeroizing::new(DEFAULT_SESSION_KEY),
            dec: Zeroizing::new(DEFAULT_SESSION_KEY),
            tx_hmac: None,
            rx_hmac: None,
            tx_sseq: None,
            rx_sseq: None,
        }
    }

    /// Crypto for a session's keys. HMAC lengths outside 4..=32 (other
    /// than 0) are clamped into range.
    pub fn new(m: &SessionKeyMaterial) -> Self {
        let mut ek = [0u8; 16];
        ek.copy_from_slice(&m.encrypt_key[..16]);
        let mut dk = [0u8; 16];
        dk.copy_from_slice(&m.decrypt_key[..16]);
        let enc = Zeroizing::new(ek);
        let dec = Zeroizing::new(dk);
        ek.zeroize();
        dk.zeroize();
        let hmac = |key: &[u8; 32], len: usize| {
            (len > 0).then(|| {
                (
                    Zeroizing::new(*key),
                    len.clamp(MIN_HMAC_LENGTH, MAX_HMAC_LENGTH),
                )
            })
        };
        Self {
            enc,
            dec,
            tx_hmac: hmac(&m.hmac_send_key, m.send_hmac_len),
            rx_hmac: hmac(&m.hmac_recv_key, m.recv_hmac_len),
            tx_sseq: m.send_sseq.then_some(0),
            rx_sseq: m.recv_sseq.then(ReplayWindow::new),
        }
    }

    /// The next session sequence number we will send, if we send them.
    pub fn next_send_sequence(&self) -> Option<u64> {
        self.tx_sseq
    }
}

impl PacketCrypto for FlashPacketCrypto {
    fn encrypt(&mut self, buf: &mut Vec<u8>, start: usize) {
        let start = start.min(buf.len());
        // the plain structure of §4.7.2: [SSEQ] [checksum] packet [0xff padding]
        let mut prefix = [0u8; MAX_SSEQ_LEN + 2];
        let mut plen = 0;
        if let Some(seq) = self.tx_sseq.as_mut() {
            let mut v = Vec::with_capacity(MAX_SSEQ_LEN);
            put_vlu(&mut v, *seq);
            prefix[..v.len()].copy_from_slice(&v);
            plen = v.len();
            // sequence numbers do not wrap (§4.6.6); u64::MAX is never sent
            // twice because the receiver's window refuses it
            *seq = seq.saturating_add(1);
        }
        let checksum_at = plen;
        if self.tx_hmac.is_none() {
            plen += 2;
        }
        buf.splice(start..start, prefix[..plen].iter().copied());
        let total = buf.len() - start;
        let padded = total.div_ceil(BLOCK).max(1) * BLOCK;
        buf.resize(start + padded, 0xff);
        if self.tx_hmac.is_none() {
            let at = start + checksum_at;
            let sum = simple_checksum(&buf[at + 2..]);
            buf[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        let body = &mut buf[start..];
        let enc = CbcEnc::inner_iv_init(Aes128Enc::new(&(*self.enc).into()), &[0u8; BLOCK].into());
        let n = body.len();
        // cannot fail: the body is a whole number of blocks
        let _ = enc.encrypt_padded_mut::<NoPadding>(body, n);
        if let Some((key, len)) = &self.tx_hmac {
            let mut mac = new_hmac(key);
            mac.update(&buf[start..]);
            let tag = mac.finalize().into_bytes();
            buf.extend_from_slice(&tag[..*len]);
        }
    }

    fn decrypt(&mut self, buf: &mut [u8]) -> Result<Range<usize>, CryptoError> {
        let hmac_len = self.rx_hmac.as_ref().map_or(0, |h| h.1);
        let Some(body_len) = buf.len().checked_sub(hmac_len) else {
            return Err(CryptoError::BadPacket);
        };
        if body_len == 0 || body_len % BLOCK != 0 {
            return Err(CryptoError::BadPacket);
        }
        let (body, tag) = buf.split_at_mut(body_len);
        if let Some((key, len)) = &self.rx_hmac {
            let mut mac = new_hmac(key);
            mac.update(body);
            let expect = mac.finalize().into_bytes();
            if !bool::from(expect[..*len].ct_eq(&tag[..*len])) {
                return Err(CryptoError::BadPacket);
            }
        }
        let dec = CbcDec::inner_iv_init(Aes128Dec::new(&(*self.dec).into()), &[0u8; BLOCK].into());
        dec.decrypt_padded_mut::<NoPadding>(body)
            .map_err(|_| CryptoError::BadPacket)?;
        let mut at = 0;
        let mut seq = None;
        if let Some(window) = &self.rx_sseq {
            let mut r = Reader::new(body);
            let s = r.vlu().map_err(|_| CryptoError::BadPacket)?;
            if !window.check(s) {
                return Err(CryptoError::Duplicate);
            }
            at = r.position();
            seq = Some(s);
        }
        if self.rx_hmac.is_none() {
            let Some(field) = body.get(at..at + 2) else {
                return Err(CryptoError::BadPacket);
            };
            let sum = u16::from_be_bytes([field[0], field[1]]);
            at += 2;
            if simple_checksum(&body[at..]) != sum {
                return Err(CryptoError::BadPacket);
            }
        }
        if at >= body_len {
            return Err(CryptoError::BadPacket);
        }
        if let (Some(window), Some(s)) = (self.rx_sseq.as_mut(), seq) {
            window.commit(s);
        }
        Ok(at..body_len)
    }

    fn overhead(&self) -> usize {
        let sseq = if self.tx_sseq.is_some() {
            MAX_SSEQ_LEN
        } else {
            0
        };
        let verify = match &self.tx_hmac {
            Some((_, len)) => *len,
            None => 2,
        };
        sseq + verify + (BLOCK - 1)
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn packet_crypto_footprint() {
        // two full Aes128 schedules were ~1 KB per session
        let n = std::mem::size_of::<super::FlashPacketCrypto>();
        println!("FlashPacketCrypto: {n} bytes");
        assert!(n <= 256, "{n}");
    }
}
