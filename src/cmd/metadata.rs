//! `shipper metadata [TOPIC]`: brokers, topics and partitions, like `kcat -L`.

use std::io::Write;

use crate::cli::{Common, MetadataArgs};
use crate::cluster::Metadata;

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &MetadataArgs) -> anyhow::Result<i32> {
    let cluster = super::cluster(common, Some(std::time::Duration::from_secs(30)))?;
    let topics = args.topic.as_ref().map(|t| vec![t.clone()]);
    let md = cluster.metadata(topics.as_deref(), false).await?;
    if let Some(t) = &args.topic {
        if md.topics.iter().any(|x| &x.name == t && x.error == 3) {
            anyhow::bail!("topic '{t}' does not exist");
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        write_json(&mut out, &md)?;
    } else {
        write_text(&mut out, &md)?;
    }
    out.flush()?;
    Ok(0)
}

fn ids(v: &[i32]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn write_text(out: &mut impl Write, md: &Metadata) -> std::io::Result<()> {
    writeln!(
        out,
        "Metadata for cluster {}:",
        md.cluster_id.as_deref().unwrap_or("(unknown id)")
    )?;
    writeln!(out, " {} brokers:", md.brokers.len())?;
    for b in &md.brokers {
        let ctl = if b.id == md.controller {
            " (controller)"
        } else {
            ""
        };
        writeln!(out, "  broker {} at {}{ctl}", b.id, b.addr())?;
    }
    writeln!(out, " {} topics:", md.topics.len())?;
    for t in &md.topics {
        let err = if t.error != 0 {
            format!(" error: {}", crate::error::kafka_error_name(t.error))
        } else {
            String::new()
        };
        writeln!(
            out,
            "  topic \"{}\" with {} partitions:{err}",
            t.name,
            t.partitions.len()
        )?;
        for p in &t.partitions {
            let err = if p.error != 0 {
                format!(" error: {}", crate::error::kafka_error_name(p.error))
            } else {
                String::new()
            };
            writeln!(
                out,
                "    partition {}, leader {}, replicas: {}, isrs: {}{err}",
                p.id,
                p.leader,
                ids(&p.replicas),
                ids(&p.isr)
            )?;
        }
    }
    Ok(())
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn write_json(out: &mut impl Write, md: &Metadata) -> std::io::Result<()> {
    let brokers: Vec<String> = md
        .brokers
        .iter()
        .map(|b| {
            format!(
                "{{\"id\":{},\"host\":{},\"port\":{}}}",
                b.id,
                json_str(&b.host),
                b.port
            )
        })
        .collect();
    let topics: Vec<String> = md
        .topics
        .iter()
        .map(|t| {
            let parts: Vec<String> = t
                .partitions
                .iter()
                .map(|p| {
                    format!(
                        "{{\"partition\":{},\"leader\":{},\"replicas\":[{}],\"isrs\":[{}],\"error\":{}}}",
                        p.id,
                        p.leader,
                        ids(&p.replicas),
                        ids(&p.isr),
                        p.error
                    )
                })
                .collect();
            format!(
                "{{\"topic\":{},\"error\":{},\"partitions\":[{}]}}",
                json_str(&t.name),
                t.error,
                parts.join(",")
            )
        })
        .collect();
    writeln!(
        out,
        "{{\"cluster_id\":{},\"controller\":{},\"brokers\":[{}],\"topics\":[{}]}}",
        md.cluster_id.as_deref().map_or("null".into(), json_str),
        md.controller,
        brokers.join(","),
        topics.join(",")
    )
}
