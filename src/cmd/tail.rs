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

/// The lowest open files limit tail runs under: below it, scans and the checkpoint starve (t13: at
/// 16, nothing shipped; at 32 directory scans and the checkpoint failed). shipper itself holds ~16
/// (runtime, inotify, connections, the checkpoint's lock), and a scan of a tree opens directories.
const FD_FLOOR: u64 = 64;

/// How many log files may be open at once under the open files `limit`: what the reserve leaves
/// (half of a small limit). An error below [`FD_FLOOR`].
fn files_budget(limit: u64) -> Result<usize, String> {
    if limit < FD_FLOOR {
        return Err(format!(
            "the open files limit ({limit}) is too low for tail: it needs at least {FD_FLOOR} (raise ulimit -n, or LimitNOFILE= in a systemd unit)"
        ));
    }
    Ok((limit - FD_RESERVE.min(limit / 2)) as usize)
}

/// The settings this command runs with: from the config file, or from the flags.
pub fn settings(common: &Common, args: &TailArgs) -> anyhow::Result<TailSettings> {
    match &args.config {
        Some(path) => {
            // From here on, messages name the file's keys, not the flags it refuses (t33).
            let s = config::load(path, common, args.metrics_listen.clone());
            crate::log::speak_config_keys();
            s
        }
        None => TailSettings::from_flags(common, args),
    }
}

/// Whether a topic the cluster refuses now may become usable without a restart: created, or allowed
/// by the ACLs.
fn topic_may_come(e: &Error) -> bool {
    matches!(e, Error::UnknownTopic { .. } | Error::CannotCreate { .. })
        || e.code() == Some(crate::error::Code::TopicAuthorizationFailed)
}

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &TailArgs) -> anyhow::Result<i32> {
    let mut s = settings(common, args)?;
    s.engine.max_open_files =
        files_budget(raise_open_files_limit()).map_err(|e| anyhow::anyhow!(e))?;
    // Before any wait for Kafka: where `from_end` files end is where they are now.
    let prepared = crate::tail::prepare(&mut s.engine, &s.options)?;
    let reload: Option<crate::tail::Reloader> = args.config.clone().map(|path| {
        let common = common.clone();
        let metrics = args.metrics_listen.clone();
        std::sync::Arc::new(move || config::load(&path, &common, metrics.clone()))
            as crate::tail::Reloader
    });
    let mut startup = crate::tail::startup::Startup::new(
        s.options.metrics_listen.as_deref(),
        s.options.unhealthy_after,
        s.kafka.timeout,
        crate::tail::reload::Reloads::new(reload, s.options.clone()),
        s.engine.inputs.iter().map(|i| i.name.clone()).collect(),
        crate::tail::fixed_settings(&s),
    )
    .await?;
    let stopped = || {
        crate::log::info(format_args!(
            "stopping before Kafka answered: nothing was read yet"
        ));
        Ok(0)
    };
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
                let Some(meta) = startup
                    .wait(
                        &brokers,
                        cluster.topic(&name, s.producer.auto_create_topics),
                    )
                    .await
                else {
                    return stopped();
                };
                let meta = match meta.and_then(|m| m.writable()) {
                    Ok(m) => m,
                    // From a config file (a service), a topic missing or refused at start is waited
                    // for, as one a template names or a reload adds (said when its lines come):
                    // a systemd unit must not restart-loop on it. From the command line it is an
                    // error at once (a typo).
                    Err(e) if args.config.is_some() && topic_may_come(&e) => {
                        crate::log::debug(format_args!("at start: {e}"));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                producer.add_topic(meta);
            }
        }
    }
    let max_line = s
        .engine
        .limits
        .max_line_bytes
        .min(producer.max_value_bytes());
    if max_line < s.engine.limits.max_line_bytes {
        crate::log::info(format_args!(
            "lines longer than {max_line} bytes will be truncated: the largest record --max-message-bytes {} lets shipper send (less its key and headers); raise it for longer lines, if the topic's max.message.bytes takes them",
            producer.max_message_bytes()
        ));
    }
    s.engine.limits.max_line_bytes = max_line;
    s.engine.limits.chunk_bytes = (1 << 20).max(max_line + 2);
    match startup.wait(&brokers, producer.init()).await {
        None => return stopped(),
        Some(r) => r.map_err(|e: Error| anyhow::anyhow!(e))?,
    }
    for i in &s.engine.inputs {
        crate::log::debug(format_args!(
            "input '{}': {} path(s)",
            Esc::str(&i.name),
            i.patterns.len()
        ));
    }
    crate::tail::run(s, producer, startup, prepared).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_budget_leaves_room_for_scans_and_the_checkpoint() {
        assert!(files_budget(16).unwrap_err().contains("too low for tail"));
        assert!(files_budget(63).is_err());
        assert_eq!(files_budget(64), Ok(32));
        assert_eq!(files_budget(128), Ok(64));
        assert_eq!(files_budget(1 << 20), Ok((1 << 20) - 64));
    }
}
