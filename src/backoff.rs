//! Retry timing: jittered exponential backoff (about 100 ms growing to 1 s) under an optional deadline,
//! and [`retry`], the one loop every "try again until it works or the time is up" site uses.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// Hands out sleep times for successive retries of one operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Option<Instant>,
    started: Instant,
}

impl Backoff {
    /// A backoff starting at 100 ms, capped at 1 s, giving up at `deadline` if one is set.
    pub fn until(deadline: Option<Instant>) -> Self {
        Backoff::with(Duration::from_millis(100), Duration::from_secs(1), deadline)
    }

    /// A backoff from `first` growing to `max`, giving up at `deadline` if one is set.
    pub fn with(first: Duration, max: Duration, deadline: Option<Instant>) -> Self {
        Backoff {
            next: first,
            max,
            deadline,
            started: Instant::now(),
        }
    }

    /// A backoff giving up `limit` from now (never with `None`).
    pub fn new(limit: Option<Duration>) -> Self {
        Backoff::until(limit.map(|l| Instant::now() + l))
    }

    /// How long since the backoff was made.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Starts over from the first delay (after a success).
    pub fn reset(&mut self) {
        *self = Backoff::with(Duration::from_millis(100), self.max, self.deadline);
    }

    /// The next sleep, or `None` when the deadline has passed.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // Jitter between half and the whole base spreads out clients that failed together.
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

