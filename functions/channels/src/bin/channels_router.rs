//! Lambda bootstrap for the channels router (MSK event source on notification-events).

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{config::Config, metrics::Emf, telemetry, AppState};
use devconnect_channels::{settings::Settings, Channels};
use lambda_runtime::{run_concurrent, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let app = AppState::connect(Config::from_env()?, devconnect_channels::FUNCTION_NAME).await?;
    let settings = Settings::from_env("http://127.0.0.1:3000")?;
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let ch: &'static Channels = Box::leak(Box::new(Channels {
        app: app.with_metrics(metrics),
        settings,
    }));
    run_concurrent(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        let trace = event.context.xray_trace_id.clone();
        // A partial batch response: failed records are retried or dead-lettered, never the whole batch.
        let outcome =
            telemetry::in_invocation(trace, emf.invocation(devconnect_channels::consume(ch, event.payload))).await;
        Ok::<_, Error>(outcome.response)
    }))
    .await
}
