//! `shipper tail PATH... TOPIC` or `shipper tail --config FILE`: follow log files and ship every new
//! line, losing nothing.

use crate::cli::{Common, TailArgs};
use crate::error::Error;
use crate::escape::Esc;
use crate::producer::Producer;
use crate::settings::config;
use crate::settings::raise_open_files_limit;
use crate::settings::tail::TailSettings;

/// Descriptors kept free for sockets, the checkpoint and the dead-letter file.
const FD_RESERVE: u64 = 64;

/// The settings this command runs with: from the config file, or from the flags.
pub fn settings(common: &Common, args: &TailArgs) -> anyhow::Result<TailSettings> {
    match &args.config {
        Some(path) => config::load(path, common, args.metrics_listen.clone()),
        None => TailSettings::from_flags(common, args),
    }
}

/// Awaits `f`, a first question to the cluster, saying so when the cluster makes it wait (after 5 s,
/// then every minute): a tail started during an outage is not silent until Kafka answers.
async fn said_while_waiting<T>(brokers: &str, f: impl std::future::Future<Output = T>) -> T {
    let start = tokio::time::Instant::now();
    let mut next = start + std::time::Duration::from_secs(5);
    let mut f = std::pin::pin!(f);
    loop {
        tokio::select! {
            r = &mut f => return r,
            _ = tokio::time::sleep_until(next) => {
                crate::log::warn(format_args!(
                    "no answer from Kafka ({}) after {} s; still trying, and files are followed once it answers (-v shows each attempt)",
                    Esc::str(brokers),
                    start.elapsed().as_secs()
                ));
                next += std::time::Duration::from_secs(60);
            }
        }
    }
}

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &TailArgs) -> anyhow::Result<i32> {
    let mut s = settings(common, args)?;
    let cluster = s.kafka.cluster()?;
    let mut producer = Producer::new(cluster.clone(), s.producer.clone());
    // Topics named without placeholders must exist (or be creatable) now: a typo is said at once.
    let brokers = s.kafka.brokers.join(",");
    for input in &s.engine.inputs {
        if input.route.topic.is_constant() {
            let name =
                String::from_utf8_lossy(&input.route.topic.render(std::path::Path::new(""), ""))
                    .into_owned();
            if producer.topic_index(&name).is_none() {
                let meta = said_while_waiting(
                    &brokers,
                    cluster.topic(&name, s.producer.auto_create_topics),
                )
                .await?;
                producer.add_topic(meta);
            }
        }
    }
    let max_line = s
        .engine
        .limits
        .max_line_bytes
        .min(producer.max_value_bytes(0, 0));
    if max_line < s.engine.limits.max_line_bytes {
        crate::log::info(format_args!(
            "lines longer than {max_line} bytes will be truncated (largest record the topic takes)"
        ));
    }
    s.engine.limits.max_line_bytes = max_line;
    s.engine.limits.chunk_bytes = (1 << 20).max(max_line + 2);
    said_while_waiting(&brokers, producer.init())
        .await
        .map_err(|e: Error| anyhow::anyhow!(e))?;
    let limit = raise_open_files_limit();
    s.engine.max_open_files = limit.saturating_sub(FD_RESERVE).max(16) as usize;
    for i in &s.engine.inputs {
        crate::log::debug(format_args!(
            "input '{}': {} path(s)",
            Esc::str(&i.name),
            i.patterns.len()
        ));
    }
    let reload: Option<crate::tail::Reloader> = args.config.clone().map(|path| {
        let common = common.clone();
        let metrics = args.metrics_listen.clone();
        Box::new(move || config::load(&path, &common, metrics.clone())) as crate::tail::Reloader
    });
    crate::tail::run(s, producer, reload).await
}
