//! Builds AWS SDK clients once per process. Every client honours
//! `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_<SERVICE>`) through aws-config;
//! S3 switches to path-style addressing when an endpoint is overridden,
//! as moto and other local stacks need.

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use std::time::Duration;

/// Loads the shared SDK config from the environment, with [`timeouts`].
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .load()
        .await
}

/// Every SDK call has a deadline: a hung connection or a silent service
/// ends in a temporary error (retried by the SDK, then by the caller)
/// instead of holding an invocation to its Lambda timeout. An attempt gets
/// 10 s (the longest call is an SES send of a 10 MB message or an S3 put
/// of a large report), a call with its SDK retries 25 s; SQS long polls
/// wait at most 1 s.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(25))
        .build()
}

/// An S3 client; path-style when a custom endpoint is in use.
pub fn s3(config: &SdkConfig) -> aws_sdk_s3::Client {
    let custom = std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let conf = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(custom)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A DynamoDB client.
pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// An SQS client.
pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// An SES v2 client that never repeats a call itself. A send is not
/// idempotent: had the SDK retried one whose answer was lost (an attempt
/// timeout), the mail would go out twice with one success on the record.
/// The failure reaches deliver instead, which records the try and retries
/// by its policy.
pub fn sesv2(config: &SdkConfig) -> aws_sdk_sesv2::Client {
    let conf = aws_sdk_sesv2::config::Builder::from(config)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sesv2::Client::from_conf(conf)
}

/// A KMS client.
pub fn kms(config: &SdkConfig) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_client_config_carries_connect_attempt_and_operation_timeouts() {
        let config = load().await;
        let t = config.timeout_config().expect("a timeout config");
        assert_eq!(t.connect_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(25)));
        // Longer than the longest SQS long poll the functions make (1 s)
        assert!(t.operation_attempt_timeout() > Some(Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn the_ses_client_never_repeats_a_send_itself() {
        let ses = sesv2(&load().await);
        let retry = ses.config().retry_config().expect("a retry config");
        assert_eq!(retry.max_attempts(), 1);
    }
}
