//! deliver Lambda: sends one attempt through its channel, with retries.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::domain::Timestamp;
use shared::handlers::{HandlerError, deliver};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let deps = deliver::Deps::from_env().await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        let deadline = Timestamp::from_unix_millis(event.context.deadline as i64);
        Ok::<_, HandlerError>(deliver::handle(deps, event.payload, deadline).await)
    }))
    .await
}
