//! feedback Lambda: SES's news of sent email (bounces, complaints,
//! deliveries) onto the attempt records and the targets' suppressions.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::handlers::{HandlerError, feedback};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let deps = feedback::Deps::from_env().await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, HandlerError>(feedback::handle(deps, event.payload).await)
    }))
    .await
}
