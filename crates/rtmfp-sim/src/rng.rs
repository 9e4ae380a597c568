//! A small, fast, seeded pseudo-random number generator.
//!
//! xoshiro256** (Blackman & Vigna) with its state expanded from a single
//! `u64` seed by splitmix64. Not cryptographically secure; it exists so that
//! simulations are reproducible from a seed without external dependencies.

use std::time::Duration;

/// Deterministic PRNG used by the simulator (xoshiro256**, seeded through
/// splitmix64).
///
/// Exposed so that tests can derive their own reproducible randomness (for
/// example payload contents) from the same seed as the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRng {
    s: [u64; 4],
}

/// One step of splitmix64: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SimRng {
    /// Creates a generator whose whole output stream is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut sm);
        }
        // splitmix64 never yields four zero words in a row from a single
        // stream, but keep the invariant explicit: all-zero state is a fixed
        // point of xoshiro.
        if s == [0; 4] {
            s[0] = 1;
        }
        Self { s }
    }

    /// Derives an independent generator (used to give sub-components their
    /// own streams without disturbing this one more than one draw).
    pub fn fork(&mut self) -> Self {
        Self::new(self.next_u64())
    }

    /// Next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform `f64` in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Returns `true` with probability `p`. Values `<= 0` (and NaN) never
    /// succeed and values `>= 1` always do; neither consumes randomness.
    pub fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.next_f64() < p
        }
    }

    /// Uniform integer in `[0, n)`; returns 0 when `n == 0`.
    ///
    /// Uses the multiply-high reduction; the bias is at most `n / 2^64`,
    /// irrelevant for simulation purposes.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform integer in `[0, n]` (inclusive).
    pub fn up_to(&mut self, n: u64) -> u64 {
        match n.checked_add(1) {
            Some(m) => self.below(m),
            None => self.next_u64(),
        }
    }

    /// Uniform duration in `[0, max]` with nanosecond granularity.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.up_to(nanos))
    }

    /// Fills `buf` with random bytes.
    pub fn fill_bytes(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let bytes = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&bytes[..rest.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn different_seed_different_stream() {
        let mut a = SimRng::new(1);
        let mut b = SimRng::new(2);
        let same = (0..64).filter(|_| a.next_u64() == b.next_u64()).count();
        assert!(same < 2);
    }

    #[test]
    fn f64_range_and_mean() {
        let mut r = SimRng::new(7);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        let mean = sum / f64::from(n);
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn bounded_draws() {
        let mut r = SimRng::new(9);
        let mut seen = [false; 6];
        for _ in 0..10_000 {
            let v = r.up_to(5);
            assert!(v <= 5);
            seen[v as usize] = true;
            assert!(r.below(3) < 3);
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.below(0), 0);
        let d = Duration::from_micros(10);
        for _ in 0..1000 {
            assert!(r.duration_up_to(d) <= d);
        }
        assert_eq!(r.duration_up_to(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn chance_extremes_consume_nothing() {
        let mut a = SimRng::new(3);
        let b = a.clone();
        assert!(!a.chance(0.0));
        assert!(!a.chance(f64::NAN));
        assert!(a.chance(1.0));
        assert_eq!(a, b);
    }

    #[test]
    fn fill_bytes_odd_length() {
        let mut r = SimRng::new(5);
        let mut buf = [0u8; 13];
        r.fill_bytes(&mut buf);
        assert!(buf.iter().any(|b| *b != 0));
    }
}
