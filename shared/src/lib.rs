//! Library crate behind the report-delivery Lambdas: the domain, its ports and
//! AWS adapters, the PDF renderer, the delivery channels and the three handlers.

pub mod aws;
pub mod blob;
pub mod channel;
pub mod chaos;
pub mod config;
pub mod contract;
pub mod domain;
pub mod handlers;
pub mod keys;
pub mod metrics;
pub mod queue;
pub mod render;
pub mod store;
pub mod telemetry;
