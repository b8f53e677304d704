//! reconcile Lambda: a scheduled sweep that re-enqueues or fails attempts
//! left behind, and clears the safety net's strays from the dead-letter queue.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::domain::Timestamp;
use shared::handlers::{HandlerError, reconcile};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let deps = reconcile::Deps::from_env().await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let deadline = Timestamp::from_unix_millis(event.context.deadline as i64);
            Ok::<_, HandlerError>(reconcile::handle(deps, deadline).await)
        },
    ))
    .await
}
