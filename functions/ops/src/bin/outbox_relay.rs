//! Lambda bootstrap for the scheduled outbox relay (an EventBridge schedule invokes it).

use devconnect::{config::Config, telemetry, AppState};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let state = AppState::connect(Config::from_env()?, devconnect_ops::FUNCTION_NAME).await?;
    let state = &state;
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        let report = devconnect_ops::relay(state).await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
