//! Exponential backoff with full jitter (AWS's "full jitter"): the n-th retry waits a random
//! time in `[0, min(max, initial * 2^(n-1))]`, so that many consumers failing together don't
//! retry together.

use std::time::Duration;

use rand::Rng;

use crate::settings::RetrySettings;

/// The delay cap before retry number `retry` (1 for the first retry).
pub fn backoff_cap(settings: &RetrySettings, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1));
    settings
        .initial_backoff
        .saturating_mul(factor)
        .min(settings.max_backoff)
}

/// A jittered delay before retry number `retry`.
pub fn backoff(settings: &RetrySettings, retry: u32) -> Duration {
    let cap = backoff_cap(settings, retry);
    cap.mul_f64(rand::rng().random_range(0.0..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RetrySettings {
        RetrySettings {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_cap_doubles_until_the_maximum() {
        let s = settings();
        let caps: Vec<_> = (1..=6).map(|n| backoff_cap(&s, n).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_cap(&s, 200), Duration::from_secs(1));
    }

    #[test]
    fn a_jittered_delay_never_exceeds_its_cap() {
        let s = settings();
        for retry in 1..8 {
            for _ in 0..100 {
                assert!(backoff(&s, retry) <= backoff_cap(&s, retry));
            }
        }
    }
}
