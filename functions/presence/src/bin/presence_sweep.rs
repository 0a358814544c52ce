//! Lambda bootstrap for the scheduled presence sweep (an EventBridge schedule invokes it).

use devconnect::{config::Config, telemetry, AppState};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let state = AppState::connect(Config::from_env()?, devconnect_presence::FUNCTION_NAME).await?;
    let state = &state;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let correlation = event.context.request_id.clone();
        let marked = devconnect_presence::sweep(state, &correlation).await?;
        Ok::<_, Error>(json!({ "markedOffline": marked }))
    }))
    .await
}
