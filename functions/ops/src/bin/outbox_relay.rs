//! Lambda bootstrap for the scheduled outbox relay (an EventBridge schedule invokes it).

use devconnect::{config::Config, metrics::Emf, telemetry, AppState};
use lambda_runtime::{run_concurrent, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_ops::FUNCTION_NAME).await?;
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let state: &'static AppState = Box::leak(Box::new(state.with_metrics(metrics)));
    run_concurrent(service_fn(move |event: LambdaEvent<Value>| async move {
        let trace = event.context.xray_trace_id.clone();
        // Metrics (relayed, quarantined, backlog) flushed to stdout (EMF) once per run.
        let report = telemetry::in_invocation(trace, emf.invocation(devconnect_ops::relay(state))).await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
