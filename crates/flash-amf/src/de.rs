//! Decoder state shared by the AMF0 and AMF3 decoders (crate-private).
//!
//! # How references are resolved
//!
//! The reference tables do not hold copies of decoded values. Each object-table
//! entry records only the input offset where the value starts and whether it has
//! been fully decoded. A reference is resolved by decoding the referenced bytes
//! again ("replay") with table registration switched off, which yields the same
//! value without keeping a second copy of every complex value in memory. Every
//! replay is charged to the allocation budget and checked against the depth
//! limit at the position of the reference, so reference bombs (a value that
//! refers to earlier values several times over) are bounded. A reference to an
//! entry that is still being decoded is a cycle and is rejected.

use std::rc::Rc;

use crate::error::{Error, Result};
use crate::options::DecodeOptions;
use crate::value::Value;

/// Approximate cost charged for every decoded value node.
pub(crate) const VALUE_COST: usize = std::mem::size_of::<Value>();
/// Approximate cost charged for every property slot, on top of the key bytes.
pub(crate) const PROP_COST: usize = std::mem::size_of::<(String, Value)>();

/// An entry of an object reference table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefEntry {
    /// Offset of the value's type marker.
    pub start: usize,
    /// Whether the value has been completely decoded.
    pub done: bool,
}

/// AMF3 traits as stored in the traits table (borrowing names from the input).
#[derive(Debug)]
pub(crate) struct Traits<'a> {
    pub class_name: &'a str,
    pub sealed: Vec<&'a str>,
    pub dynamic: bool,
    pub externalizable: bool,
}

/// The three AMF3 reference tables.
#[derive(Debug, Default)]
pub(crate) struct Amf3Tables<'a> {
    pub strings: Vec<&'a str>,
    pub objects: Vec<RefEntry>,
    pub traits: Vec<Rc<Traits<'a>>>,
}

/// Cursor, limits, budget and reference tables for one decoder.
#[derive(Debug)]
pub(crate) struct DecodeState<'a> {
    pub input: &'a [u8],
    pub pos: usize,
    pub opts: DecodeOptions,
    pub used: usize,
    pub amf0_refs: Vec<RefEntry>,
    /// True while replaying an AMF0 reference: no new AMF0 table entries.
    pub amf0_replay: bool,
    pub amf3: Amf3Tables<'a>,
    /// True while replaying an AMF3 reference: no new AMF3 table entries.
    pub amf3_replay: bool,
}

impl<'a> DecodeState<'a> {
    pub(super) fn new(input: &'a [u8], opts: DecodeOptions) -> Self {
        DecodeState {
            input,
            pos: 0,
            opts,
            used: 0,
            amf0_refs: Vec::new(),
            amf0_replay: false,
            amf3: Amf3Tables::default(),
            amf3_replay: false,
        }
    }

    /// Clears all reference tables.
    pub(super) fn reset_references(&mut self) {
        self.amf0_refs.clear();
        self.amf3 = Amf3Tables::default();
        self.amf0_replay = false;
        self.amf3_replay = false;
    }

