//! Lambda bootstrap for the auth function: build the clients once, then serve.

use std::convert::Infallible;

use devconnect::{config::Config, telemetry, AppState};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let state = AppState::connect(config, devconnect_auth::FUNCTION_NAME).await?;
    let state = &state;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(devconnect_auth::handle(state, req).await)
    }))
    .await
}
