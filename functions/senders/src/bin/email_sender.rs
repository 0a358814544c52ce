//! Lambda bootstrap for the email sender (MSK event source on email-events).

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{config::Config, delivery::Channel, metrics::Emf, telemetry, AppState};
use devconnect_senders::{aws, consume, email, EMAIL_FUNCTION};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let sender = email::Sender::from_env()?;
    let state = AppState::connect(Config::from_env()?, EMAIL_FUNCTION).await?;
    let state = &state.with_metrics(metrics);
    let ses = &email::SesEmail::new(&aws::from_env().await, sender);
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        // A partial batch response; metrics flushed to stdout (EMF) once per batch.
        let outcome = emf.invocation(consume(state, ses, Channel::Email, event.payload)).await;
        Ok::<_, Error>(outcome.response)
    }))
    .await
}
