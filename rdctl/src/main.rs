//! rdctl: the operator's command line for report delivery. Parses the
//! command, runs it, and exits with its outcome's code.

mod cli;
mod client;
mod commands;
mod output;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("rdctl: {e:#}");
            commands::Outcome::Error.into()
        }
    }
}
