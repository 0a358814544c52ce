//! Lambda bootstrap for the auth function: build the clients once, then serve.

use std::convert::Infallible;

use devconnect::{api, config::Config, metrics::Emf, telemetry, AppState};
use lambda_http::{run_concurrent, service_fn, Error, Request, RequestExt};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    // Metrics in CloudWatch Embedded Metric Format, flushed to stdout once per invocation.
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_auth::FUNCTION_NAME).await?;
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let state: &'static AppState = Box::leak(Box::new(state.with_metrics(metrics)));
    run_concurrent(service_fn(move |req: Request| async move {
        let trace = req.lambda_context_ref().and_then(|c| c.xray_trace_id.clone());
        let response = api::measured(&state.metrics, req, |req| devconnect_auth::handle(state, req));
        Ok::<_, Infallible>(telemetry::in_invocation(trace, emf.invocation(response)).await)
    }))
    .await
}
