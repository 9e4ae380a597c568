//! RBSP bit writer (ITU-T H.264 §7.2: `u(n)`, `ue(v)`, `se(v)`,
//! `rbsp_trailing_bits`) and NAL unit framing with emulation prevention
//! (§7.4.1.1).

/// Writes an RBSP most significant bit first.
#[derive(Debug, Default, Clone)]
pub struct BitWriter {
    out: Vec<u8>,
    /// Bits not yet flushed to `out`, left-aligned in the low `nbits` bits.
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(bytes),
            acc: 0,
            nbits: 0,
        }
    }

    /// `u(n)`: the low `n` bits of `value` (`n` ≤ 32; larger `n` is clamped).
    pub fn put_bits(&mut self, n: u32, value: u32) {
        let n = n.min(32);
        if n == 0 {
            return;
        }
        let v = if n == 32 {
            u64::from(value)
        } else {
            u64::from(value) & ((1u64 << n) - 1)
        };
        self.acc = (self.acc << n) | v;
        self.nbits += n;
        while self.nbits >= 8 {
            self.nbits -= 8;
            self.out.push((self.acc >> self.nbits) as u8);
        }
        // Keep only the pending bits so the accumulator never overflows.
        self.acc &= (1u64 << self.nbits) - 1;
    }

    /// `u(1)`.
    pub fn put_bit(&mut self, bit: bool) {
        self.put_bits(1, u32::from(bit));
    }

    /// `ue(v)`: unsigned exp-Golomb (§9.1). Values up to `u32::MAX - 1`.
    pub fn put_ue(&mut self, value: u32) {
        let v = u64::from(value) + 1;
        let len = 64 - v.leading_zeros(); // bits in v, 1..=33
        let zeros = len - 1;
        // `zeros` leading zeros, then v in `len` bits.
        if zeros > 0 {
            self.put_bits(zeros, 0);
        }
        if len > 32 {
            self.put_bits(1, 1);
            self.put_bits(32, v as u32);
        } else {
            self.put_bits(len, v as u32);
        }
    }

    /// `se(v)`: signed exp-Golomb (§9.1.1): k > 0 ↦ 2k − 1, k ≤ 0 ↦ −2k.
    pub fn put_se(&mut self, value: i32) {
        let k = i64::from(value);
        let code = if k > 0 { 2 * k - 1 } else { -2 * k };
        self.put_ue(u32::try_from(code).unwrap_or(u32::MAX - 1));
    }

    /// True when the next bit starts a byte.
    pub fn is_byte_aligned(&self) -> bool {
        self.nbits == 0
    }

    /// Zero bits up to the next byte boundary (`pcm_alignment_zero_bit`).
    pub fn align_zero(&mut self) {
        if self.nbits > 0 {
            self.put_bits(8 - self.nbits, 0);
        }
    }

    /// Whole bytes; the writer must be byte aligned (it aligns with zeros if not).
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.align_zero();
        self.out.extend_from_slice(bytes);
    }

    /// `rbsp_trailing_bits()`: a one bit, then zeros to the byte boundary.
    pub fn put_trailing_bits(&mut self) {
        self.put_bit(true);
        self.align_zero();
    }

    /// Number of bits written so far.
    pub fn bit_len(&self) -> usize {
        self.out.len() * 8 + self.nbits as usize
    }

    /// The bytes written; pending bits are padded with zeros.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.align_zero();
        self.out
    }
}

/// Builds a NAL unit: the one-byte header (`forbidden_zero_bit` 0,
/// `nal_ref_idc`, `nal_unit_type`) and the RBSP with emulation prevention bytes
/// inserted: every `00 00` followed by a byte ≤ 3 gets a `03` in between.
pub fn nal_unit(nal_ref_idc: u8, nal_unit_type: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 2);
    out.push(((nal_ref_idc & 3) << 5) | (nal_unit_type & 0x1f));
    let mut zeros = 0usize;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
    }
    // An RBSP ending in 0x00 (only with cabac_zero_words) gets a final 0x03.
    if rbsp.last() == Some(&0) {
        out.push(3);
    }
    out
}

/// Removes emulation prevention bytes from a NAL unit payload (after the
/// header byte): the inverse of [`nal_unit`]. Used by tests and analysers.
pub fn unescape_rbsp(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut zeros = 0usize;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
    }
    out
}

