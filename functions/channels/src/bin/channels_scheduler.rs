//! Lambda bootstrap for the channels scheduler (every minute): releases SMS held by
//! quiet hours and sends the digests of days that ended.

use devconnect::{config::Config, metrics::Emf, telemetry, AppState};
use devconnect_channels::{settings::Settings, Channels};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

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
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        Ok::<_, Error>(emf.invocation(devconnect_channels::run_schedule(ch)).await?)
    }))
    .await
}
