//! Lambda bootstrap for the notifications consumer (MSK event source).

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{config::Config, telemetry, AppState};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let state = AppState::connect(Config::from_env()?, devconnect_notifications::FUNCTION_NAME).await?;
    let state = &state;
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        // A partial batch response: failed records are retried or dead-lettered, never the whole batch.
        Ok::<_, Error>(devconnect_notifications::consume(state, event.payload).await.response)
    }))
    .await
}
