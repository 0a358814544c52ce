//! Lambda bootstrap for the analytics report route: build the clients once, then serve.

use std::convert::Infallible;

use devconnect::{config::Config, telemetry, AppState};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let state = AppState::connect(Config::from_env()?, devconnect_analytics::FUNCTION_NAME).await?;
    let state = &state;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(devconnect_analytics::handle(state, req).await)
    }))
    .await
}
