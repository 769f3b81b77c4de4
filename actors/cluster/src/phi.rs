//! Phi-accrual failure detection (Hayashibara et al., 2004), as Akka and Cassandra do it.
//!
//! Instead of "no heartbeat for T seconds", the detector learns the distribution of heartbeat
//! intervals and reports phi: how unlikely the current silence is, on a log10 scale (phi 8 means
//! a one in 10^8 chance that the node is merely slow). The caller picks the threshold, and the
//! detector adapts to each link's own jitter. Times are the caller's, as durations since an epoch
//! it chooses, so simulated time works as well as real time.
//!
//! ```
//! use std::time::Duration;
//! use cluster::phi::{PhiAccrual, PhiConfig};
//!
//! let mut detector = PhiAccrual::new(PhiConfig::default());
//! let s = Duration::from_secs;
//! for t in 0..30 {
//!     detector.heartbeat(s(t));
//! }
//! assert!(!detector.is_available(s(40)) && detector.is_available(s(30)));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

/// The detector's settings; the defaults are Akka's cluster failure detector's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiConfig {
    /// Phi above this means failed. Akka: 8.0.
    pub threshold: f64,
    /// How many intervals to remember. Akka: 1000.
    pub max_sample_size: usize,
    /// A floor under the standard deviation, so that very regular heartbeats do not make a small
    /// delay look like a failure. Akka: 100 ms.
    pub min_std_deviation: Duration,
    /// A pause this long on top of the mean interval is not suspicious (garbage collection, a busy
    /// host). Akka: 3 s.
    pub acceptable_heartbeat_pause: Duration,
    /// The interval assumed before any has been measured. Akka: 1 s.
    pub first_heartbeat_estimate: Duration,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            max_sample_size: 1000,
            min_std_deviation: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_secs(3),
            first_heartbeat_estimate: Duration::from_secs(1),
        }
    }
}

/// One monitored node's heartbeat history.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    config: PhiConfig,
    /// Intervals in milliseconds, newest last.
    intervals: VecDeque<f64>,
    sum: f64,
    sum_of_squares: f64,
    last: Option<Duration>,
}

impl PhiAccrual {
    /// A detector that has heard nothing yet.
    pub fn new(config: PhiConfig) -> Self {
        let mut detector =
            PhiAccrual { config, intervals: VecDeque::new(), sum: 0.0, sum_of_squares: 0.0, last: None };
        // Akka seeds the history with two intervals around the first estimate, so that phi is
        // defined from the first heartbeat on.
        let mean = ms(config.first_heartbeat_estimate);
        let std = mean / 4.0;
        detector.record(mean - std);
        detector.record(mean + std);
        detector
    }

    /// The settings.
    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    /// A heartbeat arrived at `now`. As in Akka, the interval it ends is learned only if the node
    /// was available until it arrived: the silence of a crash or a partition says nothing about
    /// the node's rhythm, and learning it would make the next failure take far longer to detect.
    pub fn heartbeat(&mut self, now: Duration) {
        if let Some(last) = self.last {
            if now > last && self.is_available(now) {
                self.record(ms(now - last));
            }
        }
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }

    fn record(&mut self, interval: f64) {
        if self.intervals.len() >= self.config.max_sample_size.max(2) {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_of_squares -= old * old;
            }
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_of_squares += interval * interval;
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat(&self) -> Option<Duration> {
        self.last
    }

    /// How suspicious the silence since the last heartbeat is at `now`; 0 before any heartbeat.
    pub fn phi(&self, now: Duration) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        let variance = (self.sum_of_squares / n - mean * mean).max(0.0);
        let std = variance.sqrt().max(ms(self.config.min_std_deviation));
        phi(ms(now.saturating_sub(last)), mean + ms(self.config.acceptable_heartbeat_pause), std)
    }

