//! Exponential backoff with jitter for reconnecting and resubscribing.

use std::time::Duration;

use rand::Rng;

#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// 100 ms doubling to 5 s: quick after a blip, gentle on a broker that is restarting.
    pub(crate) fn reconnect() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, current: min }
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }

    /// "Equal jitter": half of the step is fixed, half random. Every worker of a fleet loses its
    /// connection at the same moment when the broker restarts; the random half spreads their
    /// reconnects, the fixed half keeps each one backing off.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_their_step() {
        let mut b = Backoff::reconnect();
        let steps_ms = [100u64, 200, 400, 800, 1600, 3200, 5000, 5000];
        for step in steps_ms {
            let d = b.next_delay();
            let step = Duration::from_millis(step);
            assert!(d >= step / 2 && d <= step, "{d:?} not in [{:?}, {step:?}]", step / 2);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::reconnect();
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
