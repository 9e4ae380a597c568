//! RTMFP option lists (RFC 7016 §2.1.3-2.1.4) as this profile uses them:
//! certificates, EPDs, keying components and signatures are all sequences
//! of options (and, in certificates, markers).

use rtmfp::wire::{Reader, WireError};

/// One element of an option list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// A Marker (an option of length 0).
    Marker,
    /// An option: type code and value.
    Option(u64, &'a [u8]),
}

/// Iterator over an option list that runs to the end of its buffer.
/// Yields an error (once) for a truncated option, then stops.
#[derive(Debug, Clone)]
pub(crate) struct Items<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Items<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            r: Reader::new(buf),
            failed: false,
        }
    }

    /// Offset of the next item.
    pub(crate) fn position(&self) -> usize {
        self.r.position()
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Item<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        match self.r.option() {
            Ok(None) => Some(Ok(Item::Marker)),
            Ok(Some((ty, v))) => Some(Ok(Item::Option(ty, v))),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Parses a value that is exactly one VLU.
pub(crate) fn vlu_value(v: &[u8]) -> Result<u64, WireError> {
    let mut r = Reader::new(v);
    let x = r.vlu()?;
    if !r.is_empty() {
        return Err(WireError::Invalid("trailing bytes after VLU"));
    }
    Ok(x)
}

/// Parses a value that is a VLU followed by bytes.
pub(crate) fn vlu_and_rest(v: &[u8]) -> Result<(u64, &[u8]), WireError> {
    let mut r = Reader::new(v);
    let x = r.vlu()?;
    Ok((x, r.rest()))
}

/// Appends an option whose value is a VLU followed by `rest`.
pub(crate) fn put_vlu_option(out: &mut Vec<u8>, ty: u64, x: u64, rest: &[u8]) {
    let mut v = Vec::with_capacity(10 + rest.len());
    rtmfp::wire::put_vlu(&mut v, x);
    v.extend_from_slice(rest);
    rtmfp::wire::put_option(out, ty, &v);
}
