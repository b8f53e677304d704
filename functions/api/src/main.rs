//! api Lambda: the operator API behind a function URL with AWS_IAM auth.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let deps = shared::handlers::api::Deps::from_env().await?;
    lambda_http::run(shared::handlers::api::router(std::sync::Arc::new(deps))).await
}
