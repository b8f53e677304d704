//! What became of each recipient of an email attempt.
//!
//! SES accepting a message says nothing about its recipients. Its later
//! events (delivery, bounce, complaint, delay, reject) come in any order,
//! any number of times, and each recipient keeps the strongest news heard
//! of it: a `Delivery` after a `Bounce` does not undo the bounce, and a
//! copy of an event changes nothing. [`RecipientStatus::rank`] is that
//! order, and [`Feedback::apply`] the one rule that uses it.

use super::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    /// Accepted by SES, with its message id; nothing heard since.
    Sent,
    /// SES is still trying (`DeliveryDelay`).
    Delayed,
    /// The receiving server took it (`Delivery`).
    Delivered,
    /// SES would not send it (`Reject`: e.g. a virus in an attachment).
    Rejected,
    /// It came back (`Bounce`); `bounce` says whether for good.
    Bounced,
    /// The recipient marked it as spam (`Complaint`).
    Complained,
    /// Not sent: the address is suppressed for the target, or on the SES
    /// account's suppression list. `detail` says which.
    Suppressed,
}

impl RecipientStatus {
    /// Every status, for queries and tests.
    pub const ALL: [RecipientStatus; 7] = [
        RecipientStatus::Sent,
        RecipientStatus::Delayed,
        RecipientStatus::Delivered,
        RecipientStatus::Rejected,
        RecipientStatus::Bounced,
        RecipientStatus::Complained,
        RecipientStatus::Suppressed,
    ];

    /// How strong the news is: an event lands only on a weaker status.
    /// A suppression is decided before the send, so nothing follows it.
    pub fn rank(self) -> u8 {
        match self {
            RecipientStatus::Sent => 0,
            RecipientStatus::Delayed => 1,
            RecipientStatus::Delivered => 2,
            RecipientStatus::Rejected | RecipientStatus::Bounced => 3,
            RecipientStatus::Complained => 4,
            RecipientStatus::Suppressed => 5,
        }
    }

    /// The text form.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Sent => "sent",
            RecipientStatus::Delayed => "delayed",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Rejected => "rejected",
            RecipientStatus::Bounced => "bounced",
            RecipientStatus::Complained => "complained",
            RecipientStatus::Suppressed => "suppressed",
        }
    }

    /// Parses the text form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RecipientStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which header named the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    To,
    Cc,
    Bcc,
}

/// SES's bounce types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceType {
    /// Hard: the address does not work. Suppresses at once.
    Permanent,
    /// Soft: full mailbox, message too large, auto-reply. Suppresses only
    /// after several in a row.
    Transient,
    /// SES could not tell.
    Undetermined,
}

/// One recipient of an email attempt and the strongest news of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientOutcome {
    pub address: String,
    pub role: Role,
    pub status: RecipientStatus,
    /// The SES message id of the send that addressed it; `None` when it
    /// was not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// For bounces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceType>,
    /// The bounce's subtype and diagnostic code, the complaint's feedback
    /// type, the reject's reason, or why it was suppressed. At most 500
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the status was reached (the event's time, not its arrival).
    pub at: Timestamp,
}

/// Longest `detail` kept.
pub const DETAIL_LIMIT: usize = 500;

/// One piece of news about one recipient of one sent message, as the
/// feedback function reads it from an SES event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// The SES message id the event is about.
    pub message_id: String,
    /// The recipient, as SES names it.
    pub address: String,
    /// `Sent` (the `Send` event) to `Complained`; never `Suppressed`
    /// except for SES's account-level suppression list.
    pub status: RecipientStatus,
    pub bounce: Option<BounceType>,
    pub detail: Option<String>,
    pub at: Timestamp,
}

/// Why a piece of feedback changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// No recipient of the attempt was sent that message at that address:
    /// a forged or misrouted event, or one of a send the record no longer
    /// holds (an earlier try's).
    NoSuchRecipient,
    /// The recipient already has news as strong (a copy, or an event out of
    /// order such as a `Delivery` after a `Bounce`).
    AlreadyKnown,
}

