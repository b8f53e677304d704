//! Creates a template's queues, tables and bucket in moto with the same
//! attributes, under a name prefix so that stacks can live side by side.

use crate::template::{Template, getatt_target};
use anyhow::{Context, Result, anyhow};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_norway::Value;
use std::collections::BTreeMap;

/// A queue that exists.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    pub name: String,
    pub url: String,
    pub arn: String,
}

/// The physical resources of one local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub prefix: String,
    pub queues: BTreeMap<String, QueueInfo>,
    pub tables: BTreeMap<String, String>,
    pub buckets: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
    /// Secrets Manager secrets: logical id → name.
    pub secrets: BTreeMap<String, String>,
    /// KMS keys: logical id → (alias name, ARN). `!Ref` gives the alias,
    /// which a reprovisioned stack (after a moto restart) points at its new
    /// key, so running functions keep working.
    pub keys: BTreeMap<String, (String, String)>,
    /// The template's conditions, evaluated on demand.
    pub conditions: BTreeMap<String, serde_norway::Value>,
    /// SNS topics: logical id → ARN. Not created: the local stack has no
    /// SNS; what publishes to a topic (the SES simulator) writes to its
    /// subscribed queue in SNS's envelope.
    pub topics: BTreeMap<String, String>,
}

impl Stack {
    /// A stack named `prefix` with no resources yet.
    fn empty(template: &Template, prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queues: BTreeMap::new(),
            tables: BTreeMap::new(),
            buckets: BTreeMap::new(),
            parameters: template.parameters.clone(),
            secrets: BTreeMap::new(),
            keys: BTreeMap::new(),
            conditions: template.conditions.clone(),
            topics: template
                .of_kind("AWS::SNS::Topic")
                .into_iter()
                .map(|(id, _)| {
                    let arn = format!("arn:aws:sns:us-east-1:123456789012:{prefix}-{id}");
                    (id.to_owned(), arn)
                })
                .collect(),
        }
    }

    /// Resolves `!Ref X` (attr None) or `!GetAtt X.attr` to a physical value.
    pub fn lookup(&self, id: &str, attr: Option<&str>) -> Option<String> {
        if attr == Some(crate::template::CONDITION) {
            return crate::template::condition(id, &self.conditions, &|i, a| self.lookup(i, a))
                .ok()
                .map(|b| b.to_string());
        }
        if let Some(q) = self.queues.get(id) {
            return match attr {
                None | Some("QueueUrl") => Some(q.url.clone()),
                Some("Arn") => Some(q.arn.clone()),
                Some("QueueName") => Some(q.name.clone()),
                _ => None,
            };
        }
        if let Some(t) = self.tables.get(id) {
            return match attr {
                None => Some(t.clone()),
                Some("Arn") => Some(format!("arn:aws:dynamodb:us-east-1:123456789012:table/{t}")),
                _ => None,
            };
        }
        if let Some((key_id, arn)) = self.keys.get(id) {
            return match attr {
                None | Some("KeyId") => Some(key_id.clone()),
                Some("Arn") => Some(arn.clone()),
                _ => None,
            };
        }
        if let Some(arn) = self.topics.get(id) {
            return match attr {
                None | Some("TopicArn") => Some(arn.clone()),
                Some("TopicName") => arn.rsplit(':').next().map(str::to_owned),
                _ => None,
            };
        }
        if let Some(b) = self.buckets.get(id) {
            return match attr {
                None => Some(b.clone()),
                Some("Arn") => Some(format!("arn:aws:s3:::{b}")),
                _ => None,
            };
        }
        if attr.is_none() {
            if let Some(p) = self.parameters.get(id) {
                return Some(p.clone());
            }
            if id.starts_with("AWS::") {
                return Some(match id {
                    "AWS::Region" => "us-east-1".into(),
                    "AWS::AccountId" => "123456789012".into(),
                    "AWS::Partition" => "aws".into(),
                    _ => return None,
                });
            }
            if let Some(arn) = self.secrets.get(id) {
                return Some(arn.clone());
            }
        }
        None
    }

    /// The URL of a queue by logical id.
    pub fn queue_url(&self, logical_id: &str) -> Result<&str> {
        self.queues
            .get(logical_id)
            .map(|q| q.url.as_str())
            .ok_or_else(|| anyhow!("no queue {logical_id} in the template"))
    }

    /// A table name by logical id.
    pub fn table(&self, logical_id: &str) -> Result<&str> {
        self.tables
            .get(logical_id)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("no table {logical_id} in the template"))
    }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping()?.get(Value::String(key.into()))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The ARN of the queue at `url`.
