//! Lambda bootstrap for the auth function: build the clients once, then serve.

use devconnect::{bootstrap, config::Config, metrics::Emf, telemetry, AppState};
use lambda_http::Error;

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    // Metrics in CloudWatch Embedded Metric Format, flushed to stdout once per invocation.
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_auth::FUNCTION_NAME).await?;
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let state: &'static AppState = Box::leak(Box::new(state.with_metrics(metrics)));
    bootstrap::serve_http(emf, &state.metrics, |req| devconnect_auth::handle(state, req)).await
}
