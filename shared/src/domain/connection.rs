//! Service connections: the credentials a target uses. Secrets are wrapped so
//! that no `Debug` or log line can print them.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// The most retiring signing secrets a connection keeps through rotations
/// (each is tried by receivers; more means an operator rotating in a loop).
pub const MAX_RETIRING_SECRETS: usize = 5;

/// Credentials shared by targets.
#[derive(Clone)]
pub struct ServiceConnection {
    pub id: String,
    pub credentials: Credentials,
}

/// The secret material, by kind.
#[derive(Clone)]
pub enum Credentials {
    /// A Slack bot token (`xoxb-…`).
    SlackBot { token: SecretString },
    /// A Slack incoming-webhook URL; the URL itself is the secret.
    SlackIncomingWebhook { url: SecretString },
    /// Standard Webhooks signing secrets (`whsec_…`); several during rotation.
    WebhookSigning { secrets: Vec<SecretString> },
}

impl Credentials {
    /// The stored kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::SlackBot { .. } => "slack_bot",
            Credentials::SlackIncomingWebhook { .. } => "slack_incoming_webhook",
            Credentials::WebhookSigning { .. } => "webhook_signing",
        }
    }

    /// Every secret, for the store adapter.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Credentials::SlackBot { token } => vec![token.expose_secret()],
            Credentials::SlackIncomingWebhook { url } => vec![url.expose_secret()],
            Credentials::WebhookSigning { secrets } => {
                secrets.iter().map(|s| s.expose_secret()).collect()
            }
        }
    }

    /// Rebuilds credentials from a stored kind and secrets.
    pub fn from_parts(kind: &str, secrets: Vec<String>) -> Option<Self> {
        let mut it = secrets.into_iter();
        match kind {
            "slack_bot" => Some(Credentials::SlackBot {
                token: it.next()?.into(),
            }),
            "slack_incoming_webhook" => Some(Credentials::SlackIncomingWebhook {
                url: it.next()?.into(),
            }),
            "webhook_signing" => {
                let secrets: Vec<SecretString> = it.map(Into::into).collect();
                (!secrets.is_empty()).then_some(Credentials::WebhookSigning { secrets })
            }
            _ => None,
        }
    }
}

impl fmt::Debug for ServiceConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConnection")
            .field("id", &self.id)
            .field("kind", &self.credentials.kind())
            .field("secrets", &"[REDACTED]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_secret() {
        let c = ServiceConnection {
            id: "conn".into(),
            credentials: Credentials::SlackBot {
                token: "xoxb-very-secret".to_owned().into(),
            },
        };
        let printed = format!("{c:?}");
        assert!(printed.contains("slack_bot"));
        assert!(!printed.contains("very-secret"));
    }
}