    /// Whether phi at `now` is under the threshold.
    pub fn is_available(&self, now: Duration) -> bool {
        self.phi(now) < self.config.threshold
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Akka's logistic approximation of the normal distribution's tail, as -log10 of the chance that
/// a heartbeat is still coming after `elapsed` milliseconds.
fn phi(elapsed: f64, mean: f64, std: f64) -> f64 {
    let y = (elapsed - mean) / std;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if elapsed > mean {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Regular heartbeats every second, then silence: with Akka's defaults phi reaches 8 a little
    /// after mean (1 s) + pause (3 s) + about 5.2 standard deviations (the 100 ms floor), so
    /// about 4.5 s after the last heartbeat.
    #[test]
    fn phi_passes_the_threshold_when_expected_after_heartbeats_stop() {
        let mut d = PhiAccrual::new(PhiConfig::default());
        for i in 0..=60 {
            d.heartbeat(at(i * 1_000));
        }
        let last = 60_000;
        assert!(d.phi(at(last + 1_000)) < 1.0, "one ordinary interval is not suspicious");
        assert!(d.is_available(at(last + 4_300)), "phi {} at 4.3 s", d.phi(at(last + 4_300)));
        assert!(!d.is_available(at(last + 4_700)), "phi {} at 4.7 s", d.phi(at(last + 4_700)));
        // Phi only grows with silence.
        let phis: Vec<f64> = (0..100).map(|i| d.phi(at(last + i * 100))).collect();
        assert!(phis.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn phi_stays_under_the_threshold_with_jittery_heartbeats() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut d = PhiAccrual::new(PhiConfig::default());
        let mut now = 0;
        let mut worst = 0.0f64;
        for _ in 0..2_000 {
            // 1 s +- 400 ms, and now and then a 2.5 s stall.
            let gap = if rng.gen_bool(0.01) { 2_500 } else { rng.gen_range(600..=1_400) };
            now += gap;
            worst = worst.max(d.phi(at(now)));
            d.heartbeat(at(now));
        }
        assert!(worst < d.config().threshold, "phi reached {worst} on a live node");
    }

    #[test]
    fn a_short_interval_detector_detects_in_proportion() {
        // 50 ms heartbeats (the cluster's own), no pause allowance, 10 ms floor.
        let config = PhiConfig {
            acceptable_heartbeat_pause: Duration::ZERO,
            min_std_deviation: at(10),
            first_heartbeat_estimate: at(50),
            ..PhiConfig::default()
        };
        let mut d = PhiAccrual::new(config);
        for i in 0..=100 {
            d.heartbeat(at(i * 50));
        }
        assert!(d.is_available(at(5_000 + 80)));
        assert!(!d.is_available(at(5_000 + 150)), "phi {}", d.phi(at(5_150)));
    }

    #[test]
    fn the_sample_window_forgets_old_intervals() {
        // The first estimate is the 5 s rhythm, so that it is learned (an interval that ends a
        // silence past the threshold is not).
        let config = PhiConfig {
            max_sample_size: 10,
            acceptable_heartbeat_pause: Duration::ZERO,
            first_heartbeat_estimate: at(5_000),
            ..PhiConfig::default()
        };
        let mut d = PhiAccrual::new(config);
        let mut now = 0;
        for _ in 0..50 {
            now += 5_000;
            d.heartbeat(at(now));
        }
        // Now the node speeds up to 100 ms; after ten of them the 5 s history is forgotten.
        for _ in 0..10 {
            now += 100;
            d.heartbeat(at(now));
        }
        assert!(!d.is_available(at(now + 2_000)), "phi {}", d.phi(at(now + 2_000)));
    }

    #[test]
    fn a_silence_past_the_threshold_is_not_learned() {
        let mut d = PhiAccrual::new(PhiConfig::default());
        for i in 0..=100 {
            d.heartbeat(at(i * 1_000));
        }
        let learned = d.clone();
        d.heartbeat(at(100_000 + 300_000));
        for after in [1_000, 4_300, 4_700] {
            assert_eq!(d.phi(at(400_000 + after)), learned.phi(at(100_000 + after)), "{after} ms after");
        }
        // A slow beat within the threshold is learned.
        d.heartbeat(at(400_000 + 3_000));
        assert!(d.phi(at(403_000 + 4_700)) < learned.phi(at(100_000 + 4_700)));
    }

    #[test]
    fn before_any_heartbeat_phi_is_zero() {
        let d = PhiAccrual::new(PhiConfig::default());
        assert_eq!(d.phi(at(1_000_000)), 0.0);
    }
}
