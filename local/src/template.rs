//! Reads `template.yaml`, the single source of truth for resource
//! attributes, and resolves the intrinsics the local stack needs.

use anyhow::{Context, Result, anyhow, bail};
use serde_norway::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A parsed SAM template.
#[derive(Debug, Clone)]
pub struct Template {
    pub parameters: BTreeMap<String, String>,
    pub resources: BTreeMap<String, Resource>,
    pub global_env: BTreeMap<String, Value>,
    /// `Conditions`, unevaluated.
    pub conditions: BTreeMap<String, Value>,
    pub global_timeout: u64,
    pub global_memory: u64,
}

/// One resource: its type and properties (raw YAML, tags kept).
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: String,
    pub properties: Value,
    pub metadata: Value,
}

/// An SQS event source of a function.
#[derive(Debug, Clone)]
pub struct SqsSource {
    pub queue: String,
    pub batch_size: i32,
}

/// A function as the runner needs it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub binary: String,
    pub timeout_secs: u64,
    pub memory_mb: u64,
    pub env: BTreeMap<String, Value>,
    pub sources: Vec<SqsSource>,
    /// Whether it has a function URL (`FunctionUrlConfig`).
    pub function_url: bool,
    /// The function URL's `AuthType` requires SigV4-signed requests.
    pub function_url_iam: bool,
    /// Execution environments the local runner gives it: the sum of its
    /// sources' `ScalingConfig.MaximumConcurrency` (1 without one), capped
    /// at [`crate::runner::MAX_POOL`].
    pub pool: usize,
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping()?.get(Value::String(key.into()))
}

fn str_map(v: Option<&Value>) -> BTreeMap<String, Value> {
    v.and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                .collect()
        })
        .unwrap_or_default()
}

impl Template {
    /// Loads and parses a template file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// Parses template text.
    pub fn parse(text: &str) -> Result<Self> {
        let doc: Value = serde_norway::from_str(text).context("template.yaml is not YAML")?;
        let parameters = str_map(get(&doc, "Parameters"))
            .into_iter()
            .filter_map(|(k, v)| {
                let d = get(&v, "Default")?;
                let text = match d {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((k, text))
            })
            .collect();
        let resources = str_map(get(&doc, "Resources"))
            .into_iter()
            .map(|(k, v)| {
                let kind = get(&v, "Type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let properties = get(&v, "Properties").cloned().unwrap_or(Value::Null);
                let metadata = get(&v, "Metadata").cloned().unwrap_or(Value::Null);
                (
                    k,
                    Resource {
                        kind,
                        properties,
                        metadata,
                    },
                )
            })
            .collect();
        let globals = get(&doc, "Globals").and_then(|g| get(g, "Function"));
        let global_env = str_map(
            globals
                .and_then(|g| get(g, "Environment"))
                .and_then(|e| get(e, "Variables")),
        );
        let num = |key| globals.and_then(|g| get(g, key)).and_then(Value::as_u64);
        Ok(Self {
            parameters,
            resources,
            global_env,
            conditions: str_map(get(&doc, "Conditions")),
            global_timeout: num("Timeout").unwrap_or(3),
            global_memory: num("MemorySize").unwrap_or(128),
        })
    }

    /// Replaces one property of a resource, e.g. a shorter visibility
    /// timeout for tests that wait for redeliveries.
    pub fn set_property(&mut self, logical_id: &str, key: &str, value: Value) -> Result<()> {
        let r = self
            .resources
            .get_mut(logical_id)
            .ok_or_else(|| anyhow!("no resource {logical_id} in the template"))?;
        let props = r
            .properties
            .as_mapping_mut()
            .ok_or_else(|| anyhow!("{logical_id} has no Properties"))?;
        props.insert(Value::String(key.into()), value);
        Ok(())
    }

    /// A numeric property of a resource (e.g. a queue's `VisibilityTimeout`).
    pub fn number(&self, logical_id: &str, key: &str) -> Option<u64> {
        get(&self.resources.get(logical_id)?.properties, key).and_then(Value::as_u64)
    }

    /// Logical ids of resources of one type, sorted.
    pub fn of_kind(&self, kind: &str) -> Vec<(&String, &Resource)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.kind == kind)
            .collect()
    }

