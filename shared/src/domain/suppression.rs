//! Addresses a target no longer mails: suppressed by a hard bounce, a
//! complaint, a run of soft bounces, an unsubscribe, or an operator.
//!
//! Suppression is per target: a recipient who unsubscribes from one report
//! still gets the others. [`on_news`] is the one rule for what SES news
//! does to an address's suppression.

use super::Timestamp;
use super::recipient::{BounceType, RecipientStatus};
use serde::{Deserialize, Serialize};

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// A permanent (hard) bounce.
    Bounce,
    /// The recipient marked a report as spam.
    Complaint,
    /// Soft bounces, this many in a row (the stack's parameter).
    TransientBounces,
    /// The recipient unsubscribed (RFC 8058 one-click, or the page).
    Unsubscribe,
    /// An operator, through the API.
    Manual,
}

impl SuppressionReason {
    /// Every reason, for parsing.
    pub const ALL: [SuppressionReason; 5] = [
        SuppressionReason::Bounce,
        SuppressionReason::Complaint,
        SuppressionReason::TransientBounces,
        SuppressionReason::Unsubscribe,
        SuppressionReason::Manual,
    ];

    /// The text form.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounce => "bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::TransientBounces => "transient_bounces",
            SuppressionReason::Unsubscribe => "unsubscribe",
            SuppressionReason::Manual => "manual",
        }
    }

    /// Parses the text form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One suppressed address of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub target_id: String,
    /// Lower-cased (see [`address_key`]).
    pub address: String,
    pub reason: SuppressionReason,
    /// The bounce's diagnostic, the complaint's type, or the operator's
    /// note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who: `ses` for feedback, `recipient` for an unsubscribe, or the
    /// operator's IAM principal.
    pub by: String,
    /// The attempt whose send brought the news, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    pub at: Timestamp,
}

/// The form an address is kept and compared in: SES treats the domain
/// without case, and mailbox providers the local part too.
pub fn address_key(address: &str) -> String {
    address.trim().to_ascii_lowercase()
}

/// What a piece of news does to the address's suppression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// Suppress it now.
    Suppress(SuppressionReason),
    /// One more soft bounce in a row; suppress at the limit.
    CountSoftBounce,
    /// A delivery breaks a run of soft bounces.
    ResetSoftBounces,
}

/// The rule: hard bounces and complaints suppress at once, soft bounces
/// count, deliveries reset the count. Delays, rejects (SES's own refusal,
/// such as a virus) and SES's account-level suppressions change nothing
/// here: the account list is SES's to keep.
pub fn on_news(status: RecipientStatus, bounce: Option<BounceType>) -> Change {
    match (status, bounce) {
        (RecipientStatus::Complained, _) => Change::Suppress(SuppressionReason::Complaint),
        (RecipientStatus::Bounced, Some(BounceType::Permanent)) => {
            Change::Suppress(SuppressionReason::Bounce)
        }
        (RecipientStatus::Bounced, _) => Change::CountSoftBounce,
        (RecipientStatus::Delivered, _) => Change::ResetSoftBounces,
        _ => Change::None,
    }
}

/// Splits recipients into those still mailed and those suppressed, by the
/// target's suppressions (compared by [`address_key`]).
pub fn partition<'a>(
    addresses: impl IntoIterator<Item = &'a str>,
    suppressed: &[Suppression],
) -> (Vec<&'a str>, Vec<(&'a str, SuppressionReason)>) {
    let mut send = Vec::new();
    let mut skip = Vec::new();
    for a in addresses {
        let key = address_key(a);
        match suppressed.iter().find(|s| s.address == key) {
            Some(s) => skip.push((a, s.reason)),
            None => send.push(a),
        }
    }
    (send, skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_bounces_and_complaints_suppress_soft_ones_count_deliveries_reset() {
        use RecipientStatus::*;
        assert_eq!(
            on_news(Bounced, Some(BounceType::Permanent)),
            Change::Suppress(SuppressionReason::Bounce)
        );
        assert_eq!(
            on_news(Complained, None),
            Change::Suppress(SuppressionReason::Complaint)
        );
        assert_eq!(
            on_news(Bounced, Some(BounceType::Transient)),
            Change::CountSoftBounce
        );
        assert_eq!(
            on_news(Bounced, Some(BounceType::Undetermined)),
            Change::CountSoftBounce
        );
        assert_eq!(on_news(Delivered, None), Change::ResetSoftBounces);
        for s in [Sent, Delayed, Rejected, Suppressed] {
            assert_eq!(on_news(s, None), Change::None, "{s}");
        }
    }

    #[test]
    fn suppressed_addresses_are_found_whatever_their_case() {
        let s = Suppression {
            target_id: "t".into(),
            address: address_key("Bounce@Example.COM"),
            reason: SuppressionReason::Bounce,
            detail: None,
            by: "ses".into(),
            attempt_id: None,
            at: Timestamp::now(),
        };
        let (send, skip) = partition(["ops@example.com", "bounce@example.com"], &[s]);
        assert_eq!(send, ["ops@example.com"]);
        assert_eq!(skip, [("bounce@example.com", SuppressionReason::Bounce)]);
        assert_eq!(
            SuppressionReason::parse("unsubscribe"),
            Some(SuppressionReason::Unsubscribe)
        );
    }
}
