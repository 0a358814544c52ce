//! Lambda bootstrap for the WebSocket API routes ($connect, $disconnect, $default).

use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use devconnect::telemetry;
use devconnect_realtime::Realtime;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let realtime = Realtime::from_env().await?;
    let realtime = &realtime;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            Ok::<_, Error>(devconnect_realtime::handle(realtime, event.payload).await)
        },
    ))
    .await
}