    /// The functions with their binaries, settings and SQS sources.
    pub fn functions(&self) -> Result<Vec<FunctionSpec>> {
        let mut out = Vec::new();
        for (id, r) in self.of_kind("AWS::Serverless::Function") {
            let binary = get(&r.metadata, "BuildProperties")
                .and_then(|b| get(b, "Binary"))
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{id} has no Metadata.BuildProperties.Binary"))?
                .to_owned();
            let p = &r.properties;
            let mut env = self.global_env.clone();
            env.extend(str_map(
                get(p, "Environment").and_then(|e| get(e, "Variables")),
            ));
            let mut sources = Vec::new();
            let mut concurrency = 0usize;
            for (name, ev) in str_map(get(p, "Events")) {
                if get(&ev, "Type").and_then(Value::as_str) != Some("SQS") {
                    continue;
                }
                let props = get(&ev, "Properties")
                    .ok_or_else(|| anyhow!("{id}.{name} has no Properties"))?;
                let queue = getatt_target(
                    get(props, "Queue").ok_or_else(|| anyhow!("{id}.{name} has no Queue"))?,
                )?;
                let batch_size = get(props, "BatchSize")
                    .and_then(Value::as_i64)
                    .unwrap_or(10) as i32;
                let types = get(props, "FunctionResponseTypes")
                    .and_then(Value::as_sequence)
                    .map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    .unwrap_or_default();
                if !types.contains(&"ReportBatchItemFailures") {
                    bail!("{id}.{name} must set FunctionResponseTypes: [ReportBatchItemFailures]");
                }
                concurrency += get(props, "ScalingConfig")
                    .and_then(|c| get(c, "MaximumConcurrency"))
                    .and_then(Value::as_u64)
                    .unwrap_or(1) as usize;
                sources.push(SqsSource { queue, batch_size });
            }
            out.push(FunctionSpec {
                logical_id: id.clone(),
                binary,
                timeout_secs: get(p, "Timeout")
                    .and_then(Value::as_u64)
                    .unwrap_or(self.global_timeout),
                memory_mb: get(p, "MemorySize")
                    .and_then(Value::as_u64)
                    .unwrap_or(self.global_memory),
                env,
                sources,
                function_url: get(p, "FunctionUrlConfig").is_some(),
                function_url_iam: get(p, "FunctionUrlConfig")
                    .and_then(|c| get(c, "AuthType"))
                    .and_then(Value::as_str)
                    == Some("AWS_IAM"),
                pool: concurrency.clamp(1, crate::runner::MAX_POOL),
            });
        }
        Ok(out)
    }
}

/// Evaluates a condition (`!Equals`, `!Not`, `!And`, `!Or`, `!Condition`
/// over parameters) with parameter values from `lookup`.
pub fn condition(
    name: &str,
    conditions: &BTreeMap<String, Value>,
    lookup: &dyn Fn(&str, Option<&str>) -> Option<String>,
) -> Result<bool> {
    fn eval(
        v: &Value,
        conditions: &BTreeMap<String, Value>,
        lookup: &dyn Fn(&str, Option<&str>) -> Option<String>,
        depth: u8,
    ) -> Result<bool> {
        if depth > 16 {
            bail!("conditions nest too deep");
        }
        let Value::Tagged(t) = v else {
            bail!("unsupported condition {v:?}");
        };
        let args = || {
            t.value
                .as_sequence()
                .ok_or_else(|| anyhow!("!{} needs a list", t.tag))
        };
        match t.tag.to_string().trim_start_matches('!') {
            "Equals" => {
                let a = args()?;
                let (Some(x), Some(y)) = (a.first(), a.get(1)) else {
                    bail!("!Equals needs two values");
                };
                Ok(resolve(x, lookup)? == resolve(y, lookup)?)
            }
            "Not" => Ok(!eval(
                args()?
                    .first()
                    .ok_or_else(|| anyhow!("!Not needs a value"))?,
                conditions,
                lookup,
                depth + 1,
            )?),
            "And" => args()?.iter().try_fold(true, |acc, c| {
                Ok(acc && eval(c, conditions, lookup, depth + 1)?)
            }),
            "Or" => args()?.iter().try_fold(false, |acc, c| {
                Ok(acc || eval(c, conditions, lookup, depth + 1)?)
            }),
            "Condition" => {
                let name = t
                    .value
                    .as_str()
                    .ok_or_else(|| anyhow!("!Condition needs a name"))?;
                let c = conditions
                    .get(name)
                    .ok_or_else(|| anyhow!("unknown condition {name}"))?;
                eval(c, conditions, lookup, depth + 1)
            }
            other => bail!("unsupported condition function !{other}"),
        }
    }
    let c = conditions
        .get(name)
        .ok_or_else(|| anyhow!("unknown condition {name}"))?;
    eval(c, conditions, lookup, 0)
}

/// The logical id in `!GetAtt X.Arn`.
pub fn getatt_target(v: &Value) -> Result<String> {
    match v {
        Value::Tagged(t) if t.tag == "GetAtt" => {
            let s = t
                .value
                .as_str()
                .ok_or_else(|| anyhow!("!GetAtt needs a string"))?;
            Ok(s.split('.').next().unwrap_or(s).to_owned())
        }
        other => bail!("expected !GetAtt X.Arn, got {other:?}"),
    }
}

