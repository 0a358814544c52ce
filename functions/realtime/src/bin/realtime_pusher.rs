//! Lambda bootstrap for the pusher (MSK event source): events in, frames out to sockets.

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::telemetry;
use devconnect_realtime::Realtime;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let realtime = Realtime::from_env().await?;
    let realtime = &realtime;
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        // A partial batch response: failed records are retried or dead-lettered, never the whole batch.
        Ok::<_, Error>(devconnect_realtime::push_batch(realtime, event.payload).await.response)
    }))
    .await
}
