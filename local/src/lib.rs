//! The local stack: reads `template.yaml`, provisions its queues, tables and
//! bucket in moto, runs the real function binaries behind a local Lambda
//! Runtime API with SQS event-source-mapping semantics, and hosts receivers
//! (sinks) that speak the channels' protocols and can inject faults.

pub mod bench;
pub mod bench_model;
pub mod chaos;
pub mod model;
pub mod preview;
pub mod provision;
pub mod runner;
pub mod seed;
pub mod ses_sim;
pub mod sinks;
pub mod slack;
pub mod stack;
pub mod template;
pub mod tls;
pub mod up;

use anyhow::{Context, Result};

/// Fallbacks for moto, which accepts any credentials.
pub const TEST_ACCESS_KEY: &str = "testing";
/// Region used when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The moto endpoint from `AWS_ENDPOINT_URL`; the local stack never talks
/// to real AWS.
pub fn endpoint() -> Result<String> {
    std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .context("AWS_ENDPOINT_URL is not set; run `make demo` or `make test`, which start moto and set it")
}

/// SDK config for the local stack: the environment's, with test credentials
/// and region filled in when absent, always pointed at moto.
pub async fn sdk_config() -> Result<aws_config::SdkConfig> {
    sdk_config_at(&endpoint()?).await
}

/// SDK config for a local stack on a given moto endpoint.
pub async fn sdk_config_at(endpoint: &str) -> Result<aws_config::SdkConfig> {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(endpoint);
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            TEST_ACCESS_KEY,
            TEST_ACCESS_KEY,
            None,
            None,
            "local",
        ));
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        loader = loader.region(aws_config::Region::new(DEFAULT_REGION));
    }
    Ok(loader.load().await)
}

/// The region the local stack uses.
pub fn region(config: &aws_config::SdkConfig) -> String {
    config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| DEFAULT_REGION.to_owned())
}
