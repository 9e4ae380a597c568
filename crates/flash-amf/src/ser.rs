//! Encoder state shared by the AMF0 and AMF3 encoders (crate-private).

use std::collections::HashMap;

use bytes::BufMut;

use crate::error::{Error, Result};
use crate::options::EncodeOptions;
use crate::value::Value;

/// Largest value a U29 can hold.
pub(crate) const U29_MAX: u32 = 0x1FFF_FFFF;

/// Finds values already written so that repeats can be sent as references.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    map: HashMap<u64, Vec<(u32, Value)>>,
}

impl Dedup {
    pub(super) fn find(&self, v: &Value) -> Option<u32> {
        self.map
            .get(&v.fingerprint())?
            .iter()
            .find(|(_, w)| w.bitwise_eq(v))
            .map(|(i, _)| *i)
    }

    pub(super) fn insert(&mut self, v: &Value, index: u32) {
        self.map
            .entry(v.fingerprint())
            .or_default()
            .push((index, v.clone()));
    }
}

/// Key identifying AMF3 traits in the encoder's traits table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TraitsKey {
    pub class_name: String,
    pub sealed: Vec<String>,
    pub dynamic: bool,
    pub externalizable: bool,
}

/// The encoder side of the three AMF3 reference tables.
#[derive(Debug, Default)]
pub(crate) struct Amf3EncTables {
    pub strings: HashMap<String, u32>,
    pub string_count: u32,
    pub traits: HashMap<TraitsKey, u32>,
    pub traits_count: u32,
    pub object_count: u32,
    pub objects: Dedup,
}

/// Output buffer, options and tables for one encoder.
#[derive(Debug, Default)]
pub(crate) struct EncodeState {
    pub out: Vec<u8>,
    pub opts: EncodeOptions,
    /// Number of AMF0 complex values written inline (next reference index).
    pub amf0_count: u32,
    pub amf0_objects: Dedup,
    pub amf3: Amf3EncTables,
}

impl EncodeState {
    pub(super) fn new(opts: EncodeOptions) -> Self {
        EncodeState {
            opts,
            ..EncodeState::default()
        }
    }

    pub(super) fn reset_references(&mut self) {
        self.amf0_count = 0;
        self.amf0_objects = Dedup::default();
        self.amf3 = Amf3EncTables::default();
    }

    pub(super) fn check_depth(&self, depth: usize) -> Result<()> {
        if depth > self.opts.max_depth {
            return Err(Error::DepthLimitExceeded {
                limit: self.opts.max_depth,
            });
        }
        Ok(())
    }

    /// Writes a U29 in its shortest form.
    pub(super) fn u29(&mut self, v: u32) -> Result<()> {
        let out = &mut self.out;
        if v < 0x80 {
            out.put_u8(v as u8);
        } else if v < 0x4000 {
            out.put_u8(((v >> 7) | 0x80) as u8);
            out.put_u8((v & 0x7f) as u8);
        } else if v < 0x20_0000 {
            out.put_u8(((v >> 14) | 0x80) as u8);
            out.put_u8((((v >> 7) & 0x7f) | 0x80) as u8);
            out.put_u8((v & 0x7f) as u8);
        } else if v <= U29_MAX {
            out.put_u8(((v >> 22) | 0x80) as u8);
            out.put_u8((((v >> 15) & 0x7f) | 0x80) as u8);
            out.put_u8((((v >> 8) & 0x7f) | 0x80) as u8);
            out.put_u8((v & 0xff) as u8);
        } else {
            return Err(Error::U29OutOfRange(u64::from(v)));
        }
        Ok(())
    }

    /// Writes `(len << 1) | 1`, the inline form of an AMF3 length header.
    pub(super) fn u29_inline(&mut self, len: usize) -> Result<()> {
        let max = (U29_MAX >> 1) as usize;
        if len > max {
            return Err(Error::TooLong { len, max });
        }
        self.u29(((len as u32) << 1) | 1)
    }
}