/// The pseudo-attribute `resolve` asks `lookup` for to evaluate a condition
/// (`"true"` or `"false"`).
pub const CONDITION: &str = "(condition)";

/// Resolves `!Ref`, `!GetAtt`, `!Sub`, `!If` and plain scalars through
/// `lookup`, which gets (logical id, attribute or None for Ref).
pub fn resolve(v: &Value, lookup: &dyn Fn(&str, Option<&str>) -> Option<String>) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Tagged(t) if t.tag == "Ref" => {
            let id = t
                .value
                .as_str()
                .ok_or_else(|| anyhow!("!Ref needs a string"))?;
            lookup(id, None).ok_or_else(|| anyhow!("cannot resolve !Ref {id}"))
        }
        Value::Tagged(t) if t.tag == "GetAtt" => {
            let s = t
                .value
                .as_str()
                .ok_or_else(|| anyhow!("!GetAtt needs a string"))?;
            let (id, attr) = s
                .split_once('.')
                .ok_or_else(|| anyhow!("bad !GetAtt {s}"))?;
            lookup(id, Some(attr)).ok_or_else(|| anyhow!("cannot resolve !GetAtt {s}"))
        }
        Value::Tagged(t) if t.tag == "If" => {
            let args = t
                .value
                .as_sequence()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| anyhow!("!If needs [condition, then, else]"))?;
            let name = args[0]
                .as_str()
                .ok_or_else(|| anyhow!("!If needs a condition name"))?;
            let holds = lookup(name, Some(CONDITION)).is_some_and(|v| v == "true");
            resolve(if holds { &args[1] } else { &args[2] }, lookup)
        }
        Value::Tagged(t) if t.tag == "Sub" => {
            let text = t
                .value
                .as_str()
                .ok_or_else(|| anyhow!("only the string form of !Sub is supported"))?;
            let mut out = String::new();
            let mut rest = text;
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let end = rest[start..]
                    .find('}')
                    .ok_or_else(|| anyhow!("unclosed ${{ in !Sub {text}"))?;
                let name = &rest[start + 2..start + end];
                let value = match name.split_once('.') {
                    Some((id, attr)) => lookup(id, Some(attr)),
                    None => lookup(name, None),
                };
                out.push_str(&value.ok_or_else(|| anyhow!("cannot resolve ${{{name}}} in !Sub"))?);
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            Ok(out)
        }
        other => bail!("unsupported value in template: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_project_template() {
        let t = Template::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"))
            .expect("template parses");
        let fns = t.functions().expect("functions");
        let deliver = fns.iter().find(|f| f.binary == "deliver").expect("deliver");
        let batches: Vec<(&str, i32)> = deliver
            .sources
            .iter()
            .map(|s| (s.queue.as_str(), s.batch_size))
            .collect();
        assert_eq!(
            batches,
            [
                ("EmailDeliveryQueue", 10),
                ("SlackDeliveryQueue", 5),
                ("WebhookDeliveryQueue", 10)
            ]
        );
        assert_eq!(deliver.pool, crate::runner::MAX_POOL, "5 + 4 + 20, capped");
        let render = fns.iter().find(|f| f.binary == "render").expect("render");
        assert_eq!(render.pool, 1, "no MaximumConcurrency: one environment");
        assert!(deliver.env.contains_key("TARGETS_TABLE"));
        let links = fns.iter().find(|f| f.binary == "links").expect("links");
        assert!(links.function_url && links.sources.is_empty());
        let sub: Value = serde_norway::from_str("!Sub \"a-${X}-${Y.Arn}-{{keep}}\"").expect("yaml");
        let resolved = resolve(&sub, &|id, attr| {
            Some(format!("{id}{}", attr.unwrap_or("")))
        })
        .expect("resolves");
        assert_eq!(resolved, "a-X-YArn-{{keep}}");
        // Conditions: HasEmail is false with the defaults, true with an identity
        let conditions = &t.conditions;
        let params = |identity: &'static str| {
            move |id: &str, attr: Option<&str>| match (id, attr) {
                ("EmailIdentity", None) => Some(identity.to_owned()),
                ("EmailFromAddress", None) => Some("r@example.com".to_owned()),
                (c, Some(CONDITION)) => condition(c, conditions, &|i, a| match (i, a) {
                    ("EmailIdentity", None) => Some(identity.to_owned()),
                    _ => None,
                })
                .ok()
                .map(|b| b.to_string()),
                _ => None,
            }
        };
        let env = &deliver.env["EMAIL_FROM_ADDRESS"];
        assert_eq!(resolve(env, &params("")).expect("resolves"), "");
        assert_eq!(
            resolve(env, &params("example.com")).expect("resolves"),
            "r@example.com"
        );
        assert_eq!(
            t.parameters.get("RetryScheduleSeconds").map(String::as_str),
            Some("300,900,3600")
        );
    }
}
