//! Lambda bootstrap for the notifications consumer (MSK event source).

use devconnect::{config::Config, consumer, metrics::Emf, telemetry, AppState};
use devconnect_notifications::{consume, FUNCTION_NAME};
use lambda_runtime::Error;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, FUNCTION_NAME).await?;
    consumer::serve(emf, state.with_metrics(metrics), consume).await
}
