//! Loads targets and service connections from a JSON file (such as
//! `events/targets.json`) into the stores, validating every config at the
//! edge exactly as an admin API would.

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use shared::domain::connection::Credentials;
use shared::domain::{DeliveryTarget, ServiceConnection, TargetConfig, Timestamp};
use shared::store::{ConnectionStore, TargetStore};
use std::collections::BTreeMap;

/// The seed file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    #[serde(default)]
    pub connections: Vec<SeedConnection>,
    pub targets: Vec<SeedTarget>,
}

/// A connection in the seed file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedConnection {
    pub id: String,
    pub kind: String,
    pub secrets: Vec<String>,
}

/// A target in the seed file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTarget {
    pub id: String,
    pub report_id: String,
    pub target_type: String,
    #[serde(default)]
    pub service_connection_id: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
    /// `pdf` (default) and/or `csv`.
    #[serde(default)]
    pub formats: Vec<shared::domain::target::Format>,
    /// Rows shown in the message (0–50; default 10, none for webhooks).
    #[serde(default)]
    pub preview_rows: Option<u8>,
    pub config: serde_json::Value,
}

fn yes() -> bool {
    true
}

/// Replaces `{{name}}` placeholders.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    vars.iter().fold(text.to_owned(), |acc, (k, v)| {
        acc.replace(&format!("{{{{{k}}}}}"), v)
    })
}

/// Parses a seed file after substitution, validating every target config.
pub fn parse(
    text: &str,
    vars: &BTreeMap<String, String>,
    allow_private_hosts: bool,
) -> Result<(Vec<ServiceConnection>, Vec<DeliveryTarget>)> {
    let file: SeedFile =
        serde_json::from_str(&substitute(text, vars)).context("seed file is not valid")?;
    let connections = file
        .connections
        .into_iter()
        .map(|c| {
            let credentials = Credentials::from_parts(&c.kind, c.secrets)
                .ok_or_else(|| anyhow!("connection {}: unknown kind or no secrets", c.id))?;
            Ok(ServiceConnection {
                id: c.id,
                credentials,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let now = Timestamp::now();
    let targets = file
        .targets
        .into_iter()
        .map(|t| {
            let config = TargetConfig::from_json(&t.target_type, t.config, allow_private_hosts)
                .with_context(|| format!("target {}", t.id))?;
            shared::domain::target::check_preview_rows(t.preview_rows)
                .map_err(|e| anyhow!("target {}: {e}", t.id))?;
            Ok(DeliveryTarget {
                id: t.id,
                report_id: t.report_id,
                service_connection_id: t.service_connection_id,
                config,
                formats: t.formats,
                preview_rows: t.preview_rows,
                active: t.active,
                disable_requested: None,
                consecutive_failures: 0,
                version: 1,
                created_at: now,
                updated_at: now,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((connections, targets))
}

/// Writes parsed connections and targets.
pub async fn store(
    connections: &[ServiceConnection],
    targets: &[DeliveryTarget],
    connection_store: &dyn ConnectionStore,
    target_store: &dyn TargetStore,
) -> Result<()> {
    for c in connections {
        connection_store.put_connection(c).await?;
    }
    for t in targets {
        target_store.put_target(t).await?;
    }
    Ok(())
}
