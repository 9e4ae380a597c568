//! Diffie-Hellman MODP groups (RFC 7425 §4.2) and public key acceptance
//! (§4.6.2).
//!
//! Modular exponentiation is done by `crypto-bigint` in Montgomery form with
//! a constant-time ladder over a *bounded* exponent length: private
//! exponents are short (RFC 3526 §8 sizes, as IKE and rtmfp-cpp use), which
//! makes key generation and agreement several times faster than full-size
//! exponents without weakening the group below its rated strength.

use std::fmt;
use std::sync::OnceLock;

use crypto_bigint::modular::{MontyForm, MontyParams};
use crypto_bigint::{Odd, Uint, U1024, U1536, U2048, U4096, U512};
use rand_core::RngCore;
use zeroize::{Zeroize, Zeroizing};

/// The private exponent type: wide enough for every group's exponent.
type Exponent = U512;

/// Most bits of a private exponent (imported keys included).
pub const MAX_EXPONENT_BITS: u32 = 512;

/// A Diffie-Hellman MODP group of this profile (generator 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 2: 1024-bit MODP (RFC 7296 §B.2). Mandatory in RFC 7425.
    Modp1024,
    /// Group 5: 1536-bit MODP (RFC 3526 §2).
    Modp1536,
    /// Group 14: 2048-bit MODP (RFC 3526 §3).
    Modp2048,
    /// Group 16: 4096-bit MODP (RFC 3526 §5).
    Modp4096,
}

impl DhGroup {
    /// Every supported group, strongest first.
    pub const ALL: [DhGroup; 4] = [
        DhGroup::Modp4096,
        DhGroup::Modp2048,
        DhGroup::Modp1536,
        DhGroup::Modp1024,
    ];

    /// The IKE group ID used on the wire.
    pub const fn id(self) -> u64 {
        match self {
            DhGroup::Modp1024 => 2,
            DhGroup::Modp1536 => 5,
            DhGroup::Modp2048 => 14,
            DhGroup::Modp4096 => 16,
        }
    }

    /// The group with a wire ID, if supported.
    pub const fn from_id(id: u64) -> Option<Self> {
        match id {
            2 => Some(DhGroup::Modp1024),
            5 => Some(DhGroup::Modp1536),
            14 => Some(DhGroup::Modp2048),
            16 => Some(DhGroup::Modp4096),
            _ => None,
        }
    }

    /// Size of the prime in bits.
    pub const fn modulus_bits(self) -> u32 {
        match self {
            DhGroup::Modp1024 => 1024,
            DhGroup::Modp1536 => 1536,
            DhGroup::Modp2048 => 2048,
            DhGroup::Modp4096 => 4096,
        }
    }

    /// Size of the prime in bytes (the longest public key).
    pub const fn modulus_len(self) -> usize {
        self.modulus_bits() as usize / 8
    }

    /// Length of freshly generated private exponents: twice the group's
    /// rated strength, the upper end of the RFC 3526 §8 ranges (224 bits
    /// for the 1024-bit group, as rtmfp-cpp uses).
    pub const fn exponent_bits(self) -> u32 {
        match self {
            DhGroup::Modp1024 => 224,
            DhGroup::Modp1536 => 240,
            DhGroup::Modp2048 => 320,
            DhGroup::Modp4096 => 480,
        }
    }

    /// The prime modulus, big-endian.
    pub fn prime(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.modulus_len());
        match self {
            DhGroup::Modp1024 => push_words(&mut out, params_1024().modulus().as_ref().as_words()),
            DhGroup::Modp1536 => push_words(&mut out, params_1536().modulus().as_ref().as_words()),
            DhGroup::Modp2048 => push_words(&mut out, params_2048().modulus().as_ref().as_words()),
            DhGroup::Modp4096 => push_words(&mut out, params_4096().modulus().as_ref().as_words()),
        }
        out
    }

    /// Computes `base ^ exponent mod p` (the caller has validated `base`).
    fn pow(self, base: &[u8], exponent: &Exponent, bits: u32) -> Zeroizing<Vec<u8>> {
        match self {
            DhGroup::Modp1024 => modexp(params_1024(), base, exponent, bits),
            DhGroup::Modp1536 => modexp(params_1536(), base, exponent, bits),
            DhGroup::Modp2048 => modexp(params_2048(), base, exponent, bits),
            DhGroup::Modp4096 => modexp(params_4096(), base, exponent, bits),
        }
    }
}

