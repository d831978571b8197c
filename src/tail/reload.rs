//! SIGHUP's config reads: one at a time, on a blocking thread (a config path that is a FIFO may take
//! its time, and the agent ships, answers `/metrics` and stops meanwhile). A SIGHUP during a read
//! reads the file once more after it (it may have changed after it was read). Used both while
//! waiting for Kafka at start ([`super::startup`]) and while running.

use std::collections::HashSet;

use tokio::task::JoinHandle;

use super::{checkpoint, from_end, with_own_files, TailOptions};

/// Reads the settings again (SIGHUP): from the config file, with the same command-line overrides.
pub type Reloader =
    std::sync::Arc<dyn Fn() -> anyhow::Result<crate::settings::tail::TailSettings> + Send + Sync>;

/// A config read for a reload, with the ends of the files of the `from_end` inputs it adds, taken
/// when it was read.
pub struct Reloaded {
    /// The settings read.
    pub settings: crate::settings::tail::TailSettings,
    /// Where the files of the `from_end` inputs it adds ended when it was read.
    pub ends: Vec<checkpoint::Entry>,
}

/// The config reads of one run.
pub struct Reloads {
    reloader: Option<Reloader>,
    opts: TailOptions,
    reading: Option<JoinHandle<anyhow::Result<Reloaded>>>,
    again: bool,
}

impl Reloads {
    /// Reads with `reloader` (none: tail runs from flags, and a SIGHUP says so).
    pub fn new(reloader: Option<Reloader>, opts: TailOptions) -> Reloads {
        Reloads {
            reloader,
            opts,
            reading: None,
            again: false,
        }
    }

    /// SIGHUP: starts reading the config, unless a read is under way (then it reads once more after
    /// it, see [`Self::again`]). `before`: the names of the inputs the running config has; an input
    /// the read adds with `from_end` starts its files where they end now.
    pub fn hup(&mut self, before: HashSet<String>) {
        let Some(reload) = &self.reloader else {
            crate::log::info(format_args!(
                "SIGHUP: no config file to reload (tail runs from flags)"
            ));
            return;
        };
        if self.reading.is_some() {
            self.again = true;
            return;
        }
        let (reload, opts) = (reload.clone(), self.opts.clone());
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut new = reload()?;
            // The TLS files are read as a start reads them: a renewal that broke them is refused
            // now, not found at the next restart (t17 F1: garbage, or a key not the certificate's,
            // was "reloaded").
            if let Some(Err(e)) = new
                .kafka
                .security
                .tls
                .as_ref()
                .map(crate::connection::client_config)
            {
                anyhow::bail!("TLS: {e} (a start would fail)");
            }
            with_own_files(&mut new.engine, &opts);
            let mut added = new.engine.clone();
            for i in &mut added.inputs {
                i.from_end &= !before.contains(&i.name);
            }
            let ends = from_end::ends(&added, &[], None).entries;
            Ok(Reloaded {
                settings: new,
                ends,
            })
        }));
    }

    /// Whether a read is under way.
    pub fn reading(&self) -> bool {
        self.reading.is_some()
    }

    /// The read under way, when it is done (never, if none is). Cancel-safe.
    pub async fn done(&mut self) -> anyhow::Result<Reloaded> {
        if self.reading.is_none() {
            std::future::pending::<()>().await;
        }
        crate::tasks::join_slot(&mut self.reading)
            .await
            .unwrap_or_else(|| Err(anyhow::anyhow!("the reload failed")))
    }

    /// Whether a SIGHUP came during the read just done (the file is to be read once more).
    pub fn again(&mut self) -> bool {
        std::mem::take(&mut self.again)
    }
}
