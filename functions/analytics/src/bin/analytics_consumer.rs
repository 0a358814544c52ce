//! Lambda bootstrap for the analytics consumer (MSK event source).

use devconnect::{config::Config, consumer, metrics::Emf, telemetry, AppState};
use devconnect_analytics::{consume, FUNCTION_NAME};
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
