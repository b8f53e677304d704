//! One local stack end to end: provisioned resources, stores, a webhook
//! sink and the runner. Used by the demo and the end-to-end tests.

use crate::provision::{Stack, provision};
use crate::runner::{Runner, RunnerConfig};
use crate::sinks::WebhookSink;
use crate::slack::SlackSink;
use crate::template::Template;
use anyhow::{Context, Result, bail};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use shared::domain::DeliveryAttempt;
use shared::store::AttemptStore;
use shared::store::dynamo::{DynamoStore, Tables};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository root (where `template.yaml` lives).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The directory holding the built function binaries: the nearest ancestor
/// of this executable that contains `render`.
pub fn binaries_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("render").is_file())
        .map(Path::to_path_buf)
        .context(
            "function binaries not found next to this executable; run `cargo build --bins` first",
        )
}

/// Verifies the local sender identity, as an operator does in SES.
async fn verify_sender(sdk: &aws_config::SdkConfig) -> Result<()> {
    let created = aws_sdk_sesv2::Client::new(sdk)
        .create_email_identity()
        .email_identity(LOCAL_EMAIL_DOMAIN)
        .send()
        .await;
    if let Err(e) = created
        && !e
            .as_service_error()
            .is_some_and(|s| s.is_already_exists_exception())
    {
        return Err(e).context("creating the SES identity in moto");
    }
    Ok(())
}

/// A running local stack.
pub struct LocalStack {
    /// The moto endpoint it lives on.
    pub endpoint: String,
    pub sdk: aws_config::SdkConfig,
    pub template: Template,
    pub stack: Stack,
    pub store: DynamoStore,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub webhook: WebhookSink,
    pub slack: SlackSink,
    /// SES's mailbox simulator in front of moto's SES: deliver sends
    /// through it, and it publishes SES's events to the feedback queue.
    pub ses: crate::ses_sim::SesSimulator,
    pub runner: Option<Runner>,
    pub work_dir: PathBuf,
}

impl LocalStack {
    /// Provisions a stack named `prefix` and starts the webhook sink;
    /// captures and function logs go under `work_dir`.
    pub async fn up(prefix: &str, work_dir: &Path) -> Result<Self> {
        Self::up_with(prefix, work_dir, |_| Ok(())).await
    }

    /// Like [`Self::up`], with the template edited first (e.g. shorter
    /// timeouts, so tests that wait for redeliveries finish quickly).
    pub async fn up_with(
        prefix: &str,
        work_dir: &Path,
        edit: impl FnOnce(&mut Template) -> Result<()>,
    ) -> Result<Self> {
        Self::up_at(prefix, work_dir, &crate::endpoint()?, edit).await
    }

    /// Like [`Self::up_with`], on a moto server of its own at `endpoint`.
    pub async fn up_at(
        prefix: &str,
        work_dir: &Path,
        endpoint: &str,
        edit: impl FnOnce(&mut Template) -> Result<()>,
    ) -> Result<Self> {
        let sdk = crate::sdk_config_at(endpoint).await?;
        let mut template = Template::load(&project_root().join("template.yaml"))?;
        edit(&mut template)?;
        let stack = provision(&sdk, &template, prefix).await?;
        Self::assemble(endpoint, sdk, template, stack, work_dir).await
    }

    /// The stack `prefix` as a stopped `local up` left it in moto (its
    /// queues, tables and bucket kept their contents), or a new one. The
    /// flag says whether it was resumed.
    pub async fn resume_or_up(prefix: &str, work_dir: &Path) -> Result<(Self, bool)> {
        let endpoint = crate::endpoint()?;
        let sdk = crate::sdk_config_at(&endpoint).await?;
        let template = Template::load(&project_root().join("template.yaml"))?;
        match crate::provision::adopt(&sdk, &template, prefix).await? {
            Some(stack) => Ok((
                Self::assemble(&endpoint, sdk, template, stack, work_dir).await?,
                true,
            )),
            None => Ok((Self::up(prefix, work_dir).await?, false)),
        }
    }

