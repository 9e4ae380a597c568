//! Link impairment configuration.

use std::time::Duration;

/// Maximum UDP payload of an IPv4 datagram; the default (effectively
/// unlimited) MTU.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// UDP payload that fits a 1500-byte Ethernet frame over IPv4
/// (1500 − 20 IPv4 − 8 UDP). Used by the [`LinkConfig::lan`] and
/// [`LinkConfig::wan`] presets.
pub const ETHERNET_UDP_PAYLOAD: usize = 1_472;

/// Two-state Gilbert–Elliott bursty loss model.
///
/// The state is kept per directional link and advanced once per datagram:
/// the datagram is lost with the loss probability of the *current* state,
/// then the state transitions with `p_good_to_bad` / `p_bad_to_good`.
/// Every link starts in the good state.
///
/// The mean burst (bad-state sojourn) length is `1 / p_bad_to_good`
/// datagrams and the long-run fraction of time spent in the bad state is
/// `p_good_to_bad / (p_good_to_bad + p_bad_to_good)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state after a datagram.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state after a datagram.
    pub p_bad_to_good: f64,
    /// Loss probability while in the bad state (often 1.0).
    pub loss_in_bad: f64,
    /// Loss probability while in the good state (often 0.0).
    pub loss_in_good: f64,
}

impl GilbertElliott {
    /// Creates a model from its four parameters.
    pub fn new(
        p_good_to_bad: f64,
        p_bad_to_good: f64,
        loss_in_bad: f64,
        loss_in_good: f64,
    ) -> Self {
        Self {
            p_good_to_bad,
            p_bad_to_good,
            loss_in_bad,
            loss_in_good,
        }
    }

    /// Classic "Gilbert" parameterisation: every datagram is lost in the bad
    /// state, none in the good state, with the given long-run average loss
    /// rate and mean burst length (in datagrams, `>= 1`).
    pub fn bursty(average_loss: f64, mean_burst_len: f64) -> Self {
        let p_bad_to_good = 1.0 / mean_burst_len.max(1.0);
        let loss = average_loss.clamp(0.0, 0.999_999);
        // pi_bad = g2b / (g2b + b2g)  =>  g2b = pi_bad * b2g / (1 - pi_bad)
        let p_good_to_bad = (loss * p_bad_to_good / (1.0 - loss)).min(1.0);
        Self::new(p_good_to_bad, p_bad_to_good, 1.0, 0.0)
    }

    /// Long-run average loss probability of this model.
    pub fn average_loss(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total <= 0.0 {
            return self.loss_in_good;
        }
        let pi_bad = self.p_good_to_bad / total;
        pi_bad * self.loss_in_bad + (1.0 - pi_bad) * self.loss_in_good
    }

    fn validate(&self) -> Result<(), String> {
        check_prob("gilbert_elliott.p_good_to_bad", self.p_good_to_bad)?;
        check_prob("gilbert_elliott.p_bad_to_good", self.p_bad_to_good)?;
        check_prob("gilbert_elliott.loss_in_bad", self.loss_in_bad)?;
        check_prob("gilbert_elliott.loss_in_good", self.loss_in_good)
    }
}

/// Impairments applied to datagrams travelling over one directional link
/// (one ordered pair of host IP addresses).
///
/// Processing order for each datagram sent: partition check, MTU check,
/// bandwidth queue (tail drop), random loss (independent `loss`, then the
/// [`GilbertElliott`] model if any; a datagram is lost if either says so),
/// delay + jitter (+ `reorder_delay` for datagrams selected for
/// reordering), and finally duplication.
///
/// Lost datagrams still occupy the bandwidth they were serialised on (loss
/// happens "on the wire" after the bottleneck queue).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Uniform extra delay in `[0, jitter]`, drawn per datagram. Jitter alone
    /// never reorders datagrams on a link: arrival times are clamped to be
    /// non-decreasing (FIFO) for datagrams not selected by `reorder`.
    pub jitter: Duration,
    /// Independent random loss probability in `[0, 1]`.
    pub loss: f64,
    /// Optional bursty loss model, applied in addition to `loss`.
    pub gilbert_elliott: Option<GilbertElliott>,
    /// Probability in `[0, 1]` that a delivered datagram is delivered twice
    /// (the copy arrives immediately after the original).
    pub duplicate: f64,
    /// Probability in `[0, 1]` that a datagram is held back by an extra
    /// `reorder_delay`, letting later datagrams overtake it.
    pub reorder: f64,
    /// Extra delay applied to datagrams selected by `reorder`.
    pub reorder_delay: Duration,
    /// Serialisation rate in bits per second; `None` means infinitely fast.
    pub bandwidth_bps: Option<u64>,
    /// Bottleneck buffer size in bytes when bandwidth-limited. It holds the
    /// datagrams waiting for the wire plus the unsent remainder of the one
    /// being serialised; a datagram that would overflow it is tail-dropped.
    /// A datagram arriving at an idle link is never dropped by the queue.
    pub queue_bytes: usize,
    /// Largest datagram (UDP payload bytes) the link carries; larger ones
    /// are dropped.
    pub mtu: usize,
}