impl Feedback {
    /// The recipients after this news, or why nothing changes. Pure.
    pub fn apply(&self, recipients: &[RecipientOutcome]) -> Result<Vec<RecipientOutcome>, Ignored> {
        let index = recipients
            .iter()
            .position(|r| {
                r.message_id.as_deref() == Some(self.message_id.as_str())
                    && r.address.eq_ignore_ascii_case(&self.address)
            })
            .ok_or(Ignored::NoSuchRecipient)?;
        let current = &recipients[index];
        if self.status.rank() <= current.status.rank() {
            return Err(Ignored::AlreadyKnown);
        }
        let mut next = recipients.to_vec();
        let r = &mut next[index];
        r.status = self.status;
        r.bounce = self.bounce;
        r.detail = self
            .detail
            .as_ref()
            .map(|d| d.chars().take(DETAIL_LIMIT).collect());
        r.at = self.at;
        Ok(next)
    }
}

/// The attempt-wide summary of its recipients (`confirmation` in the API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Confirmation {
    pub recipients: u32,
    pub sent: u32,
    pub delayed: u32,
    pub delivered: u32,
    pub rejected: u32,
    pub bounced: u32,
    pub complained: u32,
    pub suppressed: u32,
    /// `complained` if any recipient complained, else `bounced` if any
    /// bounced or was rejected, else `delivered` once every sent recipient
    /// was delivered, else `pending` (still waiting for news), or
    /// `suppressed` when no one was sent anything.
    pub outcome: &'static str,
}

