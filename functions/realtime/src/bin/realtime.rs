//! Lambda bootstrap for the WebSocket API routes ($connect, $disconnect, $default).

use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use devconnect::{metrics::Emf, telemetry};
use devconnect_realtime::Realtime;
use lambda_runtime::{run_concurrent, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let mut realtime = Realtime::from_env().await?;
    realtime.app = realtime.app.with_metrics(metrics);
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let realtime: &'static Realtime = Box::leak(Box::new(realtime));
    run_concurrent(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            let trace = event.context.xray_trace_id.clone();
            // Metrics (refused connects) flushed to stdout (EMF) once per event.
            Ok::<_, Error>(
                telemetry::in_invocation(
                    trace,
                    emf.invocation(devconnect_realtime::handle(realtime, event.payload)),
                )
                .await,
            )
        },
    ))
    .await
}
