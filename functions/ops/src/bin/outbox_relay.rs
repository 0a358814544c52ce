//! Lambda bootstrap for the scheduled outbox relay (an EventBridge schedule invokes it).

use devconnect::{config::Config, metrics::Emf, telemetry, AppState};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_ops::FUNCTION_NAME).await?;
    let state = &state.with_metrics(metrics);
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        // Metrics (relayed, quarantined, backlog) flushed to stdout (EMF) once per run.
        let report = emf.invocation(devconnect_ops::relay(state)).await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
