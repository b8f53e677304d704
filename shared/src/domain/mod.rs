//! Domain types: targets, attempts, executions, connections, the retry policy
//! and validated newtypes. Nothing here knows about AWS.

pub mod attempt;
pub mod connection;
pub mod execution;
pub mod link;
pub mod rate;
pub mod recipient;
pub mod retry;
pub mod stats;
pub mod suppression;
pub mod target;
pub mod time;
pub mod transition;
pub mod url;

pub use attempt::{
    AttemptError, AttemptKind, AttemptStatus, DeliveryAttempt, ErrorCategory, TriesUpdate, TryNext,
    TryRecord,
};
pub use connection::ServiceConnection;
pub use execution::ReportExecution;
pub use link::{LinkClaim, LinkError, LinkSigner};
pub use recipient::{Feedback, RecipientOutcome, RecipientStatus};
pub use retry::{RetryDecision, RetryPolicy};
pub use target::{DeliveryTarget, TargetConfig, TargetType};
pub use time::Timestamp;
pub use transition::{Refusal, Transition};
