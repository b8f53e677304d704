//! The signed HTTP client: finds the API URL (flag, environment, or the
//! stack's outputs), signs every request with SigV4 for the `lambda`
//! service from the standard AWS credential chain (aws-config, aws-sigv4),
//! and turns an error answer into one line.

use crate::cli::Cli;
use anyhow::{Context, Result, anyhow, bail};
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::Value;
use std::time::SystemTime;

/// One answer of the API.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The answer as one line: a problem document's status, code and detail,
    /// or the function URL's own refusal.
    pub fn problem_line(&self) -> String {
        let b = &self.body;
        match (
            b["code"].as_str(),
            b["detail"].as_str(),
            b["Message"].as_str(),
        ) {
            (Some(code), Some(detail), _) => format!("{} {code}: {detail}", self.status),
            (_, _, Some(message)) => format!(
                "{} {message} (from the function URL: the request is not signed, or this \
                 principal may not invoke it; see README, Access)",
                self.status
            ),
            _ => format!("{} {}", self.status, b),
        }
    }
}

/// The operator API, signed.
pub struct Api {
    base: String,
    region: String,
    http: reqwest::Client,
    sdk: aws_config::SdkConfig,
    /// Resolved once, and again only when they come within a minute of
    /// expiring (a role's credentials come from IMDS or STS: not per call).
    credentials: tokio::sync::Mutex<Option<aws_credential_types::Credentials>>,
}

impl Api {
    /// Loads the credential chain and finds the URL.
    pub async fn connect(cli: &Cli) -> Result<Self> {
        let sdk = aws_config::load_from_env().await;
        let base = match &cli.api_url {
            Some(url) => url.clone(),
            None => {
                let key = if cli.read_only {
                    "ReadOnlyApiUrl"
                } else {
                    "ApiUrl"
                };
                stack_output(&sdk, cli.stack.as_deref(), key).await?
            }
        };
        let base = format!("{}/", base.trim_end_matches('/'));
        let region = region_of(&base)
            .or_else(|| sdk.region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(40))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            base,
            region,
            http,
            sdk,
            credentials: tokio::sync::Mutex::new(None),
        })
    }

    /// The SDK configuration (for the queue a send goes to).
    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }

    /// Makes one signed request; any status comes back as an [`Answer`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Answer> {
        let url = format!("{}{}", self.base, path.trim_start_matches('/'));
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let mut all: Vec<(&str, String)> = headers.to_vec();
        if body.is_some() {
            all.push(("content-type", "application/json".to_owned()));
        }
        let signed = self.sign(method, &url, &all, &bytes).await?;
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(method, &url).body(bytes);
        for (k, v) in &all {
            req = req.header(*k, v);
        }
        for (k, v) in &signed {
            req = req.header(k, v);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("the API at {} did not answer", self.base))?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    /// As [`Api::call`], but an answer outside 2xx is an error (its problem line).
    pub async fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Answer> {
        let a = self.call(method, path, body, headers).await?;
        if (200..300).contains(&a.status) {
            Ok(a)
        } else {
            Err(anyhow!(a.problem_line()))
        }
    }

    /// The SigV4 headers for one request (service `lambda`).
    async fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>> {
        let identity = self.credentials().await?.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("lambda")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(body),
        )?;
        let (instructions, _) = sign(request, &params)?.into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }
}

impl Api {
    /// The credentials to sign with, from the standard chain.
    async fn credentials(&self) -> Result<aws_credential_types::Credentials> {
        let mut held = self.credentials.lock().await;
        let fresh = |c: &aws_credential_types::Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + std::time::Duration::from_secs(60))
        };
        if let Some(c) = held.as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let provider = self
            .sdk
            .credentials_provider()
            .ok_or_else(|| anyhow!("no AWS credentials provider (set AWS_PROFILE or keys)"))?;
        let c = provider
            .provide_credentials()
            .await
            .context("no AWS credentials from the standard chain")?;
        *held = Some(c.clone());
        Ok(c)
    }
}

/// The region of a function URL (`https://ID.lambda-url.REGION.on.aws/`).
fn region_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
    let rest = host.split_once(".lambda-url.")?.1;
    rest.strip_suffix(".on.aws").map(str::to_owned)
}

/// One output of the stack (CloudFormation DescribeStacks).
pub async fn stack_output(
    sdk: &aws_config::SdkConfig,
    stack: Option<&str>,
    key: &str,
) -> Result<String> {
    let name = match stack {
        Some(s) => s.to_owned(),
        None => samconfig_stack_name().unwrap_or_else(|| "report-delivery".to_owned()),
    };
    let out = aws_sdk_cloudformation::Client::new(sdk)
        .describe_stacks()
        .stack_name(&name)
        .send()
        .await
        .with_context(|| {
            format!("stack {name} not described (give --api-url, or --stack and credentials)")
        })?;
    let outputs = out
        .stacks()
        .first()
        .map(|s| s.outputs())
        .unwrap_or_default();
    match outputs.iter().find(|o| o.output_key() == Some(key)) {
        Some(o) => Ok(o.output_value().unwrap_or_default().to_owned()),
        None => bail!("stack {name} has no output {key}"),
    }
}

/// `stack_name` from the nearest samconfig.toml (this directory or above).
fn samconfig_stack_name() -> Option<String> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("samconfig.toml")) {
            return text.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "stack_name").then(|| v.trim().trim_matches('"').to_owned())
            });
        }
        if !dir.pop() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_urls_region_is_read_from_its_host() {
        assert_eq!(
            region_of("https://abc123.lambda-url.eu-west-1.on.aws/").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("http://127.0.0.1:4000/"), None);
    }

    #[test]
    fn a_problem_and_a_function_url_refusal_read_as_one_line() {
        let a = Answer {
            status: 409,
            body: serde_json::json!({"code": "too_many_secrets", "detail": "wait"}),
        };
        assert_eq!(a.problem_line(), "409 too_many_secrets: wait");
        let f = Answer {
            status: 403,
            body: serde_json::json!({"Message": "Forbidden"}),
        };
        assert!(
            f.problem_line()
                .starts_with("403 Forbidden (from the function URL")
        );
    }
}
