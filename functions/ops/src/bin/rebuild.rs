//! Rebuilds a projection from the topics (see `devconnect::rebuild`).
//!
//! In Lambda (no arguments): invoked by hand with `{"projection":"analytics"}`; no trigger.
//! Locally: `rebuild <notifications|analytics> [--grace-secs N]` against REDIS_URL and
//! KAFKA_BROKERS (what `./infra/local/run rebuild` runs); prints the report as JSON.

use std::time::Duration;

use devconnect::{config::Config, metrics::Emf, rebuild::Options, telemetry, AppState};
use devconnect_ops::rebuild::{rebuild, RebuildRequest};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(projection) = args.first() {
        let grace = match args.get(1).map(String::as_str) {
            Some("--grace-secs") => args
                .get(2)
                .and_then(|s| s.parse().ok())
                .ok_or("--grace-secs takes seconds")?,
            Some(other) => return Err(format!("unexpected argument {other:?}").into()),
            None => Options::default().cleanup_grace.as_secs(),
        };
        let options = Options {
            cleanup_grace: Duration::from_secs(grace),
            ..Options::default()
        };
        let state = AppState::connect(Config::from_env()?, devconnect_ops::FUNCTION_NAME).await?;
        let request = RebuildRequest {
            projection: projection.clone(),
        };
        let report = rebuild(&state, &request, &options).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, devconnect_ops::FUNCTION_NAME).await?;
    let state = &state.with_metrics(metrics);
    // One invocation at a time even on Lambda Managed Instances: a rebuild holds the
    // projection's lock, so a second one at once could only wait for it (and the rebuild
    // future is not Send, which concurrent workers need).
    run(service_fn(move |event: LambdaEvent<RebuildRequest>| async move {
        let trace = event.context.xray_trace_id.clone();
        let report = telemetry::in_invocation(
            trace,
            emf.invocation(rebuild(state, &event.payload, &Options::default())),
        )
        .await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