impl fmt::Display for DhGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {} ({}-bit MODP)", self.id(), self.modulus_bits())
    }
}

/// The 1024-bit MODP prime, RFC 7296 §B.2 (group 2).
const MODP_1024_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
);

/// The 1536-bit MODP prime, RFC 3526 §2 (group 5).
const MODP_1536_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF",
);

/// The 2048-bit MODP prime, RFC 3526 §3 (group 14).
const MODP_2048_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
);

/// The 4096-bit MODP prime, RFC 3526 §5 (group 16).
const MODP_4096_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7",
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8",
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2",
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9",
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
);

macro_rules! group_params {
    ($name:ident, $ty:ty, $hex:ident) => {
        fn $name() -> &'static MontyParams<{ <$ty>::LIMBS }> {
            static P: OnceLock<MontyParams<{ <$ty>::LIMBS }>> = OnceLock::new();
            P.get_or_init(|| {
                let p: Option<Odd<$ty>> = Odd::new(<$ty>::from_be_hex($hex)).into();
                MontyParams::new_vartime(p.expect("MODP primes are odd"))
            })
        }
    };
}

group_params!(params_1024, U1024, MODP_1024_HEX);
group_params!(params_1536, U1536, MODP_1536_HEX);
group_params!(params_2048, U2048, MODP_2048_HEX);
group_params!(params_4096, U4096, MODP_4096_HEX);

fn push_words(out: &mut Vec<u8>, words: &[crypto_bigint::Word]) {
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&x| x == 0).count();
    &b[n..]
}

/// `base` (big-endian, at most the modulus length) to a `Uint`.
fn uint_from_be<const L: usize>(base: &[u8]) -> Zeroizing<Uint<L>> {
    let mut padded = Zeroizing::new(vec![0u8; Uint::<L>::BYTES]);
    let n = base.len().min(padded.len());
    let at = padded.len() - n;
    padded[at..].copy_from_slice(&base[base.len() - n..]);
    Zeroizing::new(Uint::<L>::from_be_slice(&padded))
}

fn modexp<const L: usize>(
    params: &MontyParams<L>,
    base: &[u8],
    exponent: &Exponent,
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let b = uint_from_be::<L>(base);
    let mut m = MontyForm::new(&b, *params).pow_bounded_exp(exponent, bits);
    let r = Zeroizing::new(m.retrieve());
    m.zeroize();
    let mut out = Zeroizing::new(Vec::with_capacity(Uint::<L>::BYTES));
    push_words(&mut out, r.as_words());
    // DH_SECRET and public keys are encoded without leading zero bytes
    let lead = out.iter().take_while(|&&x| x == 0).count();
    out.drain(..lead);
    out
}

/// Whether a far public key is acceptable (RFC 7425 §4.6.2): at least
/// 2^24, at most p − 2^24, at least 16 one bits and at least 16 zero bits
/// below the most significant one.
pub fn is_acceptable_public_key(group: DhGroup, key: &[u8]) -> bool {
    let k = strip_leading_zeros(key);
    let len = group.modulus_len();
    if k.is_empty() || k.len() > len {
        return false;
    }
    let bit_len = k.len() * 8 - k[0].leading_zeros() as usize;
    if bit_len < 25 {
        return false; // below 2^24
    }
    let ones: usize = k.iter().map(|b| b.count_ones() as usize).sum();
    if ones < 16 || bit_len - ones < 16 {
        return false;
    }
    if k.len() < len {
        return true; // far below p - 2^24
    }
    // p - 2^24: every MODP prime ends in 64 one bits, so subtracting 2^24
    // only clears bit 24 (byte len-4 goes from 0xff to 0xfe)
    let mut limit = group.prime();
    limit[len - 4] &= 0xfe;
    k <= limit.as_slice()
}