async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str, name: &str) -> Result<String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| anyhow!("queue {name} has no ARN"))
}

/// Provisions every queue, table and bucket of `template` in moto.
pub async fn provision(
    config: &aws_config::SdkConfig,
    template: &Template,
    prefix: &str,
) -> Result<Stack> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let ddb = aws_sdk_dynamodb::Client::new(config);
    let s3 = shared::aws::s3(config);
    let mut stack = Stack::empty(template, prefix);

    // Customer-managed keys (connection secrets are sealed under one).
    let kms = aws_sdk_kms::Client::new(config);
    for (id, _) in template.of_kind("AWS::KMS::Key") {
        let meta = kms
            .create_key()
            .description(format!("{prefix}-{id}"))
            .send()
            .await
            .with_context(|| format!("creating key {id}"))?
            .key_metadata
            .ok_or_else(|| anyhow!("key {id} has no metadata"))?;
        let alias = format!("alias/{prefix}-{id}");
        kms.create_alias()
            .alias_name(&alias)
            .target_key_id(&meta.key_id)
            .send()
            .await
            .with_context(|| format!("creating alias {alias}"))?;
        stack
            .keys
            .insert(id.clone(), (alias, meta.arn.unwrap_or_default()));
    }

    // Secrets get a random value, as GenerateSecretString does.
    let secrets = aws_sdk_secretsmanager::Client::new(config);
    for (id, _) in template.of_kind("AWS::SecretsManager::Secret") {
        let value = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        secrets
            .create_secret()
            .name(format!("{prefix}-{id}"))
            .secret_string(value)
            .send()
            .await
            .with_context(|| format!("creating secret {id}"))?;
        // `!Ref` gives the name (Secrets Manager takes it wherever an ARN
        // goes): unlike moto's ARN, it stays the same when the stack is
        // provisioned again after a moto restart.
        stack.secrets.insert(id.clone(), format!("{prefix}-{id}"));
    }

    // Queues first without redrive, so every dead-letter ARN exists.
    let queues = template.of_kind("AWS::SQS::Queue");
    for (id, r) in &queues {
        let name = format!("{prefix}-{id}");
        let mut req = sqs.create_queue().queue_name(&name);
        for (key, attr) in [
            ("VisibilityTimeout", QueueAttributeName::VisibilityTimeout),
            (
                "MessageRetentionPeriod",
                QueueAttributeName::MessageRetentionPeriod,
            ),
            ("DelaySeconds", QueueAttributeName::DelaySeconds),
            (
                "ReceiveMessageWaitTimeSeconds",
                QueueAttributeName::ReceiveMessageWaitTimeSeconds,
            ),
        ] {
            if let Some(v) = get(&r.properties, key).and_then(scalar) {
                req = req.attributes(attr, v);
            }
        }
        let url = req
            .send()
            .await
            .with_context(|| format!("creating queue {name}"))?
            .queue_url
            .unwrap_or_default();
        let arn = queue_arn(&sqs, &url, &name).await?;
        stack
            .queues
            .insert((*id).clone(), QueueInfo { name, url, arn });
    }
    for (id, r) in &queues {
        let Some(redrive) = get(&r.properties, "RedrivePolicy") else {
            continue;
        };
        let dlq = getatt_target(
            get(redrive, "deadLetterTargetArn")
                .ok_or_else(|| anyhow!("{id}: redrive without target"))?,
        )?;
        let max = get(redrive, "maxReceiveCount")
            .ok_or_else(|| anyhow!("{id}: redrive without maxReceiveCount"))?;
        let max = crate::template::resolve(max, &|i, a| stack.lookup(i, a))?;
        let dlq_arn = &stack
            .queues
            .get(&dlq)
            .ok_or_else(|| anyhow!("{id}: unknown DLQ {dlq}"))?
            .arn;
        let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max.parse::<u32>()?});
        sqs.set_queue_attributes()
            .queue_url(stack.queue_url(id)?)
            .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
            .send()
            .await?;
    }

    for (id, r) in template.of_kind("AWS::DynamoDB::Table") {
        let name = format!("{prefix}-{id}");
        let p = &r.properties;
        let defs = get(p, "AttributeDefinitions")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let mut req = ddb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        for d in defs {
            let n = get(&d, "AttributeName")
                .and_then(scalar)
                .unwrap_or_default();
            let t = get(&d, "AttributeType")
                .and_then(scalar)
                .unwrap_or_default();
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(n)
                    .attribute_type(ScalarAttributeType::from(t.as_str()))
                    .build()?,
            );
        }
        req = req.set_key_schema(Some(key_schema(get(p, "KeySchema"))?));
        for g in get(p, "GlobalSecondaryIndexes")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            let proj = get(&g, "Projection")
                .and_then(|p| get(p, "ProjectionType"))
                .and_then(scalar)
                .unwrap_or_else(|| "ALL".into());
            // INCLUDE carries its attributes, as CloudFormation passes them.
            let included: Option<Vec<String>> = get(&g, "Projection")
                .and_then(|p| get(p, "NonKeyAttributes"))
                .and_then(Value::as_sequence)
                .map(|s| s.iter().filter_map(scalar).collect());
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(get(&g, "IndexName").and_then(scalar).unwrap_or_default())
                    .set_key_schema(Some(key_schema(get(&g, "KeySchema"))?))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(proj.as_str()))
                            .set_non_key_attributes(included)
                            .build(),
                    )
                    .build()?,
            );
        }
        req.send()
            .await
            .with_context(|| format!("creating table {name}"))?;
        if let Some(ttl) = get(p, "TimeToLiveSpecification")
            && get(ttl, "Enabled").and_then(scalar).as_deref() == Some("true")
        {
            let attribute = get(ttl, "AttributeName")
                .and_then(scalar)
                .unwrap_or_default();
            ddb.update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await
                .with_context(|| format!("turning on TTL of {name}"))?;
        }
        stack.tables.insert(id.clone(), name);
    }

    for (id, _) in template.of_kind("AWS::S3::Bucket") {
        let name = format!("{prefix}-{id}").to_ascii_lowercase();
        s3.create_bucket()
            .bucket(&name)
            .send()
            .await
            .with_context(|| format!("creating bucket {name}"))?;
        stack.buckets.insert(id.clone(), name);
    }
    Ok(stack)
}

