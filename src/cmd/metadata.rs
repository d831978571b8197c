//! `shipper metadata [TOPIC]`: brokers, topics and partitions, like `kcat -L`.

use std::io::Write;
use std::time::Duration;

use crate::cli::{Common, MetadataArgs};
use crate::error::{Code, Error};
use crate::output::{write_metadata_json, write_metadata_text};
use crate::settings::KafkaSettings;

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &MetadataArgs) -> anyhow::Result<i32> {
    if let Some(t) = &args.topic {
        crate::settings::check_topic_arg(t)?;
    }
    let cluster = KafkaSettings::from_flags(common, Some(Duration::from_secs(30)))?.cluster()?;
    let topics = args.topic.as_ref().map(|t| vec![t.clone()]);
    let md = cluster.metadata(topics.as_deref(), false).await?;
    if let Some(t) = &args.topic {
        if md
            .topics
            .iter()
            .any(|x| &x.name == t && x.error == Code::UnknownTopicOrPartition.code())
        {
            return Err(Error::UnknownTopic { topic: t.clone() }.into());
        }
    }
    let mut out = crate::output::stdout();
    if args.json {
        write_metadata_json(&mut out, &md)?;
    } else {
        write_metadata_text(&mut out, &md)?;
    }
    out.flush()?;
    Ok(0)
}
