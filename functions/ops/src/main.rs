//! Lambda bootstrap for GET /health.

use std::convert::Infallible;

use devconnect::{config::Config, telemetry, AppState};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let state = AppState::connect(Config::from_env()?, devconnect_ops::FUNCTION_NAME).await?;
    let state = &state;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(devconnect_ops::handle(state, req).await)
    }))
    .await
}
