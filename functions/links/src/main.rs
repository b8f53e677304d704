//! links Lambda: turns signed download-link tokens into fresh presigned URLs.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::handlers::{HandlerError, links};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let deps = links::Deps::from_env().await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, HandlerError>(links::handle(deps, event.payload).await)
    }))
    .await
}
