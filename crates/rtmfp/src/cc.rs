//! Round-trip time and retransmission timeout (RFC 7016 §3.5.2.2),
//! congestion control (Appendix A) and pacing.

use std::time::{Duration, Instant};

/// RTT estimation from timestamp echoes, and the ERTO (§3.5.2.2).
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    pub srtt: Option<Duration>,
    pub rttvar: Duration,
    pub mrto: Duration,
    pub erto: Duration,
}

const MIN_ERTO: Duration = Duration::from_millis(250);
const MAX_ERTO: Duration = Duration::from_secs(10);

impl RttEstimator {
    pub(crate) fn new() -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            mrto: MIN_ERTO,
            erto: Duration::from_secs(3),
        }
    }

    /// Adds an RTT measurement.
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
        }
        self.mrto = self.srtt.unwrap_or_default() + self.rttvar * 4 + Duration::from_millis(200);
        self.erto = self.mrto.max(MIN_ERTO);
    }

    /// Exponential backoff after a timeout.
    pub(crate) fn backoff(&mut self) {
        let b = self.erto.mul_f64(std::f64::consts::SQRT_2).min(MAX_ERTO);
        self.erto = b.max(self.mrto);
    }
}

/// Appendix A congestion control state.
#[derive(Debug, Clone)]
pub(crate) struct Congestion {
    pub cwnd: u64,
    pub ssthresh: u64,
    acked_accumulator: u64,
    smss: u64,
    // per-packet scratch
    any_loss: bool,
    any_naks: bool,
    any_acks: bool,
    acked_this_packet: u64,
    pre_ack_outstanding: u64,
}

/// Initial window (RFC 5681 §3.1 for SMSS 1460).
pub(crate) const CWND_INIT: u64 = 4380;

impl Congestion {
    pub(crate) fn new(smss: u64) -> Self {
        Self {
            cwnd: CWND_INIT,
            ssthresh: u64::MAX,
            acked_accumulator: 0,
            smss,
            any_loss: false,
            any_naks: false,
            any_acks: false,
            acked_this_packet: 0,
            pre_ack_outstanding: 0,
        }
    }

    pub(crate) fn on_timeout(&mut self, was_loss: bool) {
        self.ssthresh = self.ssthresh.max(self.cwnd * 3 / 4);
        self.acked_accumulator = 0;
        self.cwnd = if was_loss { self.smss } else { CWND_INIT };
    }

    pub(crate) fn begin_packet(&mut self, outstanding: u64) {
        self.any_loss = false;
        self.any_naks = false;
        self.any_acks = false;
        self.acked_this_packet = 0;
        self.pre_ack_outstanding = outstanding;
    }

    pub(crate) fn on_ack(&mut self, bytes: u64) {
        self.any_acks = true;
        self.acked_this_packet += bytes;
    }

    pub(crate) fn on_nak(&mut self) {
        self.any_naks = true;
    }

    pub(crate) fn on_loss(&mut self) {
        self.any_loss = true;
    }

    /// Figure 25. `fastgrow` and `tc_sent` as defined in Appendix A.2.
    pub(crate) fn end_packet(&mut self, fastgrow: bool, tc_sent: bool) {
        let pre = self.pre_ack_outstanding;
        if self.any_loss {
            self.ssthresh = if tc_sent || (pre > 67200 && fastgrow) {
                (pre * 7 / 8).max(CWND_INIT)
            } else {
                (pre / 2).max(CWND_INIT)
            };
            self.cwnd = self.ssthresh;
            self.acked_accumulator = 0;
        } else if self.any_acks && !self.any_naks && pre >= self.cwnd {
            let mut increase = 0u64;
            if fastgrow {
                if self.cwnd < self.ssthresh {
                    increase = self.acked_this_packet;
                } else {
                    self.acked_accumulator += self.acked_this_packet;
                    let aithresh = (self.cwnd / 16).clamp(64, 4800);
                    while self.acked_accumulator >= aithresh {
                        self.acked_accumulator -= aithresh;
                        increase += 48;
                    }
                }
            } else if self.cwnd < self.ssthresh && tc_sent {
                increase = self.acked_this_packet.div_ceil(4);
            } else {
                let cap = if tc_sent { 2400 } else { 4800 };
                self.acked_accumulator += self.acked_this_packet;
                let aithresh = (self.cwnd / 16).clamp(64, cap);
                while self.acked_accumulator >= aithresh {
                    self.acked_accumulator -= aithresh;
                    increase += 24;
                }
            }
            self.cwnd = (self.cwnd + increase.min(self.smss)).max(CWND_INIT);
        }
    }
}

/// A token-bucket pacer that spreads a congestion window over an RTT.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    tokens: f64,
    last: Option<Instant>,
}

/// Packets a pacer lets out back to back.
const PACING_BURST_PACKETS: f64 = 10.0;

impl Pacer {
    pub(crate) fn new() -> Self {
        Self {
            tokens: 0.0,
            last: None,
        }
    }

    fn rate(cwnd: u64, srtt: Option<Duration>, slow_start: bool) -> f64 {
        let rtt = srtt
            .unwrap_or(Duration::from_millis(100))
            .max(Duration::from_millis(1));
        let gain = if slow_start { 2.0 } else { 1.25 };
        gain * cwnd as f64 / rtt.as_secs_f64()
    }

    fn refill(&mut self, now: Instant, rate: f64, cap: f64) {
        let elapsed = match self.last {
            Some(l) => now.saturating_duration_since(l).as_secs_f64(),
            None => f64::INFINITY,
        };
        self.tokens = (self.tokens + elapsed * rate).min(cap);
        self.last = Some(now);
    }

    /// When a packet of `size` bytes may be sent (`now` if at once).
    pub(crate) fn release_time(
        &mut self,
        now: Instant,
        size: usize,
        cwnd: u64,
        srtt: Option<Duration>,
        slow_start: bool,
    ) -> Instant {
        let rate = Self::rate(cwnd, srtt, slow_start);
        let cap = (PACING_BURST_PACKETS * size as f64).max(size as f64);
        self.refill(now, rate, cap);
        if self.tokens >= size as f64 {
            now
        } else {
            let wait = (size as f64 - self.tokens) / rate;
            now + Duration::from_secs_f64(wait.min(1.0))
        }
    }

    pub(crate) fn consume(&mut self, size: usize) {
        self.tokens -= size as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erto_follows_rfc() {
        let mut r = RttEstimator::new();
        assert_eq!(r.erto, Duration::from_secs(3));
        r.sample(Duration::from_millis(100));
        // srtt 100, rttvar 50 -> mrto = 100 + 200 + 200
        assert_eq!(r.erto, Duration::from_millis(500));
        for _ in 0..20 {
            r.backoff();
        }
        assert_eq!(r.erto, Duration::from_secs(10));
    }

    #[test]
    fn slow_start_grows_and_loss_shrinks() {
        let mut c = Congestion::new(1460);
        c.begin_packet(CWND_INIT);
        c.on_ack(1200);
        c.end_packet(true, false);
        assert_eq!(c.cwnd, CWND_INIT + 1200);
        c.begin_packet(100_000);
        c.on_loss();
        c.end_packet(true, false);
        assert_eq!(c.cwnd, 100_000 * 7 / 8);
        c.on_timeout(true);
        assert_eq!(c.cwnd, 1460);
    }
}
