//! Lambda bootstrap for the pusher (MSK event source): events in, frames out to sockets.

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{metrics::Emf, telemetry};
use devconnect_realtime::Realtime;
use lambda_runtime::{run_concurrent, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let mut realtime = Realtime::from_env().await?;
    realtime.app = realtime.app.with_metrics(metrics);
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let realtime: &'static Realtime = Box::leak(Box::new(realtime));
    run_concurrent(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        let trace = event.context.xray_trace_id.clone();
        // A partial batch response: failed records are retried or dead-lettered, never the whole batch.
        // Metrics flushed to stdout (EMF) once per batch.
        let outcome = telemetry::in_invocation(
            trace,
            emf.invocation(devconnect_realtime::push_batch(realtime, event.payload)),
        )
        .await;
        Ok::<_, Error>(outcome.response)
    }))
    .await
}