impl Default for LinkConfig {
    /// A perfect link: no delay, no loss, infinite bandwidth (and an
    /// unbounded queue should a bandwidth limit be set later), MTU of
    /// [`MAX_UDP_PAYLOAD`].
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            gilbert_elliott: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            bandwidth_bps: None,
            queue_bytes: usize::MAX,
            mtu: MAX_UDP_PAYLOAD,
        }
    }
}

impl LinkConfig {
    /// A perfect link (same as [`LinkConfig::default`]).
    pub fn perfect() -> Self {
        Self::default()
    }

    /// A local network: 100 µs delay, 20 µs jitter, 1 Gbit/s, 1 MiB buffer,
    /// Ethernet MTU, no loss.
    pub fn lan() -> Self {
        Self {
            delay: Duration::from_micros(100),
            jitter: Duration::from_micros(20),
            bandwidth_bps: Some(1_000_000_000),
            queue_bytes: 1 << 20,
            mtu: ETHERNET_UDP_PAYLOAD,
            ..Self::default()
        }
    }

    /// A wide-area path with the given one-way delay: jitter of a tenth of
    /// the delay, 20 Mbit/s, 256 KiB buffer, Ethernet MTU, no loss.
    pub fn wan(delay: Duration) -> Self {
        Self {
            delay,
            jitter: delay / 10,
            bandwidth_bps: Some(20_000_000),
            queue_bytes: 256 << 10,
            mtu: ETHERNET_UDP_PAYLOAD,
            ..Self::default()
        }
    }

    /// Sets the one-way delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the maximum uniform jitter.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the independent loss probability.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Sets (or with `None`, removes) the bursty loss model.
    pub fn with_gilbert_elliott(mut self, ge: impl Into<Option<GilbertElliott>>) -> Self {
        self.gilbert_elliott = ge.into();
        self
    }

    /// Sets the duplication probability.
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// Sets the reordering probability and the hold-back delay.
    pub fn with_reorder(mut self, reorder: f64, reorder_delay: Duration) -> Self {
        self.reorder = reorder;
        self.reorder_delay = reorder_delay;
        self
    }

    /// Limits the serialisation rate (bits per second).
    pub fn with_bandwidth(mut self, bps: u64) -> Self {
        self.bandwidth_bps = Some(bps);
        self
    }

    /// Removes the bandwidth limit.
    pub fn with_unlimited_bandwidth(mut self) -> Self {
        self.bandwidth_bps = None;
        self
    }

    /// Sets the bottleneck buffer size in bytes.
    pub fn with_queue_bytes(mut self, queue_bytes: usize) -> Self {
        self.queue_bytes = queue_bytes;
        self
    }

    /// Sets the MTU (largest UDP payload carried).
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// Checks that probabilities lie in `[0, 1]` and that a bandwidth limit,
    /// if any, is non-zero.
    pub fn validate(&self) -> Result<(), String> {
        check_prob("loss", self.loss)?;
        check_prob("duplicate", self.duplicate)?;
        check_prob("reorder", self.reorder)?;
        if let Some(ge) = &self.gilbert_elliott {
            ge.validate()?;
        }
        if self.bandwidth_bps == Some(0) {
            return Err("bandwidth_bps must be non-zero (use None for unlimited)".into());
        }
        Ok(())
    }

    /// Serialisation time of `bytes` on this link (zero if unlimited).
    pub fn serialisation_time(&self, bytes: usize) -> Duration {
        match self.bandwidth_bps {
            None | Some(0) => Duration::ZERO,
            Some(bps) => {
                let nanos = (bytes as u128 * 8 * 1_000_000_000) / u128::from(bps);
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
        }
    }
}

fn check_prob(name: &str, p: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{name} must be a probability in [0, 1], got {p}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        LinkConfig::default().validate().unwrap();
        LinkConfig::lan().validate().unwrap();
        LinkConfig::wan(Duration::from_millis(40))
            .validate()
            .unwrap();
    }

    #[test]
    fn validation_rejects_bad_values() {
        assert!(LinkConfig::default().with_loss(1.5).validate().is_err());
        assert!(LinkConfig::default()
            .with_loss(f64::NAN)
            .validate()
            .is_err());
        assert!(LinkConfig::default().with_bandwidth(0).validate().is_err());
        let ge = GilbertElliott::new(0.1, -0.1, 1.0, 0.0);
        assert!(LinkConfig::default()
            .with_gilbert_elliott(ge)
            .validate()
            .is_err());
    }

    #[test]
    fn serialisation_time() {
        let cfg = LinkConfig::default().with_bandwidth(1_000_000);
        assert_eq!(cfg.serialisation_time(1000), Duration::from_millis(8));
        assert_eq!(
            LinkConfig::default().serialisation_time(1000),
            Duration::ZERO
        );
    }

    #[test]
    fn bursty_average() {
        let ge = GilbertElliott::bursty(0.05, 4.0);
        assert!((ge.average_loss() - 0.05).abs() < 1e-9);
        assert!((ge.p_bad_to_good - 0.25).abs() < 1e-12);
    }
}
