//! `tail`'s settings: one model, from flags (one input) or from a config file (any number of inputs,
//! see [`super::config`]). The command runs whichever it gets the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{parse_headers, producer_config, usage, KafkaSettings};
use crate::cli::{Common, TailArgs};
use crate::producer::{OnPermanent, ProducerConfig};
use crate::tail::checkpoint;
use crate::tail::discover::{resolve_owners, FilePolicy, Pattern};
use crate::tail::follower::ReadLimits;
use crate::tail::route::{RouteSpec, Template};
use crate::tail::{EngineConfig, Input, TailOptions};

/// Everything `tail` runs with.
#[derive(Debug, Clone)]
pub struct TailSettings {
    /// The cluster.
    pub kafka: KafkaSettings,
    /// Batching and acknowledgements.
    pub producer: ProducerConfig,
    /// Inputs, file policy, limits.
    pub engine: EngineConfig,
    /// Checkpoint, intervals, dead letters, metrics.
    pub options: TailOptions,
    /// The config file these came from (SIGHUP reloads it).
    pub config_file: Option<PathBuf>,
}

/// Producer settings `tail` imposes: the file is the buffer, nothing is dropped because of a timer or
/// an error not about the records.
pub fn tail_producer(mut p: ProducerConfig, buffer_bytes: usize) -> ProducerConfig {
    p.buffer_bytes = buffer_bytes.max(2 * p.max_message_bytes);
    p.delivery_timeout = None;
    p.on_permanent = OnPermanent::Retry;
    p
}

/// Exactly-once needs acks=all and idempotence (the broker must refuse what it already has), and a
/// partition per file (not random); the producer then stops rather than change its id mid-run.
pub fn check_exactly_once(p: &mut ProducerConfig) -> Result<(), String> {
    if p.acks != -1 || !p.idempotence {
        return Err("exactly-once needs acks=all and idempotence (drop --acks/--no-idempotence or the config's acks/idempotence)".into());
    }
    // Sticky spreads a file's batches too (t28 F5: accepted, and silently not applied).
    if matches!(
        p.partitioner,
        crate::partitioner::Partitioner::Random | crate::partitioner::Partitioner::Sticky
    ) {
        return Err("exactly-once sends each file to one partition; the random and sticky partitioners cannot be used with it".into());
    }
    p.stop_on_state_loss = true;
    Ok(())
}

/// Checks a topic name given as it is (no placeholders): one Kafka would take, and not one of its
/// internal topics, which no client may write to.
pub fn check_topic(t: &Template, raw: &str) -> Result<(), String> {
    match super::topic_name_problem(raw) {
        Some(problem) if t.is_constant() => Err(problem),
        _ if t.is_constant() && super::internal_topic(raw) => {
            Err(super::internal_topic_problem(raw))
        }
        _ => Ok(()),
    }
}

impl TailSettings {
    /// The one-input case: `shipper tail PATH... TOPIC` and its flags.
    pub fn from_flags(common: &Common, args: &TailArgs) -> anyhow::Result<TailSettings> {
        let Some((topic, paths)) = args.paths_and_topic.split_last() else {
            return usage("give at least one PATH and a TOPIC, or --config FILE");
        };
        if paths.is_empty() {
            return usage("give at least one PATH and a TOPIC, or --config FILE");
        }
        let template = Template::literal(topic);
        check_topic(&template, topic)
            .map_err(|e| format!("{e} (the last argument is the topic)"))
            .or_else(usage)?;
        // `shipper tail app.log other.log`: the topic forgotten, the last file would be taken for
        // it and auto-created, with the other files shipped there unsaid (t28 F1).
        if let Ok(m) = std::fs::symlink_metadata(topic) {
            let what = if m.is_dir() { "a directory" } else { "a file" };
            return usage(format!(
                "'{}' is {what} here, but the last argument is the topic: did you forget the topic? (shipper tail PATH... TOPIC; run from another directory if it really is the topic)",
                crate::escape::Esc::str(topic)
            ));
        }
        let patterns = paths
            .iter()
            .map(|p| Pattern::new(p, &args.exclude))
            .collect::<Result<Vec<_>, _>>()
            .or_else(usage)?;
        let mut headers: Vec<(String, Template)> = args
            .path_header
            .iter()
            .map(|h| {
                (
                    h.clone(),
                    Template::parse("{path}").unwrap_or_else(|_| Template::literal("")),
                )
            })
            .collect();
        // -H values are templates, as a config file's headers are (`-H host={hostname}`).
        for (k, v) in parse_headers(&args.producer.headers)? {
            // (parse_headers refused a key that is not UTF-8.)
            let k = String::from_utf8_lossy(&k).into_owned();
            let Some(v) = v else {
                return usage(format!(
                    "-H {}: tail's -H takes key=value (a null value is for produce)",
                    crate::escape::Esc::str(&k)
                ));
            };
            let Ok(v) = String::from_utf8(v) else {
                return usage(format!(
                    "-H {}: tail's header values are text templates: not UTF-8",
                    crate::escape::Esc::str(&k)
                ));
            };
            let v = Template::parse(&v).or_else(|e| usage(format!("-H {k}: {e}")))?;
            headers.push((k, v));
        }
        let key = args
            .key
            .as_deref()
            .map(Template::parse)
            .transpose()
            .or_else(|e| usage(format!("--key: {e}")))?;
        let input = Input {
            name: paths.join(" "),
            patterns,
            route: RouteSpec {
                topic: template,
                key,
                headers,
            },
            multiline: None,
            from_end: args.from_end,
        };
        let owners = if args.owner.is_empty() {
            None
        } else {
            Some(resolve_owners(&args.owner, "--owner").or_else(usage)?)
        };
        let mut producer =
            tail_producer(producer_config(&args.producer)?, args.buffer_bytes as usize);
        if args.exactly_once {
            check_exactly_once(&mut producer).or_else(usage)?;
        }
        let hostname = crate::tail::route::hostname();
        Ok(TailSettings {
            // A log shipper keeps trying an unreachable cluster until told otherwise.
            kafka: KafkaSettings::from_flags(common, None)?,
            producer,
            engine: EngineConfig {
                inputs: vec![input],
                policy: Arc::new(FilePolicy {
                    follow_symlinks: args.follow_symlinks,
                    symlink_roots: args.symlink_root.clone(),
                    owners,
                    // Known once the checkpoint is (tail::run sets it).
                    own: Default::default(),
                }),
                limits: ReadLimits {
                    max_line_bytes: args.max_line_bytes as usize,
                    chunk_bytes: 1 << 20,
                },
                max_open_files: 0,
                exactly_once: args.exactly_once.then(|| hostname.clone()),
                hostname,
            },
            options: TailOptions {
                checkpoint: args
                    .checkpoint
                    .clone()
                    .map_or_else(|| checkpoint::default_path(topic).or_else(usage), Ok)?,
                scan_interval: Duration::from_millis(args.scan_ms),
                checkpoint_interval: Duration::from_millis(args.checkpoint_ms),
                stats_interval: args.stats.map(Duration::from_secs),
                shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
                dead_letter: args.dead_letter.clone(),
                metrics_listen: args.metrics_listen.clone(),
                unhealthy_after: Duration::from_secs(60),
            },
            config_file: None,
        })
    }
}
