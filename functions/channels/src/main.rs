//! Lambda bootstrap for the channels HTTP routes (preferences, unsubscribe): build the clients once, then serve.

use std::convert::Infallible;

use devconnect::{api, config::Config, metrics::Emf, telemetry, AppState};
use devconnect_channels::{settings::Settings, Channels};
use lambda_http::{run, service_fn, Error, Request};

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
    run(service_fn(move |req: Request| async move {
        let response = api::measured(&ch.app.metrics, req, |req| devconnect_channels::handle(ch, req));
        Ok::<_, Infallible>(emf.invocation(response).await)
    }))
    .await
}
