//! Lambda bootstrap for the requests function: build the clients once, then serve.

use std::convert::Infallible;

use devconnect::{api, config::Config, metrics::Emf, telemetry, AppState};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    // Metrics in CloudWatch Embedded Metric Format, flushed to stdout once per invocation.
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_requests::FUNCTION_NAME).await?;
    let state = &state.with_metrics(metrics);
    run(service_fn(move |req: Request| async move {
        let response = api::measured(&state.metrics, req, |req| devconnect_requests::handle(state, req));
        Ok::<_, Infallible>(emf.invocation(response).await)
    }))
    .await
}
