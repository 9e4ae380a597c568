//! Endpoint Discriminators (RFC 7425 §4.4): format, certificate selection,
//! canonical form.

use rtmfp::wire::put_option;

use super::cert::{fingerprint, Certificate, PeerId};
use super::options::{Item, Items};

/// EPD option: Required Hostname (§4.4.2.1).
pub const EPD_REQUIRED_HOSTNAME: u64 = 0x00;
/// EPD option: Ancillary Data (§4.4.2.2).
pub const EPD_ANCILLARY_DATA: u64 = 0x0a;
/// EPD option: Fingerprint (§4.4.2.3).
pub const EPD_FINGERPRINT: u64 = 0x0f;

/// Why an EPD is malformed (a malformed EPD selects nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EpdError {
    /// Not a well-formed option list.
    #[error("malformed endpoint discriminator")]
    Malformed,
    /// An option occurs more than once (§4.4.2).
    #[error("duplicate option {0:#x}")]
    Duplicate(u64),
    /// A Fingerprint option is not 32 bytes.
    #[error("fingerprint is not 32 bytes")]
    BadFingerprint,
}

/// A decoded Endpoint Discriminator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Epd {
    /// Fingerprint (§4.4.2.3): selects exactly one certificate.
    pub fingerprint: Option<PeerId>,
    /// Ancillary Data (§4.4.2.2): the server URI, e.g. `rtmfp://host/app`.
    pub ancillary_data: Option<Vec<u8>>,
    /// Required Hostname (§4.4.2.1).
    pub required_hostname: Option<Vec<u8>>,
}

/// The Canonical Endpoint Discriminator (§4.4.4): exactly 34 bytes,
/// `0x21 0x0f` and the fingerprint.
pub fn canonical_epd(peer: &PeerId) -> [u8; 34] {
    let mut e = [0u8; 34];
    e[0] = 0x21;
    e[1] = 0x0f;
    e[2..].copy_from_slice(peer.as_bytes());
    e
}

impl Epd {
    /// An EPD naming a peer by its ID.
    pub fn peer(peer: PeerId) -> Self {
        Self {
            fingerprint: Some(peer),
            ..Self::default()
        }
    }

    /// An EPD for "any server" at a URI (what Flash sends to connect to
    /// `rtmfp://host/app`).
    pub fn server(uri: impl Into<Vec<u8>>) -> Self {
        Self {
            ancillary_data: Some(uri.into()),
            ..Self::default()
        }
    }

    /// An EPD requiring a hostname.
    pub fn hostname(hostname: impl Into<Vec<u8>>) -> Self {
        Self {
            required_hostname: Some(hostname.into()),
            ..Self::default()
        }
    }

    /// Decodes an EPD. Unknown options are ignored; markers are skipped.
    pub fn parse(raw: &[u8]) -> Result<Self, EpdError> {
        let mut e = Epd::default();
        for item in Items::new(raw) {
            let Item::Option(ty, v) = item.map_err(|_| EpdError::Malformed)? else {
                continue;
            };
            match ty {
                EPD_FINGERPRINT => {
                    if e.fingerprint.is_some() {
                        return Err(EpdError::Duplicate(ty));
                    }
                    let fp: [u8; 32] = v.try_into().map_err(|_| EpdError::BadFingerprint)?;
                    e.fingerprint = Some(PeerId(fp));
                }
                EPD_ANCILLARY_DATA => {
                    if e.ancillary_data.is_some() {
                        return Err(EpdError::Duplicate(ty));
                    }
                    e.ancillary_data = Some(v.to_vec());
                }
                EPD_REQUIRED_HOSTNAME => {
                    if e.required_hostname.is_some() {
                        return Err(EpdError::Duplicate(ty));
                    }
                    e.required_hostname = Some(v.to_vec());
                }
                _ => {}
            }
        }
        Ok(e)
    }

    /// Encodes the EPD (fingerprint, ancillary data, hostname). An EPD with
    /// only a fingerprint encodes as the canonical EPD.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(fp) = &self.fingerprint {
            put_option(&mut out, EPD_FINGERPRINT, fp.as_bytes());
        }
        if let Some(a) = &self.ancillary_data {
            put_option(&mut out, EPD_ANCILLARY_DATA, a);
        }
        if let Some(h) = &self.required_hostname {
            put_option(&mut out, EPD_REQUIRED_HOSTNAME, h);
        }
        out
    }

    /// Figure 1 of §4.4.3: whether this EPD selects a certificate with
    /// fingerprint `fp` and decoded canonical section `cert`.
    pub fn selects_certificate(&self, cert: &Certificate, fp: &PeerId) -> bool {
        if let Some(want) = &self.fingerprint {
            return subtle::ConstantTimeEq::ct_eq(&want.0[..], &fp.0[..]).into();
        }
        if let Some(h) = &self.required_hostname {
            if cert.hostname.as_ref() != Some(h) {
                return false;
            }
        }
        if self.ancillary_data.is_some() {
            if !cert.accepts_ancillary_data {
                return false;
            }
        } else if self.required_hostname.is_none() {
            return false;
        }
        true
    }

    /// Whether this EPD selects an encoded certificate (a malformed
    /// certificate is never selected).
    pub fn selects(&self, raw_certificate: &[u8]) -> bool {
        match Certificate::parse(raw_certificate) {
            Ok(c) => self.selects_certificate(&c, &fingerprint(raw_certificate)),
            Err(_) => false,
        }
    }
}