/// The stack named `prefix` as it already stands in moto (a `local up`
/// that was stopped and started again), or `None` when it was never
/// provisioned there. Nothing is created or changed.
pub async fn adopt(
    config: &aws_config::SdkConfig,
    template: &Template,
    prefix: &str,
) -> Result<Option<Stack>> {
    let ddb = aws_sdk_dynamodb::Client::new(config);
    let Some((first, _)) = template.of_kind("AWS::DynamoDB::Table").into_iter().next() else {
        return Ok(None);
    };
    if ddb
        .describe_table()
        .table_name(format!("{prefix}-{first}"))
        .send()
        .await
        .is_err()
    {
        return Ok(None);
    }
    let mut stack = Stack::empty(template, prefix);
    let kms = aws_sdk_kms::Client::new(config);
    for (id, _) in template.of_kind("AWS::KMS::Key") {
        let alias = format!("alias/{prefix}-{id}");
        let meta = kms
            .describe_key()
            .key_id(&alias)
            .send()
            .await
            .with_context(|| format!("key {alias}"))?
            .key_metadata
            .ok_or_else(|| anyhow!("key {id} has no metadata"))?;
        stack
            .keys
            .insert(id.clone(), (alias, meta.arn.unwrap_or_default()));
    }
    for (id, _) in template.of_kind("AWS::SecretsManager::Secret") {
        stack.secrets.insert(id.clone(), format!("{prefix}-{id}"));
    }
    let sqs = aws_sdk_sqs::Client::new(config);
    for (id, _) in template.of_kind("AWS::SQS::Queue") {
        let name = format!("{prefix}-{id}");
        let url = sqs
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .with_context(|| format!("queue {name}"))?
            .queue_url
            .unwrap_or_default();
        let arn = queue_arn(&sqs, &url, &name).await?;
        stack
            .queues
            .insert(id.clone(), QueueInfo { name, url, arn });
    }
    for (id, _) in template.of_kind("AWS::DynamoDB::Table") {
        stack.tables.insert(id.clone(), format!("{prefix}-{id}"));
    }
    for (id, _) in template.of_kind("AWS::S3::Bucket") {
        let name = format!("{prefix}-{id}").to_ascii_lowercase();
        stack.buckets.insert(id.clone(), name);
    }
    Ok(Some(stack))
}

fn key_schema(v: Option<&Value>) -> Result<Vec<KeySchemaElement>> {
    v.and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("KeySchema missing"))?
        .iter()
        .map(|k| {
            let name = get(k, "AttributeName").and_then(scalar).unwrap_or_default();
            let kind = get(k, "KeyType").and_then(scalar).unwrap_or_default();
            Ok(KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()?)
        })
        .collect()
}
