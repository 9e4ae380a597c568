//! The fuzz input read as a stream of small values, for the targets that
//! drive state machines (each adds its own domain values in an `impl Input`).

#![allow(dead_code)]

/// Reads the fuzz input as a stream of small values; past the end, zeros.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub fn b(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.b(), self.b()])
    }

    /// A u64 of 0 to 8 bytes (small values are common).
    pub fn u64(&mut self) -> u64 {
        let n = self.b() % 9;
        let mut v = 0u64;
        for _ in 0..n {
            v = v << 8 | u64::from(self.b());
        }
        v
    }

    /// Up to `max` bytes, length-prefixed (one byte, or two if `long`).
    pub fn bytes(&mut self, max: usize, long: bool) -> &'a [u8] {
        let n = if long {
            usize::from(self.u16())
        } else {
            usize::from(self.b())
        };
        let n = n.min(max).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }

    pub fn pick<T: Clone>(&mut self, from: &[T]) -> Option<T> {
        if from.is_empty() {
            None
        } else {
            Some(from[usize::from(self.b()) % from.len()].clone())
        }
    }
}
