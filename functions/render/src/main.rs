//! render Lambda: execution-completed messages → PDF in S3 → fan-out task.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::handlers::{HandlerError, render};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let deps = render::Deps::from_env().await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, HandlerError>(render::handle(deps, event.payload).await)
    }))
    .await
}
