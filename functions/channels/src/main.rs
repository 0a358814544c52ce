//! Lambda bootstrap for the channels HTTP routes (preferences, unsubscribe): build the clients once, then serve.

use std::convert::Infallible;

use devconnect::{api, config::Config, metrics::Emf, telemetry, AppState};
use devconnect_channels::{settings::Settings, Channels};
use lambda_http::{run_concurrent, service_fn, Error, Request, RequestExt};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let app = AppState::connect(Config::from_env()?, devconnect_channels::FUNCTION_NAME).await?;
    let settings = Settings::from_env("http://127.0.0.1:3000")?;
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let ch: &'static Channels = Box::leak(Box::new(Channels {
        app: app.with_metrics(metrics),
        settings,
    }));
    run_concurrent(service_fn(move |req: Request| async move {
        let trace = req.lambda_context_ref().and_then(|c| c.xray_trace_id.clone());
        let response = api::measured(&ch.app.metrics, req, |req| devconnect_channels::handle(ch, req));
        Ok::<_, Infallible>(telemetry::in_invocation(trace, emf.invocation(response)).await)
    }))
    .await
}
