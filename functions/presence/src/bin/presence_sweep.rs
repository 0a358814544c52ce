//! Lambda bootstrap for the scheduled presence sweep (an EventBridge schedule invokes it).

use devconnect::{bootstrap, config::Config, metrics::Emf, telemetry, AppState};
use lambda_runtime::Error;
use serde_json::json;

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_presence::FUNCTION_NAME).await?;
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let state: &'static AppState = Box::leak(Box::new(state.with_metrics(metrics)));
    bootstrap::serve_scheduled(emf, move |event| async move {
        let marked = devconnect_presence::sweep(state, &event.context.request_id).await?;
        Ok(json!({ "markedOffline": marked }))
    })
    .await
}
