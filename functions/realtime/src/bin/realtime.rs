//! Lambda bootstrap for the WebSocket API routes ($connect, $disconnect, $default).

use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use devconnect::{config::Config, telemetry, AppState};
use devconnect_realtime::{pusher::Pusher, Realtime};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let app = AppState::connect(Config::from_env()?, devconnect_realtime::FUNCTION_NAME).await?;
    let realtime = Realtime {
        app,
        pusher: Pusher::from_env().await?,
    };
    let realtime = &realtime;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            Ok::<_, Error>(devconnect_realtime::handle(realtime, event.payload).await)
        },
    ))
    .await
}
