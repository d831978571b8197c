//! What `tail` does before Kafka has answered once: it already handles SIGINT, SIGTERM and SIGHUP (a
//! `systemctl reload` or `stop` during an outage must not kill it with the default action), and its
//! metrics server already answers (bound at once, so a bad address fails the start, and monitoring
//! sees a process waiting for Kafka rather than no process).

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::reload::{Reloaded, Reloads};
use crate::escape::Esc;
use crate::metrics::Ask;

/// The signals tail handles, registered once for the whole run.
pub struct Signals {
    /// SIGINT: stop.
    pub int: Signal,
    /// SIGTERM: stop.
    pub term: Signal,
    /// SIGHUP: reload the config.
    pub hup: Signal,
}

/// The signals and the metrics server, from the start of the run.
pub struct Startup {
    /// Handled from now on.
    pub signals: Signals,
    /// Questions from the metrics server, when it runs.
    pub asks: Option<mpsc::Receiver<Ask>>,
    /// The metrics server.
    pub server: Option<tokio::task::JoinHandle<()>>,
    /// SIGHUP's config reads: one may still be under way when Kafka answers.
    pub reloads: Reloads,
    /// The config SIGHUPs read while waiting (the last that loaded, with the `from_end` ends of all
    /// of them, earliest first): applied once running, before the first scan.
    pub pending: Option<Reloaded>,
    /// The names of the start config's inputs (a read's `from_end` inputs not among them are added).
    inputs: std::collections::HashSet<String>,
    /// The start config's settings a reload cannot change ([`super::fixed_settings`]).
    fixed: Vec<(&'static str, String)>,
    /// Whether the pending config's changes to them were said when it was read.
    pub fixed_said: bool,
    /// Seconds since the Unix epoch at start.
    pub started_unix: f64,
    since: Instant,
    unhealthy_after: Duration,
    /// `--timeout`: the retries give up then (no "still trying" shortly before).
    give_up: Option<Duration>,
    /// When the next "no answer" line is due: one schedule across the waits of a start (t10: a
    /// tail started in an outage said its 5-s line twice, once per wait).
    next_say: Instant,
}

impl Startup {
    /// Handles the signals and binds the metrics server (if `metrics_listen`), now. A SIGHUP reads
    /// the config with `reloads` at once (the `from_end` inputs it adds start where their files end
    /// then); `inputs` are the start config's.
    pub async fn new(
        metrics_listen: Option<&str>,
        unhealthy_after: Duration,
        give_up: Option<Duration>,
        reloads: Reloads,
        inputs: std::collections::HashSet<String>,
        fixed: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Startup> {
        let signals = Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        };
        let (mut asks, mut server) = (None, None);
        if let Some(addr) = metrics_listen {
            let (tx, rx) = mpsc::channel(8);
            let (s, bound) = crate::metrics::serve(addr, tx)
                .await
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on {}: {e}", Esc::str(addr)))?;
            // The address bound, not the one given: port 0 is a port chosen now (probe C: the line
            // said `http://127.0.0.1:0/metrics`), and a name shows what it resolved to.
            crate::log::info(format_args!(
                "metrics on http://{bound}/metrics, health on /healthz"
            ));
            (asks, server) = (Some(rx), Some(s));
        }
        Ok(Startup {
            signals,
            asks,
            server,
            reloads,
            pending: None,
            inputs,
            fixed,
            fixed_said: false,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            since: Instant::now(),
            unhealthy_after,
            give_up,
            next_say: Instant::now() + Duration::from_secs(5),
        })
    }

    /// Awaits `f`, a first question to the cluster, meanwhile answering metrics and signals, and saying
    /// so when the cluster makes it wait (after 5 s, then every minute, with the last failure): a
    /// tail started during an outage is not silent until Kafka answers. `None` when SIGINT or SIGTERM
    /// came first.
    pub async fn wait<T>(&mut self, brokers: &str, f: impl Future<Output = T>) -> Option<T> {
        let start = Instant::now();
        let mut f = std::pin::pin!(f);
        loop {
            tokio::select! {
                biased;
                r = &mut f => return Some(r),
                _ = self.signals.int.recv() => return None,
                _ = self.signals.term.recv() => return None,
                _ = self.signals.hup.recv() => self.reloads.hup(self.inputs.clone()),
                r = self.reloads.done(), if self.reloads.reading() => self.read(r),
                Some(ask) = recv(&mut self.asks) => self.answer(ask),
                _ = tokio::time::sleep_until(self.next_say) => {
                    self.next_say += Duration::from_secs(60);
                    // Giving up within a second: that error says it, not a "still trying".
                    if self.give_up.is_some_and(|t| start.elapsed() + Duration::from_secs(1) >= t) {
                        continue;
                    }
                    // Nothing failed yet: a connection or its first request still waits (t15: the
                    // hint that the port may not be Kafka's came with the timeout, at 65 s).
                    let why = crate::backoff::last_failure()
                        .map(|e| format!(" (last: {e})"))
                        .unwrap_or_else(|| {
                            " (nothing failed yet: a connection or its first request is still waiting; is this a Kafka listener? a server of another protocol, such as HTTP, waits without answering)".into()
                        });
                    crate::log::warn(format_args!(
                        "no answer from Kafka ({}) after {} s{why}; still trying, and files are followed once it answers",
                        Esc::str(brokers),
                        self.since.elapsed().as_secs()
                    ));
                }
            }
        }
    }

    /// A config read at a SIGHUP while waiting: kept to be applied once running (helper-64 F3: it
    /// was read only then, and a `from_end` input it added skipped what its files got meanwhile).
    fn read(&mut self, r: anyhow::Result<Reloaded>) {
        match r {
            Err(e) => crate::log::error(format_args!(
                "config not reloaded, the running one stays: {e:#}"
            )),
            Ok(mut new) => {
                if let Some(old) = self.pending.take() {
                    // An end taken earlier wins: the lines after it were written since.
                    new.ends.splice(0..0, old.ends);
                }
                // What cannot change without a restart is said now, not once Kafka answers: a
                // wrong `brokers` fixed in the file would never answer (helper-73 F1: "it takes
                // effect once Kafka answers", and the old brokers were tried for ever).
                let changed: Vec<&str> = super::fixed_settings(&new.settings)
                    .iter()
                    .zip(&self.fixed)
                    .filter(|(a, b)| a.1 != b.1)
                    .map(|(a, _)| a.0)
                    .collect();
                self.fixed_said = !changed.is_empty();
                self.pending = Some(new);
                if changed.is_empty() {
                    crate::log::info(format_args!(
                        "config read (SIGHUP); it takes effect once Kafka answers"
                    ));
                } else {
                    crate::log::warn(format_args!(
                        "config read (SIGHUP): {} changed; that takes effect only at a restart (nothing was read from the files yet: restart to use them now); the rest takes effect once Kafka answers",
                        changed.join(", ")
                    ));
                }
            }
        }
        if self.reloads.again() {
            self.reloads.hup(self.inputs.clone());
        }
    }

    fn answer(&self, ask: Ask) {
        let waited = self.since.elapsed();
        match ask {
            Ask::Metrics(r) => drop(r.send(super::exposition::starting(waited, self.started_unix))),
            Ask::Health(r) => drop(r.send(if waited >= self.unhealthy_after {
                Err(format!(
                    "waiting for Kafka for {:.0}s since the start{}",
                    waited.as_secs_f64(),
                    crate::backoff::last_failure()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ))
            } else {
                Ok(())
            })),
        }
    }
}

/// The next question, if there is a server (else never).
pub async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