    /// The stack's clients, store and sinks around provisioned resources.
    async fn assemble(
        endpoint: &str,
        sdk: aws_config::SdkConfig,
        template: Template,
        stack: Stack,
        work_dir: &Path,
    ) -> Result<Self> {
        let tables = Tables {
            targets: stack.table("TargetsTable")?.to_owned(),
            attempts: stack.table("AttemptsTable")?.to_owned(),
            executions: stack.table("ExecutionsTable")?.to_owned(),
            connections: stack.table("ConnectionsTable")?.to_owned(),
            rate_limits: stack.table("RateLimitsTable")?.to_owned(),
            stats: stack.table("StatsTable")?.to_owned(),
            suppressions: stack.table("SuppressionsTable")?.to_owned(),
        };
        // Seeds seal connection secrets as deliver and the API do.
        let sealer = stack.keys.get("ConnectionsKey").map(|(alias, _)| {
            std::sync::Arc::new(shared::keys::Sealer::new(Box::new(
                shared::keys::kms::KmsKeys::new(shared::aws::kms(&sdk), alias.clone()),
            )))
        });
        let store =
            DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), tables).with_sealer(sealer);
        let webhook = WebhookSink::start(None, Some(work_dir.join("captures/webhook"))).await?;
        let slack = SlackSink::start(Some(work_dir.join("captures/slack"))).await?;
        let ses = crate::ses_sim::SesSimulator::start(
            endpoint,
            aws_sdk_sqs::Client::new(&sdk),
            stack.queue_url("FeedbackQueue")?,
            &stack
                .lookup("FeedbackTopic", None)
                .context("the template has no FeedbackTopic")?,
        )
        .await?;
        verify_sender(&sdk).await?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            s3: shared::aws::s3(&sdk),
            sdk,
            template,
            stack,
            store,
            webhook,
            slack,
            ses,
            runner: None,
            work_dir: work_dir.to_owned(),
        })
    }

    /// Provisions the stack again under the same names, e.g. after the
    /// emulator was restarted and lost its state; running functions keep
    /// their settings and carry on.
    pub async fn reprovision(&mut self) -> Result<()> {
        self.stack = provision(&self.sdk, &self.template, &self.stack.prefix).await?;
        verify_sender(&self.sdk).await
    }

    /// Starts the runner. Local stacks allow webhooks to 127.0.0.1 (the
    /// sink) through the explicit setting; `overrides` add or replace more.
    pub async fn start_runner(&mut self, overrides: &[(&str, &str)]) -> Result<()> {
        let mut env: BTreeMap<String, String> = [
            ("ALLOW_PRIVATE_WEBHOOK_TARGETS", "true"),
            ("EMAIL_FROM_ADDRESS", LOCAL_EMAIL_FROM),
            ("SLACK_API_BASE_URL", &self.slack.api_base()),
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_ENDPOINT_URL_SESV2", &self.ses.url),
            ("SES_CONFIGURATION_SET", &self.configuration_set()),
            // RFC 8058 wants an HTTPS URI: the links function's HTTPS front.
            ("UNSUBSCRIBE_BASE_URL", "{{https:LinksFunction}}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let config = RunnerConfig {
            binaries_dir: binaries_dir()?,
            log_dir: self.work_dir.join("logs"),
            env_overrides: env,
            poll_wait_secs: 1,
        };
        self.runner = Some(Runner::start(&self.sdk, &self.template, &self.stack, config).await?);
        Ok(())
    }

    /// The SES configuration set local sends use (moto keeps none; the
    /// simulator and the feedback function agree on the name).
    pub fn configuration_set(&self) -> String {
        format!("{}-reports", self.stack.prefix)
    }

    /// Loads a seed file, substituting `{{webhook_sink_url}}`,
    /// `{{slack_webhook_url}}` and `{{slack_bot_token}}`.
    pub async fn seed(&self, text: &str) -> Result<()> {
        let (connections, targets) = crate::seed::parse(text, &self.seed_vars(), true)?;
        crate::seed::store(&connections, &targets, &self.store, &self.store).await
    }

    /// Creates a seed file's connections and targets through the operator
    /// API (`POST /connections`, `POST /targets`), as a user would; the
    /// runner must be started. Returns (connections, targets) created.
    pub async fn seed_via_api(&self, text: &str) -> Result<(usize, usize)> {
        let base = self
            .runner
            .as_ref()
            .and_then(|r| r.function_urls.get("ApiFunction"))
            .context("the API function is not running; start the runner first")?;
        let file: serde_json::Value =
            serde_json::from_str(&crate::seed::substitute(text, &self.seed_vars()))
                .context("seed file is not JSON")?;
        let client = reqwest::Client::new();
        let mut counts = (0, 0);
        for (path, items, count) in [
            ("connections", &file["connections"], &mut counts.0),
            ("targets", &file["targets"], &mut counts.1),
        ] {
            for item in items.as_array().into_iter().flatten() {
                let r = client
                    .post(format!("{base}{path}"))
                    .header("x-amz-date", "20261127T000000Z")
                    .header(
                        "authorization",
                        "AWS4-HMAC-SHA256 Credential=local-operator/20261127/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=local",
                    )
                    .json(item)
                    .send()
                    .await?;
                let status = r.status();
                if status.as_u16() != 201 {
                    let problem = r.text().await.unwrap_or_default();
                    bail!("POST /{path} {} answered {status}: {problem}", item["id"]);
                }
                *count += 1;
            }
        }
        Ok(counts)
    }

    /// What `{{…}}` in seed files stands for on this stack.
    fn seed_vars(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("webhook_sink_url".to_owned(), self.webhook.url.clone()),
            (
                "slack_webhook_url".to_owned(),
                self.slack.webhook_url("reports"),
            ),
            (
                "slack_bot_token".to_owned(),
                crate::slack::LOCAL_BOT_TOKEN.to_owned(),
            ),
        ])
    }

    /// Puts a raw body on a queue by logical id.
    pub async fn send(&self, queue: &str, body: &str) -> Result<()> {
        self.sqs
            .send_message()
            .queue_url(self.stack.queue_url(queue)?)
            .message_body(body)
            .send()
            .await?;
        Ok(())
    }

    /// Waits until `expected` attempts of the execution exist and all are
    /// delivered or failed.
    pub async fn wait_settled(
        &self,
        execution_id: &str,
        expected: usize,
        timeout: Duration,
    ) -> Result<Vec<DeliveryAttempt>> {
        let start = Instant::now();
        loop {
            let attempts = self.store.by_execution(execution_id).await?;
            if attempts.len() >= expected && attempts.iter().all(DeliveryAttempt::is_settled) {
                return Ok(attempts);
            }
            if start.elapsed() > timeout {
                bail!(
                    "execution {execution_id} did not settle in {timeout:?}: {:?}",
                    attempts
                        .iter()
                        .map(|a| (&a.delivery_target_id, a.status))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Receives (and deletes) up to 10 messages from a queue, waiting up to
    /// `wait` for the first. Returns (body, attributes) pairs.
    pub async fn drain(&self, queue: &str, wait: Duration) -> Result<Vec<DrainedMessage>> {
        let url = self.stack.queue_url(queue)?;
        let start = Instant::now();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await?;
            let messages = out.messages.unwrap_or_default();
            if !messages.is_empty() || start.elapsed() >= wait {
                let mut drained = Vec::new();
                for m in messages {
                    if let Some(h) = m.receipt_handle() {
                        self.sqs
                            .delete_message()
                            .queue_url(url)
                            .receipt_handle(h)
                            .send()
                            .await?;
                    }
                    drained.push(DrainedMessage {
                        body: m.body().unwrap_or_default().to_owned(),
                        attributes: m
                            .message_attributes()
                            .map(|a| {
                                a.iter()
                                    .map(|(k, v)| {
                                        (k.clone(), v.string_value().unwrap_or_default().to_owned())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
                return Ok(drained);
            }
        }
    }

    /// Approximate visible + in-flight messages on a queue.
    pub async fn depth(&self, queue: &str) -> Result<u64> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(self.stack.queue_url(queue)?)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?;
        let attrs = out.attributes.unwrap_or_default();
        let n = |k: &QueueAttributeName| {
            attrs
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(n(&QueueAttributeName::ApproximateNumberOfMessages)
            + n(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    /// Reads an object from the reports bucket.
    pub async fn object(&self, key: &str) -> Result<Vec<u8>> {
        let bucket = self
            .stack
            .buckets
            .get("ReportsBucket")
            .context("no ReportsBucket")?;
        let out = self.s3.get_object().bucket(bucket).key(key).send().await?;
        Ok(out.body.collect().await?.into_bytes().to_vec())
    }

    /// The emails SES (moto) accepted for an execution, as raw MIME, read
    /// back through moto's state API and matched on the
    /// `X-Report-Execution-Id` header.
    pub async fn emails(&self, execution_id: &str) -> Result<Vec<SentEmail>> {
        let url = format!("{}/moto-api/data.json", self.endpoint.trim_end_matches('/'));
        // moto serialises every model for this endpoint and can fail with a
        // 500 while another request mutates one; ask again.
        let mut tries = 0;
        let data: serde_json::Value = loop {
            tries += 1;
            match reqwest::get(&url).await?.error_for_status() {
                Ok(r) => break r.json().await?,
                Err(e) if tries >= 10 => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        };
        let needle = format!("X-Report-Execution-Id: {execution_id}");
        let mut found = Vec::new();
        let mut stack = vec![&data];
        // moto nests sent messages by service, account and region; search
        // the whole tree for raw messages.
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(raw) = o.get("raw_data").and_then(|r| r.as_str())
                        && raw
                            .match_indices(&needle)
                            .any(|(i, _)| raw[i + needle.len()..].starts_with(['\r', '\n']))
                    {
                        let strings = |k: &str| -> Vec<String> {
                            o.get(k)
                                .and_then(|d| d.as_array())
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|x| x.as_str().map(str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default()
                        };
                        found.push(SentEmail {
                            raw: raw.to_owned(),
                            destinations: strings("destinations"),
                            source: o
                                .get("source")
                                .and_then(|s| s.as_str())
                                .unwrap_or_default()
                                .to_owned(),
                        });
                    } else {
                        stack.extend(o.values());
                    }
                }
                serde_json::Value::Array(a) => stack.extend(a.iter()),
                _ => {}
            }
        }
        Ok(found)
    }

    /// Writes the emails of an execution to `captures/email/*.eml`.
    pub async fn capture_emails(&self, execution_id: &str) -> Result<Vec<PathBuf>> {
        let dir = self.work_dir.join("captures/email");
        std::fs::create_dir_all(&dir)?;
        let mut paths = Vec::new();
        for (i, m) in self.emails(execution_id).await?.iter().enumerate() {
            let path = dir.join(format!("{execution_id}-{i}.eml"));
            std::fs::write(&path, &m.raw)?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// The link signing keys as the functions read them from Secrets Manager.
    pub async fn link_keys(&self) -> Result<String> {
        let arn = self
            .stack
            .secrets
            .get("LinkSigningSecret")
            .context("no LinkSigningSecret")?;
        let out = aws_sdk_secretsmanager::Client::new(&self.sdk)
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await?;
        out.secret_string.context("secret has no string")
    }

    /// The running host of a function binary (e.g. `deliver`), to kill,
    /// throttle or invoke it.
    pub fn function(&self, binary: &str) -> Result<std::sync::Arc<crate::runner::FunctionHost>> {
        self.runner
            .as_ref()
            .and_then(|r| r.host(binary))
            .cloned()
            .with_context(|| format!("no running function {binary}; start the runner first"))
    }

    /// Stops the runner.
    pub async fn down(mut self) {
        if let Some(r) = self.runner.take() {
            r.stop().await;
        }
    }
}

/// One email as SES received it.
#[derive(Debug, Clone)]
pub struct SentEmail {
    /// The raw MIME message.
    pub raw: String,
    /// Envelope recipients (To, Cc and Bcc).
    pub destinations: Vec<String>,
    pub source: String,
}

/// The verified SES domain of the local stack.
pub const LOCAL_EMAIL_DOMAIN: &str = "reports.example.com";
/// The From address of the local stack.
pub const LOCAL_EMAIL_FROM: &str = "reports@reports.example.com";

/// A message taken off a queue.
#[derive(Debug, Clone)]
pub struct DrainedMessage {
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

impl LocalStack {
    /// A raw DynamoDB client for tests that write malformed items.
    pub fn sdk_dynamo(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }
}

impl LocalStack {
    /// The stack's table names.
    pub fn store_tables(&self) -> shared::store::dynamo::Tables {
        let t = |id: &str| self.stack.table(id).map(str::to_owned).unwrap_or_default();
        shared::store::dynamo::Tables {
            targets: t("TargetsTable"),
            attempts: t("AttemptsTable"),
            executions: t("ExecutionsTable"),
            connections: t("ConnectionsTable"),
            rate_limits: t("RateLimitsTable"),
            stats: t("StatsTable"),
            suppressions: t("SuppressionsTable"),
        }
    }
}

impl LocalStack {
    /// Keys in the reports bucket under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let bucket = self
            .stack
            .buckets
            .get("ReportsBucket")
            .context("no ReportsBucket")?;
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect())
    }

    /// Stores an object in the reports bucket (e.g. claim-check data).
    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<String> {
        let bucket = self
            .stack
            .buckets
            .get("ReportsBucket")
            .context("no ReportsBucket")?;
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await?;
        Ok(format!("s3://{bucket}/{key}"))
    }
}
