//! Lambda bootstrap for the email sender (MSK event source on email-events).

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{config::Config, delivery::Channel, metrics::Emf, telemetry, AppState};
use devconnect_senders::{aws, consume, email, EMAIL_FUNCTION};
use lambda_runtime::{run_concurrent, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let sender = email::Sender::from_env()?;
    let state = AppState::connect(Config::from_env()?, EMAIL_FUNCTION).await?;
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let state: &'static AppState = Box::leak(Box::new(state.with_metrics(metrics)));
    let ses: &'static email::SesEmail = Box::leak(Box::new(email::SesEmail::new(&aws::from_env().await, sender)));
    run_concurrent(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        let trace = event.context.xray_trace_id.clone();
        // A partial batch response; metrics flushed to stdout (EMF) once per batch.
        let outcome = telemetry::in_invocation(
            trace,
            emf.invocation(consume(state, ses, Channel::Email, event.payload)),
        )
        .await;
        Ok::<_, Error>(outcome.response)
    }))
    .await
}