impl Confirmation {
    /// Counts `recipients`; `None` when there are none (not an email
    /// attempt, or one sent before recipients were recorded).
    pub fn of(recipients: &[RecipientOutcome]) -> Option<Self> {
        if recipients.is_empty() {
            return None;
        }
        let mut c = Confirmation {
            recipients: recipients.len() as u32,
            ..Confirmation::default()
        };
        for r in recipients {
            let n = match r.status {
                RecipientStatus::Sent => &mut c.sent,
                RecipientStatus::Delayed => &mut c.delayed,
                RecipientStatus::Delivered => &mut c.delivered,
                RecipientStatus::Rejected => &mut c.rejected,
                RecipientStatus::Bounced => &mut c.bounced,
                RecipientStatus::Complained => &mut c.complained,
                RecipientStatus::Suppressed => &mut c.suppressed,
            };
            *n += 1;
        }
        c.outcome = if c.complained > 0 {
            "complained"
        } else if c.bounced + c.rejected > 0 {
            "bounced"
        } else if c.suppressed == c.recipients {
            "suppressed"
        } else if c.delivered + c.suppressed == c.recipients {
            "delivered"
        } else {
            "pending"
        };
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + s as i64 * 1000).expect("a time")
    }

    fn sent(address: &str, id: &str) -> RecipientOutcome {
        RecipientOutcome {
            address: address.into(),
            role: Role::To,
            status: RecipientStatus::Sent,
            message_id: Some(id.into()),
            bounce: None,
            detail: None,
            at: at(0),
        }
    }

    fn news(address: &str, id: &str, status: RecipientStatus, t: u64) -> Feedback {
        Feedback {
            message_id: id.into(),
            address: address.into(),
            status,
            bounce: (status == RecipientStatus::Bounced).then_some(BounceType::Permanent),
            detail: None,
            at: at(t),
        }
    }

    #[test]
    fn a_delivery_after_a_bounce_does_not_undo_it_and_a_copy_changes_nothing() {
        use RecipientStatus::*;
        let r = vec![sent("a@example.com", "m1"), sent("b@example.com", "m1")];
        let r = news("a@example.com", "m1", Bounced, 2)
            .apply(&r)
            .expect("lands");
        assert_eq!(r[0].status, Bounced);
        assert_eq!(
            news("a@example.com", "m1", Delivered, 1).apply(&r),
            Err(Ignored::AlreadyKnown)
        );
        assert_eq!(
            news("a@example.com", "m1", Bounced, 2).apply(&r),
            Err(Ignored::AlreadyKnown)
        );
        let r = news("B@Example.com", "m1", Delivered, 3)
            .apply(&r)
            .expect("lands");
        assert_eq!(r[1].status, Delivered);
        let r = news("b@example.com", "m1", Complained, 9)
            .apply(&r)
            .expect("lands");
        assert_eq!(r[1].status, Complained);
    }

    #[test]
    fn news_of_another_message_or_address_is_no_ones() {
        let r = vec![sent("a@example.com", "m1")];
        for n in [
            news("a@example.com", "m2", RecipientStatus::Bounced, 1),
            news("x@example.com", "m1", RecipientStatus::Bounced, 1),
        ] {
            assert_eq!(n.apply(&r), Err(Ignored::NoSuchRecipient));
        }
        let mut unsent = sent("a@example.com", "m1");
        unsent.message_id = None;
        unsent.status = RecipientStatus::Suppressed;
        assert_eq!(
            news("a@example.com", "m1", RecipientStatus::Bounced, 1).apply(&[unsent]),
            Err(Ignored::NoSuchRecipient)
        );
    }

    #[test]
    fn the_summary_names_the_worst_news() {
        use RecipientStatus::*;
        let with = |s: &[RecipientStatus]| -> &'static str {
            let r: Vec<_> = s
                .iter()
                .enumerate()
                .map(|(i, st)| RecipientOutcome {
                    status: *st,
                    ..sent(&format!("r{i}@example.com"), "m")
                })
                .collect();
            Confirmation::of(&r).expect("some").outcome
        };
        assert_eq!(with(&[Delivered, Delivered]), "delivered");
        assert_eq!(with(&[Delivered, Suppressed]), "delivered");
        assert_eq!(with(&[Delivered, Sent]), "pending");
        assert_eq!(with(&[Delivered, Bounced]), "bounced");
        assert_eq!(with(&[Rejected, Delivered]), "bounced");
        assert_eq!(with(&[Bounced, Complained]), "complained");
        assert_eq!(with(&[Suppressed, Suppressed]), "suppressed");
        assert_eq!(Confirmation::of(&[]), None);
    }

    fn status() -> impl Strategy<Value = RecipientStatus> {
        prop::sample::select(&RecipientStatus::ALL[..6])
    }

    proptest! {
        /// Whatever order and however many copies the events come in, each
        /// recipient ends with the strongest news of it: the same as if the
        /// events had come once, in order of strength.
        #[test]
        fn any_order_and_any_copies_give_the_strongest_news(
            events in prop::collection::vec((0usize..3, status()), 0..24),
        ) {
            let addresses = ["a@example.com", "b@example.com", "c@example.com"];
            let start: Vec<_> = addresses.iter().map(|a| sent(a, "m1")).collect();
            let mut r = start.clone();
            for (i, (who, s)) in events.iter().enumerate() {
                let before = r.clone();
                match news(addresses[*who], "m1", *s, i as u64).apply(&r) {
                    Ok(next) => {
                        prop_assert!(next[*who].status.rank() > before[*who].status.rank());
                        for k in 0..3 {
                            if k != *who {
                                prop_assert_eq!(&next[k], &before[k]);
                            }
                        }
                        r = next;
                    }
                    Err(Ignored::AlreadyKnown) => {
                        prop_assert!(s.rank() <= r[*who].status.rank());
                    }
                    Err(Ignored::NoSuchRecipient) => prop_assert!(false, "every address was sent"),
                }
            }
            for (k, _) in addresses.iter().enumerate() {
                let strongest = events
                    .iter()
                    .filter(|(who, _)| *who == k)
                    .map(|(_, s)| *s)
                    .max_by_key(|s| s.rank())
                    .filter(|s| s.rank() > 0)
                    .unwrap_or(RecipientStatus::Sent);
                prop_assert_eq!(r[k].status.rank(), strongest.rank());
            }
        }
    }
}
