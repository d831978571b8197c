//! `shipper groups [GROUP]`: the consumer groups of a cluster, or one group's members, assignments,
//! committed offsets and lag, like `kafka-consumer-groups --list` / `--describe`.

use std::io::Write;
use std::time::Duration;

use crate::cli::{Common, GroupsArgs};
use crate::escape::Esc;
use crate::group::describe;
use crate::output;
use crate::settings::KafkaSettings;

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &GroupsArgs) -> anyhow::Result<i32> {
    let cluster = KafkaSettings::from_flags(common, Some(Duration::from_secs(30)))?.cluster()?;
    let mut out = crate::output::stdout();
    match &args.group {
        None => {
            let list = describe::list(&cluster).await?;
            if args.json {
                output::write_list_json(&mut out, &list.groups)?;
            } else {
                output::write_list_text(&mut out, &list.groups)?;
            }
            out.flush()?;
            // What the others answered is shown; the list is incomplete, which the exit code says.
            if !list.failed.is_empty() {
                for e in &list.failed {
                    crate::log::warn(format_args!(
                        "{e}; the groups that broker coordinates are not listed"
                    ));
                }
                anyhow::bail!(
                    "the list is incomplete: {} of the cluster's brokers did not answer",
                    list.failed.len()
                );
            }
        }
        Some(g) => {
            let d = match describe::describe(&cluster, g).await {
                Err(e) if e.code() == Some(crate::error::Code::GroupIdNotFound) => {
                    anyhow::bail!("group '{}' does not exist", Esc::str(g))
                }
                r => r?,
            };
            if d.state == "Dead" && d.members.is_empty() && d.partitions.is_empty() {
                anyhow::bail!("group '{}' does not exist", Esc::str(g));
            }
            if args.json {
                output::write_describe_json(&mut out, &d)?;
            } else {
                output::write_describe_text(&mut out, &d)?;
            }
            out.flush()?;
            // As the list: what answered is shown, and the exit code says the lag is incomplete
            // (t26: exit 0 with `-` rows, which a script checking lag took as a whole answer).
            let unknown = d.partitions.iter().filter(|p| p.end.is_none()).count();
            if unknown > 0 {
                anyhow::bail!(
                    "the lag is incomplete: the end offsets of {unknown} partition(s) are unknown"
                );
            }
        }
    }
    out.flush()?;
    Ok(0)
}
