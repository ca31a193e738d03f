//! Retry policy of the Calls API client: exponential backoff with full jitter, bounded in attempts and time.

use std::time::Duration;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// First backoff ceiling.
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            budget: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt` (1-based count of attempts made so far): a random value between
    /// zero and `min(max_delay, base_delay * 2^(attempt-1))`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            let ceiling = (policy.base_delay * 2u32.pow((attempt - 1).min(16))).min(policy.max_delay);
            for _ in 0..20 {
                assert!(policy.delay(attempt) <= ceiling);
            }
        }
        assert!(policy.delay(30) <= policy.max_delay);
    }
}
