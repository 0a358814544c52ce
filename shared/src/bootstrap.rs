//! The Lambda runtime loops the bootstraps run: one for API Gateway HTTP requests, one for
//! WebSocket route events, one for scheduled (EventBridge) invocations; the Kafka one is
//! [`crate::consumer::serve`].
//!
//! Each loop is compiled once, here. A bootstrap hands its handler over as a closure that
//! is boxed at the door, so lambda_runtime (its HTTP client, the event's JSON decoding, the
//! concurrency machinery) is not instantiated again over every bootstrap's own types. That
//! instantiation was ~12 s of CPU per bootstrap in `sam build`, 19 times, and again after
//! any change in `shared/` (issue 14, target 7). A boxed future per invocation costs one
//! allocation.

use std::{convert::Infallible, future::Future, pin::Pin};

use aws_lambda_events::event::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_http::{
    lambda_runtime::{self, LambdaEvent},
    service_fn, Body, Error, Request, RequestExt, Response,
};
use serde_json::Value;

use crate::{
    api,
    metrics::{Emf, Metrics},
    telemetry,
};

/// A handler's future, boxed so the loop that awaits it is not generic over it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A runtime loop: it runs on `main`'s thread (tokio's `block_on`), so it need not be `Send`
/// (lambda_runtime's `run_concurrent` futures are not `Send` for every lifetime).
pub(crate) type Loop = Pin<Box<dyn Future<Output = Result<(), Error>>>>;

type HttpHandler = dyn Fn(Request) -> BoxFuture<Response<Body>> + Send + Sync;
type WebSocketHandler = dyn Fn(ApiGatewayWebsocketProxyRequest) -> BoxFuture<ApiGatewayProxyResponse> + Send + Sync;
type ScheduledHandler = dyn Fn(LambdaEvent<Value>) -> BoxFuture<Result<Value, Error>> + Send + Sync;

/// Runs an HTTP function until the runtime stops: every request goes to `handle` (which
/// never fails: errors are already JSON responses), is counted in `metrics` by route and
/// status, runs under its invocation's X-Ray trace id, and the metrics are flushed (EMF)
/// once per invocation. Invocations run at once up to `AWS_LAMBDA_MAX_CONCURRENCY`.
pub async fn serve_http<F, Fut>(emf: Emf, metrics: &'static Metrics, handle: F) -> Result<(), Error>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handle: &'static HttpHandler = Box::leak(Box::new(move |req| Box::pin(handle(req)) as BoxFuture<_>));
    http_loop(emf, metrics, handle).await
}

fn http_loop(emf: Emf, metrics: &'static Metrics, handle: &'static HttpHandler) -> Loop {
    Box::pin(lambda_http::run_concurrent(service_fn(
        move |req: Request| async move {
            let trace = req.lambda_context_ref().and_then(|c| c.xray_trace_id.clone());
            let response = api::measured(metrics, req, handle);
            Ok::<_, Infallible>(telemetry::in_invocation(trace, emf.invocation(response)).await)
        },
    )))
}

/// Runs the WebSocket function until the runtime stops: every route event (`$connect`,
/// `$disconnect`, `$default`) goes to `handle`, whose answer is the status (and the frame
/// for the sender), under its invocation's X-Ray trace id, with the metrics flushed (EMF)
/// once per invocation.
pub async fn serve_websocket<F, Fut>(emf: Emf, handle: F) -> Result<(), Error>
where
    F: Fn(ApiGatewayWebsocketProxyRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ApiGatewayProxyResponse> + Send + 'static,
{
    let handle: &'static WebSocketHandler = Box::leak(Box::new(move |event| Box::pin(handle(event)) as BoxFuture<_>));
    websocket_loop(emf, handle).await
}

fn websocket_loop(emf: Emf, handle: &'static WebSocketHandler) -> Loop {
    Box::pin(lambda_runtime::run_concurrent(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            let trace = event.context.xray_trace_id.clone();
            Ok::<_, Error>(telemetry::in_invocation(trace, emf.invocation(handle(event.payload))).await)
        },
    )))
}

/// Runs a scheduled function until the runtime stops: every invocation goes to `run`
/// with its event (the payload as JSON; the context carries the request id), under its
/// X-Ray trace id, with the metrics flushed (EMF) once per invocation. An error fails the
/// invocation, which Lambda reports and the schedule's retry policy retries.
pub async fn serve_scheduled<F, Fut>(emf: Emf, run: F) -> Result<(), Error>
where
    F: Fn(LambdaEvent<Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Error>> + Send + 'static,
{
    let run: &'static ScheduledHandler = Box::leak(Box::new(move |event| Box::pin(run(event)) as BoxFuture<_>));
    scheduled_loop(emf, run).await
}

fn scheduled_loop(emf: Emf, run: &'static ScheduledHandler) -> Loop {
    Box::pin(lambda_runtime::run_concurrent(service_fn(
        move |event: LambdaEvent<Value>| async move {
            let trace = event.context.xray_trace_id.clone();
            telemetry::in_invocation(trace, emf.invocation(run(event))).await
        },
    )))
}