/// Reads an RBSP most significant bit first (`u(n)`, `ue(v)`, `se(v)`).
/// Every read returns `None` past the end instead of panicking.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Bits left.
    pub fn remaining(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    /// Current bit position.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// One bit.
    pub fn bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1 == 1;
        self.pos += 1;
        Some(bit)
    }

    /// `u(n)`, `n` ≤ 32.
    pub fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 || self.remaining() < n as usize {
            return None;
        }
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    /// `ue(v)`; `None` on a code longer than 32 bits or past the end.
    pub fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros > 32 {
                return None;
            }
        }
        let rest = u64::from(self.bits(zeros)?);
        let v = (1u64 << zeros) - 1 + rest;
        u32::try_from(v).ok()
    }

    /// `se(v)`.
    pub fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).ok()
    }

    /// Skips to the next byte boundary.
    pub fn align(&mut self) {
        self.pos = self.pos.div_ceil(8) * 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits_string(w: BitWriter) -> String {
        let n = w.bit_len();
        let bytes = w.into_bytes();
        let mut s = String::new();
        for i in 0..n {
            let b = (bytes[i / 8] >> (7 - i % 8)) & 1;
            s.push(if b == 1 { '1' } else { '0' });
        }
        s
    }

    #[test]
    fn ue_codes_match_table_9_2() {
        let expected = [
            "1", "010", "011", "00100", "00101", "00110", "00111", "0001000", "0001001",
        ];
        for (v, e) in expected.iter().enumerate() {
            let mut w = BitWriter::new();
            w.put_ue(v as u32);
            assert_eq!(bits_string(w), *e, "ue({v})");
        }
        let mut w = BitWriter::new();
        w.put_ue(30); // I_PCM in a P slice: 31 = 0b11111 → 0000 11111
        assert_eq!(bits_string(w), "000011111");
    }

    #[test]
    fn se_codes_match_table_9_3() {
        let expected = [
            (0, "1"),
            (1, "010"),
            (-1, "011"),
            (2, "00100"),
            (-2, "00101"),
            (3, "00110"),
        ];
        for (v, e) in expected {
            let mut w = BitWriter::new();
            w.put_se(v);
            assert_eq!(bits_string(w), e, "se({v})");
        }
    }

    #[test]
    fn ue_se_round_trip_including_extremes() {
        let values = [0u32, 1, 2, 3, 254, 255, 256, 65535, 1 << 20, u32::MAX - 1];
        let mut w = BitWriter::new();
        for &v in &values {
            w.put_ue(v);
        }
        let signed = [0i32, 1, -1, 100, -100, i32::MAX, i32::MIN + 1];
        for &v in &signed {
            w.put_se(v);
        }
        w.put_trailing_bits();
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        for &v in &values {
            assert_eq!(r.ue(), Some(v));
        }
        for &v in &signed {
            assert_eq!(r.se(), Some(v));
        }
        assert_eq!(r.bit(), Some(true));
    }

    #[test]
    fn put_bits_and_alignment() {
        let mut w = BitWriter::new();
        w.put_bits(3, 0b101);
        assert!(!w.is_byte_aligned());
        w.align_zero();
        assert!(w.is_byte_aligned());
        w.put_bits(32, 0xDEAD_BEEF);
        w.put_bits(4, 0xF);
        w.put_trailing_bits();
        assert_eq!(w.into_bytes(), vec![0xA0, 0xDE, 0xAD, 0xBE, 0xEF, 0xF8]);
    }

    #[test]
    fn trailing_bits_on_aligned_writer_is_0x80() {
        let mut w = BitWriter::new();
        w.put_bits(8, 0x42);
        w.put_trailing_bits();
        assert_eq!(w.into_bytes(), vec![0x42, 0x80]);
    }

    #[test]
    fn emulation_prevention() {
        assert_eq!(
            nal_unit(3, 7, &[0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 4]),
            vec![0x67, 0, 0, 3, 0, 0, 3, 0, 1, 0, 0, 3, 2, 0, 0, 4]
        );
        assert_eq!(nal_unit(0, 1, &[0, 0]), vec![0x01, 0, 0, 3]);
        let rbsp = [0u8, 0, 3, 0, 0, 0, 0, 0, 1, 7];
        let nal = nal_unit(2, 1, &rbsp);
        assert_eq!(unescape_rbsp(&nal[1..]), rbsp);
        // No start code prefix survives escaping.
        for w in nal[1..].windows(3) {
            assert!(!(w[0] == 0 && w[1] == 0 && w[2] <= 2), "{nal:?}");
        }
    }

    #[test]
    fn reader_stops_at_end() {
        let mut r = BitReader::new(&[0x00]);
        assert_eq!(r.ue(), None);
        let mut r = BitReader::new(&[]);
        assert_eq!(r.bit(), None);
        assert_eq!(r.bits(1), None);
    }
}