    pub(super) fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.pos)
    }

    /// Charges `n` bytes to the allocation budget.
    pub(super) fn charge(&mut self, n: usize) -> Result<()> {
        self.used = self.used.saturating_add(n);
        if self.used > self.opts.limits.max_alloc_bytes {
            return Err(Error::AllocationLimitExceeded {
                limit: self.opts.limits.max_alloc_bytes,
            });
        }
        Ok(())
    }

    /// Checks the depth limit and charges one value node.
    pub(super) fn enter(&mut self, depth: usize) -> Result<()> {
        if depth > self.opts.limits.max_depth {
            return Err(Error::DepthLimitExceeded {
                limit: self.opts.limits.max_depth,
            });
        }
        self.charge(VALUE_COST)
    }

    /// Checks a declared or reached collection length against the limit.
    pub(super) fn check_len(&self, len: usize) -> Result<()> {
        let limit = self.opts.limits.max_collection_len;
        if len > limit {
            return Err(Error::CollectionTooLarge { len, limit });
        }
        Ok(())
    }

    /// A capacity for a collection of `count` declared elements that each take at
    /// least `min_bytes` of input: never more than the remaining input could hold,
    /// nor than the remaining budget could pay for.
    pub(super) fn capacity_for<T>(&self, count: usize, min_bytes: usize) -> usize {
        let by_input = self.remaining() / min_bytes.max(1);
        let budget_left = self.opts.limits.max_alloc_bytes.saturating_sub(self.used);
        let by_budget = budget_left / std::mem::size_of::<T>().max(1);
        count.min(by_input).min(by_budget)
    }

    fn eof(&self, n: usize) -> Error {
        Error::UnexpectedEof {
            offset: self.pos,
            needed: n.saturating_sub(self.remaining()),
        }
    }

    /// Takes the next `n` bytes of input without copying.
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.eof(n));
        }
        let s = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    /// Takes `n` bytes and checks they are UTF-8, without copying.
    pub(super) fn str_slice(&mut self, n: usize) -> Result<&'a str> {
        let offset = self.pos;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8 { offset })
    }

    /// Takes `n` bytes as an owned string, charging the budget first.
    pub(super) fn string(&mut self, n: usize) -> Result<String> {
        let s = self.str_slice(n)?;
        self.charge(n)?;
        Ok(s.to_owned())
    }

    /// Copies `s` into an owned string, charging the budget.
    pub(super) fn own(&mut self, s: &str) -> Result<String> {
        self.charge(s.len())?;
        Ok(s.to_owned())
    }

    /// Reads an AMF3 U29 (1 to 4 bytes).
    pub(super) fn u29(&mut self) -> Result<u32> {
        let mut v: u32 = 0;
        for _ in 0..3 {
            let b = self.u8()?;
            if b & 0x80 == 0 {
                return Ok((v << 7) | u32::from(b));
            }
            v = (v << 7) | u32::from(b & 0x7f);
        }
        let b = self.u8()?;
        Ok((v << 8) | u32::from(b))
    }

    /// Adds an entry to a reference table unless replaying; returns its index.
    pub(super) fn register(
        table: &mut Vec<RefEntry>,
        replay: bool,
        start: usize,
        max: usize,
    ) -> Result<Option<usize>> {
        if replay {
            return Ok(None);
        }
        if table.len() >= max {
            return Err(Error::ReferenceTableFull { limit: max });
        }
        table.push(RefEntry { start, done: false });
        Ok(Some(table.len() - 1))
    }

    /// Marks a reference table entry complete.
    pub(super) fn finish(table: &mut [RefEntry], idx: Option<usize>) {
        if let Some(i) = idx {
            if let Some(e) = table.get_mut(i) {
                e.done = true;
            }
        }
    }

    /// Looks up a reference table entry, rejecting unknown and unfinished ones.
    pub(super) fn lookup(table: &[RefEntry], index: usize, offset: usize) -> Result<RefEntry> {
        match table.get(index) {
            None => Err(Error::BadReference { index, offset }),
            Some(e) if !e.done => Err(Error::CyclicReference { index, offset }),
            Some(e) => Ok(*e),
        }
    }

    /// Errors with [`Error::TrailingBytes`] if input is left.
    pub(super) fn expect_end(&self) -> Result<()> {
        if self.remaining() > 0 {
            return Err(Error::TrailingBytes {
                offset: self.pos,
                remaining: self.remaining(),
            });
        }
        Ok(())
    }
}

/// Sign-extends a 29-bit two's-complement value.
pub(crate) fn i29(u: u32) -> i32 {
    ((u << 3) as i32) >> 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Limits;

    #[test]
    fn i29_sign_extension() {
        assert_eq!(i29(0), 0);
        assert_eq!(i29(0x0FFF_FFFF), (1 << 28) - 1);
        assert_eq!(i29(0x1000_0000), -(1 << 28));
        assert_eq!(i29(0x1FFF_FFFF), -1);
    }

    #[test]
    fn capacity_never_exceeds_input_or_budget() {
        let input = [0u8; 10];
        let st = DecodeState::new(&input, DecodeOptions::default());
        assert_eq!(st.capacity_for::<Value>(1 << 28, 1), 10);
        assert_eq!(st.capacity_for::<Value>(1 << 28, 2), 5);
        assert_eq!(st.capacity_for::<Value>(3, 1), 3);
        let tiny = DecodeOptions::default().with_limits(Limits {
            max_alloc_bytes: 2 * VALUE_COST,
            ..Limits::default()
        });
        let st = DecodeState::new(&input, tiny);
        assert_eq!(st.capacity_for::<Value>(1 << 28, 1), 2);
    }

    #[test]
    fn budget_and_eof() {
        let input = [1u8, 2, 3];
        let mut st = DecodeState::new(&input, DecodeOptions::default());
        assert!(matches!(
            st.take(4),
            Err(Error::UnexpectedEof {
                offset: 0,
                needed: 1
            })
        ));
        assert_eq!(st.take(2).unwrap(), &[1, 2]);
        st.opts.limits.max_alloc_bytes = 10;
        assert!(st.charge(10).is_ok());
        assert!(st.charge(1).is_err());
    }
}