/// Why a Diffie-Hellman operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhError {
    /// The far public key failed the §4.6.2 checks.
    #[error("unacceptable Diffie-Hellman public key")]
    BadPublicKey,
    /// A private key to import is empty, zero or longer than 512 bits.
    #[error("bad private key")]
    BadPrivateKey,
}

/// A Diffie-Hellman key pair in one group. The private exponent is
/// zeroized on drop.
#[derive(Clone)]
pub struct DhKeyPair {
    group: DhGroup,
    exponent: Zeroizing<Exponent>,
    exponent_bits: u32,
    public: Vec<u8>,
}

impl fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhKeyPair")
            .field("group", &self.group)
            .field("public_len", &self.public.len())
            .finish_non_exhaustive()
    }
}

impl DhKeyPair {
    /// Generates a key pair with a fresh [`DhGroup::exponent_bits`]-bit
    /// private exponent (top bit set).
    pub fn generate(group: DhGroup, rng: &mut dyn RngCore) -> Self {
        let bits = group.exponent_bits();
        loop {
            let mut bytes = Zeroizing::new(vec![0u8; bits.div_ceil(8) as usize]);
            rng.fill_bytes(&mut bytes);
            let extra = (bytes.len() * 8) as u32 - bits;
            bytes[0] &= 0xff >> extra;
            bytes[0] |= 0x80 >> extra;
            if let Ok(k) = Self::from_private(group, &bytes) {
                return k;
            }
            // a public key failing §4.6.2 is astronomically unlikely; retry
        }
    }

