//! Retry timing: jittered exponential backoff (about 100 ms growing to 1 s) under an optional deadline.

use std::time::{Duration, Instant};

/// Hands out sleep times for successive retries of one operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Option<Instant>,
    started: Instant,
}

impl Backoff {
    /// A backoff starting at 100 ms, capped at 1 s, giving up after `limit` if one is set.
    pub fn new(limit: Option<Duration>) -> Self {
        let now = Instant::now();
        Backoff {
            next: Duration::from_millis(100),
            max: Duration::from_secs(1),
            deadline: limit.map(|l| now + l),
            started: now,
        }
    }

    /// How long since the first attempt.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The next sleep, or `None` when the deadline has passed.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // Full jitter between half and the whole base spreads out clients that failed together.
        let jitter = base.mul_f64(0.5 + fastrand::f64() * 0.5);
        match self.deadline {
            None => Some(jitter),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    None
                } else {
                    Some(jitter.min(d - now))
                }
            }
        }
    }

    /// Sleeps for the next delay; returns false when the deadline has passed.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(d) => {
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap() {
        let mut b = Backoff::new(None);
        let delays: Vec<_> = (0..8).map(|_| b.next_delay().unwrap()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[7] >= Duration::from_millis(500));
    }

    #[test]
    fn backoff_stops_at_the_deadline() {
        let mut b = Backoff::new(Some(Duration::ZERO));
        assert_eq!(b.next_delay(), None);
    }
}
