//! Lambda bootstrap for the analytics consumer (MSK event source).

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{config::Config, metrics::Emf, telemetry, AppState};
use lambda_runtime::{run_concurrent, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_analytics::FUNCTION_NAME).await?;
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let state: &'static AppState = Box::leak(Box::new(state.with_metrics(metrics)));
    run_concurrent(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        let trace = event.context.xray_trace_id.clone();
        // A partial batch response: failed records are retried or dead-lettered, never the whole batch.
        // Metrics flushed to stdout (EMF) once per batch.
        let outcome = telemetry::in_invocation(
            trace,
            emf.invocation(devconnect_analytics::consume(state, event.payload)),
        )
        .await;
        Ok::<_, Error>(outcome.response)
    }))
    .await
}
