//! Lambda bootstrap for the channels scheduler (every minute): releases SMS held by
//! quiet hours and sends the digests of days that ended.

use devconnect::{bootstrap, config::Config, metrics::Emf, telemetry, AppState};
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
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let ch: &'static Channels = Box::leak(Box::new(Channels {
        app: app.with_metrics(metrics),
        settings,
    }));
    bootstrap::serve_scheduled(emf, |_event| async { Ok(devconnect_channels::run_schedule(ch).await?) }).await
}
