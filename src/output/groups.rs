//! `shipper groups` output: text tables like `kafka-consumer-groups --list` / `--describe`, or JSON.
//! Every broker-supplied string is escaped.

use std::io::{self, Write};

use crate::escape::{json_quoted, Esc};
use crate::group::describe::{Described, Listed};

/// Writes rows as columns padded to the widest cell.
fn table(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn opt(v: Option<i64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn json_opt(v: Option<i64>) -> String {
    v.map_or("null".into(), |v| v.to_string())
}

/// The groups of a cluster as a table.
pub fn write_list_text(out: &mut impl Write, groups: &[Listed]) -> io::Result<()> {
    let mut rows = vec![vec![
        "GROUP".into(),
        "TYPE".into(),
        "PROTOCOL-TYPE".into(),
        "STATE".into(),
    ]];
    for g in groups {
        rows.push(vec![
            Esc::str(&g.group).to_string(),
            Esc::str(&g.group_type).to_string(),
            Esc::str(&g.protocol_type).to_string(),
            Esc::str(&g.state).to_string(),
        ]);
    }
    table(out, &rows)
}

/// The groups of a cluster as one JSON array.
pub fn write_list_json(out: &mut impl Write, groups: &[Listed]) -> io::Result<()> {
    let items: Vec<String> = groups
        .iter()
        .map(|g| {
            format!(
                "{{\"group\":{},\"type\":{},\"protocol_type\":{},\"state\":{}}}",
                json_quoted(&g.group),
                json_quoted(&g.group_type),
                json_quoted(&g.protocol_type),
                json_quoted(&g.state)
            )
        })
        .collect();
    writeln!(out, "[{}]", items.join(","))
}

/// One group: a summary line, then one row per partition with its member.
pub fn write_describe_text(out: &mut impl Write, d: &Described) -> io::Result<()> {
    writeln!(
        out,
        "Group '{}' ({} protocol{}): {}, {} member(s)",
        Esc::str(&d.group),
        d.protocol,
        if d.assignor.is_empty() {
            String::new()
        } else {
            format!(", assignor {}", Esc::str(&d.assignor))
        },
        Esc::str(&d.state),
        d.members.len()
    )?;
    let mut rows = vec![[
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]
    .map(String::from)
    .to_vec()];
    for p in &d.partitions {
        let m = p.member.and_then(|i| d.members.get(i));
        let field = |f: fn(&crate::group::describe::MemberInfo) -> &str| {
            m.map_or("-".to_string(), |m| Esc::str(f(m)).to_string())
        };
        rows.push(vec![
            Esc::str(&p.topic).to_string(),
            p.partition.to_string(),
            opt(p.committed),
            opt(p.end),
            opt(p.lag()),
            field(|m| &m.member_id),
            field(|m| &m.host),
            field(|m| &m.client_id),
        ]);
    }
    let idle: Vec<_> = d
        .members
        .iter()
        .filter(|m| m.assignment.is_empty())
        .collect();
    for m in idle {
        rows.push(vec![
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            Esc::str(&m.member_id).to_string(),
            Esc::str(&m.host).to_string(),
            Esc::str(&m.client_id).to_string(),
        ]);
    }
    table(out, &rows)
}

/// One group as one JSON object.
pub fn write_describe_json(out: &mut impl Write, d: &Described) -> io::Result<()> {
    let members: Vec<String> = d
        .members
        .iter()
        .map(|m| {
            let a: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, ps)| {
                    format!(
                        "{{\"topic\":{},\"partitions\":[{}]}}",
                        json_quoted(t),
                        crate::escape::partitions(ps)
                    )
                })
                .collect();
            format!(
                "{{\"member_id\":{},\"client_id\":{},\"host\":{},\"assignment\":[{}]}}",
                json_quoted(&m.member_id),
                json_quoted(&m.client_id),
                json_quoted(&m.host),
                a.join(",")
            )
        })
        .collect();
    let parts: Vec<String> = d
        .partitions
        .iter()
        .map(|p| {
            let member = p
                .member
                .and_then(|i| d.members.get(i))
                .map_or("null".into(), |m| json_quoted(&m.member_id));
            format!(
                "{{\"topic\":{},\"partition\":{},\"committed\":{},\"end\":{},\"lag\":{},\"member_id\":{}}}",
                json_quoted(&p.topic),
                p.partition,
                json_opt(p.committed),
                json_opt(p.end),
                json_opt(p.lag()),
                member
            )
        })
        .collect();
    writeln!(
        out,
        "{{\"group\":{},\"state\":{},\"protocol\":{},\"assignor\":{},\"members\":[{}],\"partitions\":[{}]}}",
        json_quoted(&d.group),
        json_quoted(&d.state),
        json_quoted(&d.protocol),
        json_quoted(&d.assignor),
        members.join(","),
        parts.join(",")
    )
}
