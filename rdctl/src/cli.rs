//! The command line: global options and one subcommand per API resource.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Operate report delivery: health, statistics, targets, connections,
/// attempts and dead letters, through the operator API (SigV4-signed with
/// the standard AWS credential chain).
#[derive(Debug, Parser)]
#[command(name = "rdctl", version)]
pub struct Cli {
    /// The API URL. Default: the stack's `ApiUrl` output (`ReadOnlyApiUrl`
    /// with --read-only), read with CloudFormation DescribeStacks.
    #[arg(long, global = true, env = "RDCTL_API_URL")]
    pub api_url: Option<String>,
    /// The stack to read URLs from. Default: samconfig.toml's stack_name,
    /// else report-delivery.
    #[arg(long, global = true, env = "RDCTL_STACK")]
    pub stack: Option<String>,
    /// Use the stack's read-only URL (GET routes only).
    #[arg(long, global = true)]
    pub read_only: bool,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Is delivery healthy? Exit 0 when healthy or degraded (warnings:
    /// email bounce or complaint rates), 3 when unhealthy.
    Health,
    /// Delivery statistics of a report, a target or the whole service.
    Stats(StatsArgs),
    /// Delivery targets.
    #[command(subcommand)]
    Targets(Targets),
    /// Service connections (credentials; write-only).
    #[command(subcommand)]
    Connections(Connections),
    /// Delivery attempts.
    #[command(subcommand)]
    Attempts(Attempts),
    /// Dead-letter queues.
    #[command(subcommand)]
    Dlq(Dlq),
    /// Addresses an email target no longer mails (bounced, complained,
    /// unsubscribed, or added here).
    #[command(subcommand)]
    Suppressions(Suppressions),
    /// Send an execution_completed.v1 message from a file to the executions
    /// queue and follow its attempts until they settle. Exit 0 when all were
    /// delivered, 3 when any failed, 4 when some were still open at --wait.
    Send(SendArgs),
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// With --target-id: the report the target must belong to.
    #[arg(long)]
    pub report_id: Option<String>,
    #[arg(long)]
    pub target_id: Option<String>,
    /// First UTC day (YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<String>,
    /// Last UTC day (YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Targets {
    /// A report's targets.
    List {
        #[arg(long)]
        report_id: String,
    },
    /// One target.
    Get { id: String },
    /// Create a target from a JSON file (`-` for stdin), as POST /targets takes.
    Create { file: PathBuf },
    /// Replace a target from a JSON file; the version read is sent as If-Match.
    Update {
        id: String,
        file: PathBuf,
        /// The version you read (default: read it now).
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Deliver to it again (clears the gone flag and the failure streak).
    Enable { id: String },
    /// Stop delivering to it.
    Disable { id: String },
    /// A test send to this target only; waits for the outcome. Exit 0 when
    /// delivered, 3 when failed, 4 when not settled within --wait.
    Test {
        id: String,
        /// Seconds to wait for the outcome (the API waits up to 20, then
        /// rdctl polls the attempt).
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum Connections {
    /// One connection (never its secrets).
    Get { id: String },
    /// Create a connection from a JSON file (`-` for stdin), as POST
    /// /connections takes; the file holds secrets, so keep it private.
    Create { file: PathBuf },
    /// A new signing secret, read from a file or stdin (`-`), never argv;
    /// the old ones keep signing for --grace-seconds.
    Rotate {
        id: String,
        #[arg(long)]
        secret_file: PathBuf,
        #[arg(long)]
        grace_seconds: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Attempts {
    /// A target's or an execution's attempts (both: that target's in the
    /// execution); with neither, every open attempt.
    List {
        #[arg(long)]
        target_id: Option<String>,
        #[arg(long)]
        execution_id: Option<String>,
        /// queued, processing, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        /// Only those created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One attempt, with its history and last error.
    Get { id: String },
    /// Retry a failed attempt (the spec's RetryJob).
    Retry {
        id: String,
        /// Past the retry limit.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Suppressions {
    /// A target's suppressed addresses.
    List {
        target_id: String,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Stop mailing an address from a target (reason `manual`).
    Add {
        target_id: String,
        address: String,
        /// Why, for the record.
        #[arg(long)]
        note: Option<String>,
    },
    /// Mail an address again (re-subscribe), whatever suppressed it.
    Remove { target_id: String, address: String },
}

#[derive(Debug, Subcommand)]
pub enum Dlq {
    /// What a dead-letter queue holds (a dry-run redrive: nothing moves).
    List {
        /// executions, fanout or delivery.
        stage: String,
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Move dead letters back to work (delivery letters: their attempts are retried).
    Redrive {
        /// executions, fanout or delivery.
        stage: String,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Show what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// An execution_completed.v1 JSON body (`-` for stdin).
    pub file: PathBuf,
    /// Send it under this execution id instead of the file's (to send a
    /// sample again as a new execution).
    #[arg(long)]
    pub execution_id: Option<String>,
    /// The executions queue. Default: the stack's ExecutionsQueueUrl output.
    #[arg(long, env = "RDCTL_EXECUTIONS_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Seconds to follow the attempts (0: send and return).
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
}