    /// Imports a private exponent (big-endian, at most 512 bits, not zero)
    /// and computes the public key.
    pub fn from_private(group: DhGroup, private: &[u8]) -> Result<Self, DhError> {
        let p = strip_leading_zeros(private);
        if p.is_empty() || p.len() > (MAX_EXPONENT_BITS / 8) as usize {
            return Err(DhError::BadPrivateKey);
        }
        let bits = (p.len() * 8) as u32 - p[0].leading_zeros();
        let exponent = uint_from_be::<{ Exponent::LIMBS }>(p);
        let public = group.pow(&[2], &exponent, bits).to_vec();
        if !is_acceptable_public_key(group, &public) {
            return Err(DhError::BadPrivateKey);
        }
        Ok(Self {
            group,
            exponent,
            exponent_bits: bits,
            public,
        })
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The public key, big-endian without leading zeros.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The private exponent, big-endian without leading zeros (to persist a
    /// static identity). Handle with care.
    pub fn private_key(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        push_words(&mut out, self.exponent.as_words());
        let lead = out.iter().take_while(|&&x| x == 0).count();
        out.drain(..lead);
        out
    }

    /// DH_SECRET (RFC 7425 §4.6.2): the shared secret with a far public
    /// key, big-endian without leading zero bytes. Fails if the far key is
    /// not acceptable.
    pub fn shared_secret(&self, far_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        if !is_acceptable_public_key(self.group, far_public) {
            return Err(DhError::BadPublicKey);
        }
        let far = strip_leading_zeros(far_public);
        Ok(self.group.pow(far, &self.exponent, self.exponent_bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn primes_are_well_formed() {
        for g in DhGroup::ALL {
            let p = g.prime();
            assert_eq!(p.len(), g.modulus_len());
            // RFC 2409/3526 construction: 64 high and 64 low one bits
            assert!(p[..8].iter().all(|&b| b == 0xff), "{g}");
            assert!(p[p.len() - 8..].iter().all(|&b| b == 0xff), "{g}");
            // and the digits of pi after them
            assert_eq!(&p[8..12], &[0xc9, 0x0f, 0xda, 0xa2], "{g}");
            assert_eq!(DhGroup::from_id(g.id()), Some(g));
        }
        assert_eq!(DhGroup::from_id(1), None);
    }

    #[test]
    fn fermat_test_of_the_primes() {
        // 2^(p-1) = 1 mod p for each prime: catches a mistyped digit
        for g in DhGroup::ALL {
            let p = g.prime();
            let mut pm1 = p.clone();
            *pm1.last_mut().unwrap() -= 1;
            let r = match g {
                DhGroup::Modp1024 => fermat::<{ U1024::LIMBS }>(params_1024(), &pm1),
                DhGroup::Modp1536 => fermat::<{ U1536::LIMBS }>(params_1536(), &pm1),
                DhGroup::Modp2048 => fermat::<{ U2048::LIMBS }>(params_2048(), &pm1),
                DhGroup::Modp4096 => fermat::<{ U4096::LIMBS }>(params_4096(), &pm1),
            };
            assert!(r, "{g}");
        }
    }

    fn fermat<const L: usize>(params: &MontyParams<L>, pm1: &[u8]) -> bool {
        let e = uint_from_be::<L>(pm1);
        let two = MontyForm::new(&Uint::<L>::from_u8(2), *params);
        two.pow(&*e).retrieve() == Uint::<L>::ONE
    }

    #[test]
    fn agreement_in_every_group() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for g in DhGroup::ALL {
            let a = DhKeyPair::generate(g, &mut rng);
            let b = DhKeyPair::generate(g, &mut rng);
            assert!(a.public_key().len() <= g.modulus_len());
            let s1 = a.shared_secret(b.public_key()).unwrap();
            let s2 = b.shared_secret(a.public_key()).unwrap();
            assert_eq!(*s1, *s2);
            assert_ne!(s1[0], 0);
            // export / import gives the same key
            let a2 = DhKeyPair::from_private(g, &a.private_key()).unwrap();
            assert_eq!(a2.public_key(), a.public_key());
        }
    }

    #[test]
    fn public_key_acceptance() {
        let g = DhGroup::Modp1024;
        let p = g.prime();
        assert!(!is_acceptable_public_key(g, &[]));
        assert!(!is_acceptable_public_key(g, &[0, 0, 0]));
        assert!(!is_acceptable_public_key(g, &[0xff, 0xff, 0xff])); // < 2^24
        assert!(!is_acceptable_public_key(g, &p)); // p itself
        let mut big = p.clone();
        big.insert(0, 1); // longer than p
        assert!(!is_acceptable_public_key(g, &big));
        // p - 2^24 is the largest acceptable value
        let mut limit = p.clone();
        limit[p.len() - 4] = 0xfe;
        assert!(is_acceptable_public_key(g, &limit));
        let mut over = limit.clone();
        over[p.len() - 1] = 0x00;
        over[p.len() - 4] = 0xff; // p - 2^24 + ... > limit
        assert!(!is_acceptable_public_key(g, &over));
        // too few one bits / zero bits
        let mut sparse = vec![0u8; 64];
        sparse[0] = 0x80;
        sparse[63] = 1;
        assert!(!is_acceptable_public_key(g, &sparse));
        assert!(!is_acceptable_public_key(g, &[0xff; 64]));
        // 2 and p-1 (degenerate keys) are refused
        assert!(!is_acceptable_public_key(g, &[2]));
        let mut pm1 = p.clone();
        pm1[p.len() - 1] = 0xfe;
        assert!(!is_acceptable_public_key(g, &pm1));
        // leading zeros are ignored
        let mut padded = vec![0, 0];
        padded.extend_from_slice(&limit);
        assert!(is_acceptable_public_key(g, &padded));
    }

    #[test]
    fn bad_private_keys() {
        let g = DhGroup::Modp1024;
        assert_eq!(
            DhKeyPair::from_private(g, &[]).unwrap_err(),
            DhError::BadPrivateKey
        );
        assert_eq!(
            DhKeyPair::from_private(g, &[0, 0]).unwrap_err(),
            DhError::BadPrivateKey
        );
        assert_eq!(
            DhKeyPair::from_private(g, &[1; 65]).unwrap_err(),
            DhError::BadPrivateKey
        );
        // exponent 1 gives public key 2: not acceptable
        assert!(DhKeyPair::from_private(g, &[1]).is_err());
    }
}
