//! Lambda bootstrap for the WebSocket API routes ($connect, $disconnect, $default).

use devconnect::{bootstrap, metrics::Emf, telemetry};
use devconnect_realtime::Realtime;
use lambda_runtime::Error;

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let mut realtime = Realtime::from_env().await?;
    realtime.app = realtime.app.with_metrics(metrics);
    // Process-long, shared by the invocations that run at once (AWS_LAMBDA_MAX_CONCURRENCY).
    let realtime: &'static Realtime = Box::leak(Box::new(realtime));
    bootstrap::serve_websocket(emf, |event| devconnect_realtime::handle(realtime, event)).await
}
