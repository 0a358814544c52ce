//! Lambda bootstrap for the channels router (MSK event source on notification-events).

use devconnect::{config::Config, consumer, metrics::Emf, telemetry, AppState};
use devconnect_channels::{settings::Settings, Channels};
use lambda_runtime::Error;

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let app = AppState::connect(Config::from_env()?, devconnect_channels::FUNCTION_NAME).await?;
    let settings = Settings::from_env("http://127.0.0.1:3000")?;
    let ch = Channels {
        app: app.with_metrics(metrics),
        settings,
    };
    consumer::serve(emf, ch, devconnect_channels::consume).await
}
