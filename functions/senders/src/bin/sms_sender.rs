//! Lambda bootstrap for the SMS sender (MSK event source on sms-events).

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{config::Config, delivery::Channel, metrics::Emf, telemetry, AppState};
use devconnect_senders::{aws, consume, sms, SMS_FUNCTION};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, SMS_FUNCTION).await?;
    let state = &state.with_metrics(metrics);
    let sns = &sms::SnsSms::new(&aws::from_env().await);
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        // A partial batch response; metrics flushed to stdout (EMF) once per batch.
        let outcome = emf.invocation(consume(state, sns, Channel::Sms, event.payload)).await;
        Ok::<_, Error>(outcome.response)
    }))
    .await
}
