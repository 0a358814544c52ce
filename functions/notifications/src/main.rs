//! Lambda bootstrap for the notifications HTTP routes: build the clients once, then serve.

use std::convert::Infallible;

use devconnect::{config::Config, telemetry, AppState};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let state = AppState::connect(Config::from_env()?, devconnect_notifications::FUNCTION_NAME).await?;
    let state = &state;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(devconnect_notifications::handle(state, req).await)
    }))
    .await
}
