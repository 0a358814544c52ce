//! Lambda bootstrap for the channels router (MSK event source on notification-events).

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{config::Config, metrics::Emf, telemetry, AppState};
use devconnect_channels::{settings::Settings, Channels};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let app = AppState::connect(Config::from_env()?, devconnect_channels::FUNCTION_NAME).await?;
    let settings = Settings::from_env("http://127.0.0.1:3000")?;
    let ch = &Channels {
        app: app.with_metrics(metrics),
        settings,
    };
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        // A partial batch response: failed records are retried or dead-lettered, never the whole batch.
        let outcome = emf.invocation(devconnect_channels::consume(ch, event.payload)).await;
        Ok::<_, Error>(outcome.response)
    }))
    .await
}
