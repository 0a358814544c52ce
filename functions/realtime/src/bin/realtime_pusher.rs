//! Lambda bootstrap for the pusher (MSK event source): events in, frames out to sockets.

use devconnect::{consumer, metrics::Emf, telemetry};
use devconnect_realtime::{push_batch, Realtime};
use lambda_runtime::Error;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let mut realtime = Realtime::from_env().await?;
    realtime.app = realtime.app.with_metrics(metrics);
    consumer::serve(emf, realtime, push_batch).await
}
