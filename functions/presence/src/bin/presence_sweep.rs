//! Lambda bootstrap for the scheduled presence sweep (an EventBridge schedule invokes it).

use devconnect::{config::Config, metrics::Emf, telemetry, AppState};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_presence::FUNCTION_NAME).await?;
    let state = &state.with_metrics(metrics);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let correlation = event.context.request_id.clone();
        // Metrics flushed to stdout (EMF) once per run.
        let marked = emf.invocation(devconnect_presence::sweep(state, &correlation)).await?;
        Ok::<_, Error>(json!({ "markedOffline": marked }))
    }))
    .await
}