    /// Sleeps for the next delay; returns false (at once) when the deadline has passed.
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

/// The last failure [`retry`] is retrying after, in this process (for "still trying" messages that
/// would otherwise only say that something fails, not what).
static LAST_FAILURE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// How many failures retry loops have waited out, in this process: an attempt during which the
/// count moved got answers (a retry loop inside it failed and went on), and is not "unanswered".
static FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The last failure a retry loop is waiting out, if any has been seen.
pub fn last_failure() -> Option<String> {
    LAST_FAILURE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Whether retry loops say, after [`STILL_TRYING_AFTER`], that they are waiting out a failure
/// (an unreachable cluster, a partition without leader, a coordinator loading) (the one-shot commands; the agent says it its own way).
static TELL_WAITS: AtomicBool = AtomicBool::new(false);

/// When the last "still trying" line was written: at most one every [`STILL_TRYING_EVERY`].
static TOLD: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// How long a retry loop waits out connection failures before it says so.
pub const STILL_TRYING_AFTER: Duration = Duration::from_secs(5);

/// The least time between two "still trying" lines of the process.
const STILL_TRYING_EVERY: Duration = Duration::from_secs(30);

/// Makes retry loops tell, once they have failed to reach Kafka for a few seconds,
/// what fails and how long they go on trying: a command given a wrong address or a stopped broker
/// is not silent until its --timeout.
pub fn tell_waits() {
    TELL_WAITS.store(true, Ordering::Relaxed);
}

/// The "still trying" line for `e`, if one is due now (see [`tell_waits`]); `told` is when the
/// last one was written.
fn still_trying(
    backoff: &Backoff,
    e: &Error,
    told: &std::sync::Mutex<Option<Instant>>,
) -> Option<String> {
    still_trying_due(backoff, told).map(|rest| format!("{e}; {rest}"))
}

/// Says, if due (see [`tell_waits`]), that a retry loop paced by `backoff` is waiting out `e`: for
/// loops of their own that do not go through [`retry`].
pub fn tell_still_trying(backoff: &Backoff, e: &Error) {
    if !TELL_WAITS.load(Ordering::Relaxed) {
        return;
    }
    if let Some(line) = still_trying(backoff, e, &TOLD) {
        crate::log::warn(format_args!("{line}"));
    }
}

tokio::task_local! {
    /// What bounds the current task's retry loops when it is not the command's `--timeout`.
    static BOUND: &'static str;
}

/// Runs `fut` with the time limit of its retry loops named `what` in their "still trying" lines: a
/// heartbeat or an offset commit has a limit of its own, and naming `--timeout` there misleads (t12:
/// "still trying for up to 5 s (--timeout)" under `--timeout 2m`).
pub async fn bounded_by<F: Future>(what: &'static str, fut: F) -> F::Output {
    BOUND.scope(what, fut).await
}

/// How long a retry loop goes on ("still trying for up to 25 s (--timeout)"), if a line saying so
/// is due now.
fn still_trying_due(backoff: &Backoff, told: &std::sync::Mutex<Option<Instant>>) -> Option<String> {
    if backoff.elapsed() < STILL_TRYING_AFTER {
        return None;
    }
    let now = Instant::now();
    // The error itself comes soon: no line just before it.
    if backoff
        .deadline()
        .is_some_and(|d| d.saturating_duration_since(now) < Duration::from_secs(2))
    {
        return None;
    }
    let mut told = told.lock().unwrap_or_else(|e| e.into_inner());
    if told.is_some_and(|t| now.duration_since(t) < STILL_TRYING_EVERY) {
        return None;
    }
    *told = Some(now);
    Some(match backoff.deadline() {
        Some(d) => format!(
            "still trying for up to {} s ({})",
            d.saturating_duration_since(now).as_secs_f64().ceil(),
            BOUND.try_with(|w| *w).unwrap_or("--timeout")
        ),
        None => "still trying (--timeout 0: until it answers)".to_string(),
    })
}

/// Runs `op` until it succeeds, fails with an error that is not retriable, or `deadline` passes (then
/// [`Error::Deadline`] wraps the last error). Each attempt is given the deadline, to bound its own waits.
pub async fn retry<T, F, Fut>(deadline: Option<Instant>, op: F) -> Result<T, Error>
where
    F: FnMut(Option<Instant>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    retry_held(deadline, Duration::ZERO, op).await
}

/// [`retry`] for a request the broker may hold for up to `hold` by design (a JoinGroup waiting for
/// the other members): no "no answer" line within that time.
pub async fn retry_held<T, F, Fut>(
    deadline: Option<Instant>,
    hold: Duration,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut(Option<Instant>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::until(deadline);
    let mut telling: Option<Error> = None;
    loop {
        let attempt = op(deadline);
        let outcome = if TELL_WAITS.load(Ordering::Relaxed) {
            wait_telling(&backoff, hold, attempt).await
        } else {
            attempt.await
        };
        match outcome {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retriable() => {
                crate::log::debug(format_args!("will retry: {e}"));
                *LAST_FAILURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                FAILURES.fetch_add(1, Ordering::Relaxed);
                tell_still_trying(&backoff, &e);
                note_failure(&mut telling, e);
                if !backoff.wait().await {
                    let last = telling.take().unwrap_or(Error::NoBrokers);
                    return Err(gave_up(&backoff, last));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Awaits one attempt of a retry loop of its own paced by `backoff` (see [`tell_still_trying`]),
/// saying, when it goes unanswered for a few seconds, that Kafka does not answer.
pub async fn attempt<T>(
    backoff: &Backoff,
    attempt: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    if TELL_WAITS.load(Ordering::Relaxed) {
        wait_telling(backoff, Duration::ZERO, attempt).await
    } else {
        attempt.await
    }
}

/// Awaits one attempt; one that gets no answer (a broker that accepts and never answers) is said
/// after [`STILL_TRYING_AFTER`] as a failure would be (t11: `metadata` was silent for 30 s).
async fn wait_telling<T>(
    backoff: &Backoff,
    hold: Duration,
    attempt: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let mut attempt = std::pin::pin!(attempt);
    let failures = FAILURES.load(Ordering::Relaxed);
    let first = Instant::now() + hold + Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(first, Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut attempt => return r,
            // A retry loop inside the attempt failed meanwhile: Kafka answers, and that loop says
            // what fails (t21: "no answer from Kafka" for a partition without a leader).
            _ = tick.tick(), if FAILURES.load(Ordering::Relaxed) == failures => {
                if let Some(rest) = still_trying_due(backoff, &TOLD) {
                    // Which broker is hung, if one is (t21 F6: "no answer" did not say which of
                    // three), and what failed before.
                    let why: Vec<String> =
                        crate::connection::longest_wait(STILL_TRYING_AFTER - Duration::from_secs(1))
                            .into_iter()
                            .chain(last_failure().map(|e| format!("last failure: {e}")))
                            .collect();
                    let last = if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", why.join("; "))
                    };
                    crate::log::warn(format_args!(
                        "no answer from Kafka for {} s{last}; {rest}",
                        backoff.elapsed().as_secs()
                    ));
                }
            }
        }
    }
}

/// Notes `e` as the failure to name if the time runs out: the last one, but an attempt cut short by
/// the deadline (a timeout) says less than a failure before it (a broker's refusal, an unanswered
/// request), so it does not replace one.
pub fn note_failure(telling: &mut Option<Error>, e: Error) {
    if !(e.is_timeout() && telling.is_some()) {
        *telling = Some(e);
    }
}

/// The error for an operation that ran out of time, carrying the last failure.
pub fn gave_up(backoff: &Backoff, last: Error) -> Error {
    match last {
        e @ Error::Deadline { .. } => e,
        last => Error::Deadline {
            ms: backoff.elapsed().as_millis() as u64,
            last: Box::new(last),
        },
    }
}

/// What a [`TroubleWatch`] has to say.
#[derive(Debug, PartialEq, Eq)]
pub enum TroubleNews {
    /// It has failed for this long, with this error.
    Failing(String, Duration),
    /// It works again, after failing for this long.
    Recovered(Duration),
}

/// Watches something that can fail for a while (a producer's deliveries, a consumer's fetches): says
/// when it has failed for `say_after` (a leader move retried within it is not said), again every
/// `repeat` while it fails, and once when it works again, if the failure was said.
#[derive(Debug)]
pub struct TroubleWatch {
    say_after: Duration,
    repeat: Option<Duration>,
    since: Option<Instant>,
    next: Option<Instant>,
    said: bool,
}

impl TroubleWatch {
    /// A watch saying failures after `say_after`, then every `repeat` (`None`: once).
    pub fn new(say_after: Duration, repeat: Option<Duration>) -> Self {
        TroubleWatch {
            say_after,
            repeat,
            since: None,
            next: None,
            said: false,
        }
    }

    /// Since when it fails, if it does (as of the last look).
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Looks at the trouble now (the failure, if any); what is to be said, if anything. A failure
    /// counts from the first look that sees it.
    pub fn look(&mut self, trouble: Option<String>, now: Instant) -> Option<TroubleNews> {
        self.look_at(trouble.map(|e| (e, now)), now)
    }

    /// As [`look`](Self::look), with the failure and when it began (when the watch first sees it).
    pub fn look_at(
        &mut self,
        trouble: Option<(String, Instant)>,
        now: Instant,
    ) -> Option<TroubleNews> {
        match trouble {
            Some((e, began)) => {
                let since = match self.since {
                    Some(s) => s,
                    None => {
                        self.since = Some(began);
                        self.next = Some(began + self.say_after);
                        began
                    }
                };
                if self.next.is_none_or(|t| now < t) {
                    return None;
                }
                self.next = self.repeat.map(|r| now + r);
                self.said = true;
                Some(TroubleNews::Failing(
                    e,
                    now.saturating_duration_since(since),
                ))
            }
            None => {
                let since = self.since.take()?;
                self.next = None;
                std::mem::take(&mut self.said)
                    .then(|| TroubleNews::Recovered(now.saturating_duration_since(since)))
            }
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

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_at_the_deadline_not_later() {
        let start = Instant::now();
        let mut attempts = 0;
        let r: Result<(), Error> = retry(Some(start + Duration::from_secs(3)), |_| {
            attempts += 1;
            async {
                Err(Error::NoLeader {
                    topic: "t".into(),
                    partition: 0,
                })
            }
        })
        .await;
        assert!(matches!(r, Err(Error::Deadline { .. })), "{r:?}");
        assert!(
            start.elapsed() <= Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        // About 100 ms growing to 1 s: a handful of attempts, not a spin.
        assert!((3..=12).contains(&attempts), "{attempts}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_cut_short_by_the_deadline_does_not_hide_the_failure_before_it() {
        let start = Instant::now();
        let mut attempts = 0;
        let r: Result<(), Error> = retry(Some(start + Duration::from_secs(3)), |_| {
            attempts += 1;
            let detail = if attempts == 1 {
                "Name does not resolve"
            } else {
                "timed out"
            };
            async move {
                Err(Error::Conn(crate::connection::ConnError::Resolve {
                    addr: "nosuchhost:9092".into(),
                    detail: detail.into(),
                }))
            }
        })
        .await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("Name does not resolve"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_cluster_is_told_after_a_few_seconds_and_then_seldom() {
        let told = std::sync::Mutex::new(None);
        let backoff = Backoff::until(Some(Instant::now() + Duration::from_secs(30)));
        let unbounded = Backoff::until(None);
        let refused = Error::Conn(crate::connection::ConnError::Connect {
            addr: "127.0.0.1:1".into(),
            detail: "Connection refused".into(),
        });
        assert_eq!(still_trying(&backoff, &refused, &told), None);
        tokio::time::advance(STILL_TRYING_AFTER).await;
        let line = still_trying(&backoff, &refused, &told).expect("told after 5 s");
        assert!(
            line.contains("127.0.0.1:1") && line.contains("Connection refused"),
            "{line}"
        );
        assert!(
            line.ends_with("still trying for up to 25 s (--timeout)"),
            "{line}"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(still_trying(&backoff, &refused, &told), None);
        let soon_over = Backoff::until(Some(Instant::now() + Duration::from_secs(1)));
        tokio::time::advance(STILL_TRYING_EVERY).await;
        assert_eq!(
            still_trying(&soon_over, &refused, &told),
            None,
            "not just before the error"
        );
        tokio::time::advance(STILL_TRYING_EVERY).await;
        let line = still_trying(&unbounded, &refused, &told).expect("told again after 30 s");
        assert!(
            line.ends_with("still trying (--timeout 0: until it answers)"),
            "{line}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_of_its_own_is_named_not_the_timeout() {
        let told = std::sync::Mutex::new(None);
        let refused = Error::Conn(crate::connection::ConnError::Connect {
            addr: "127.0.0.1:1".into(),
            detail: "Connection refused".into(),
        });
        let commit = Backoff::until(Some(Instant::now() + Duration::from_secs(10)));
        tokio::time::advance(STILL_TRYING_AFTER).await;
        let line = bounded_by("offset commit", async {
            still_trying(&commit, &refused, &told)
        })
        .await
        .expect("told after 5 s");
        assert!(
            line.ends_with("still trying for up to 5 s (offset commit)"),
            "{line}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_returns_a_permanent_error_at_once() {
        let mut attempts = 0;
        let r: Result<(), Error> = retry(None, |_| {
            attempts += 1;
            async { Err(Error::UnknownTopic { topic: "t".into() }) }
        })
        .await;
        assert!(matches!(r, Err(Error::UnknownTopic { .. })));
        assert_eq!(attempts, 1);
    }
}
