//! `shipper web TOPIC...`: serve the page that shows the topics live (see [`crate::web`]).

use std::net::SocketAddr;
use std::time::Duration;

use crate::cli::{Common, WebArgs};
use crate::escape::Esc;
use crate::secret::{hide_in_process_title, Secret};
use crate::settings::{security::warn_if_readable, usage, KafkaSettings};
use crate::web::{serve, WebConfig};

/// The token: from --token-file, SHIPPER_WEB_TOKEN or --token (hidden from the process title).
fn token(args: &WebArgs) -> anyhow::Result<Option<Secret>> {
    if let Some(f) = &args.token_file {
        warn_if_readable(f, "token file");
        let text = crate::settings::read_text_bounded(f, crate::settings::MAX_SETTINGS_FILE)
            .map_err(|e| anyhow::anyhow!("cannot read --token-file {}: {e}", Esc::path(f)))?;
        let t = text.lines().next().unwrap_or_default().trim().to_string();
        if t.is_empty() {
            return usage(format!("--token-file {} is empty", Esc::path(f)));
        }
        return Ok(Some(Secret::new(t)));
    }
    if let Some(t) = &args.token {
        hide_in_process_title(t, t);
        // `--token "$TOKEN"` with TOKEN unset must not serve the topics to anyone.
        if t.trim().is_empty() {
            return usage("--token is empty; give a token (or --no-auth to serve without one)");
        }
        return Ok(Some(Secret::new(t.clone())));
    }
    Ok(std::env::var("SHIPPER_WEB_TOKEN")
        .ok()
        .filter(|t| !t.is_empty() && !args.no_auth)
        .map(Secret::new))
}

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &WebArgs) -> anyhow::Result<i32> {
    let addr: SocketAddr = match args.listen.parse() {
        Ok(a) => a,
        Err(_) => {
            return usage(format!(
                "--listen {}: use IP:PORT, e.g. 127.0.0.1:8080",
                Esc::str(&args.listen)
            ))
        }
    };
    let token = token(args)?;
    if !addr.ip().is_loopback() && token.is_none() && !args.no_auth {
        return usage(format!(
            "--listen {addr} lets other machines read these topics: give --token-file FILE (or SHIPPER_WEB_TOKEN), or --no-auth to serve them to anyone"
        ));
    }
    if args.no_auth && !addr.ip().is_loopback() {
        crate::log::warn(format_args!(
            "serving {addr} without a token (--no-auth): anyone who can reach it reads these topics"
        ));
    }
    for t in &args.topics {
        crate::settings::check_topic_arg(t)?;
    }
    // Each once, in the order given (helper-65: `web t t` listed t twice).
    let mut topics: Vec<String> = Vec::with_capacity(args.topics.len());
    for t in &args.topics {
        if !topics.contains(t) {
            topics.push(t.clone());
        }
    }
    let cluster = KafkaSettings::from_flags(common, Some(Duration::from_secs(30)))?.cluster()?;
    for t in &topics {
        cluster.topic(t, false).await?;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let shown = listener.local_addr().unwrap_or(addr);
    crate::log::info(format_args!(
        "serving {} on http://{shown}/{}",
        topics
            .iter()
            .map(|t| format!("'{}'", Esc::str(t)))
            .collect::<Vec<_>>()
            .join(", "),
        if token.is_some() { "?token=..." } else { "" }
    ));
    let cfg = WebConfig { topics, token };
    tokio::select! {
        _ = serve(listener, cluster, cfg) => {}
        _ = crate::tasks::stop_signal() => {}
    }
    Ok(0)
}
