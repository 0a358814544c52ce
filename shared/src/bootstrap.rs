//! The Lambda runtime loops the bootstraps run: one for API Gateway HTTP requests, one for
//! WebSocket route events, one for scheduled (EventBridge) invocations; the Kafka one is
//! [`crate::consumer::serve`].
//!
//! Why the boxes: an `async fn`'s body is compiled in the crate that polls its future, not
//! in the one that defines it. When each bootstrap's `main` ran lambda_runtime over its own
//! handler and awaited [`crate::AppState::connect`], all of that (the runtime's client and
//! event decoding, endpoint discovery and its AWS SDK calls) was compiled again in every one
//! of the 19 binaries: 10-14 s of CPU each, a quarter of a cold `sam build` and most of a
//! rebuild after a change in `shared/` (issue 14, target 7). A loop here is a plain function
//! returning a future boxed in this crate, so this crate compiles it once; a bootstrap
//! compiles only its own handlers (boxed at the door: one allocation per invocation).

use std::{convert::Infallible, future::Future};

use aws_lambda_events::event::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use futures::future::{BoxFuture, FutureExt, LocalBoxFuture};
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

/// The tokio runtime a bootstrap's `main` blocks on: one thread while Lambda sends one
/// invocation at a time, the multi-threaded one when `AWS_LAMBDA_MAX_CONCURRENCY` (Lambda
/// Managed Instances) lets several run at once.
///
/// One invocation at a time gains nothing from worker threads and pays for them: the
/// request's task, the Redis connection's driver and the producer's wake one another across
/// cores, and memory allocated on one thread is freed on another (mimalloc's slower
/// cross-thread path, cache lines moving between cores). The `cpu_cost` bench's gateway
/// on either runtime: 20-25 % less CPU per request on one thread
/// (docs/PERFORMANCE-HISTORY.md).
/// Blocking work (password hashing) still goes to the blocking pool, which both have.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match concurrent(std::env::var(MAX_CONCURRENCY_VAR).ok().as_deref()) {
        true => tokio::runtime::Builder::new_multi_thread(),
        false => tokio::runtime::Builder::new_current_thread(),
    };
    builder.enable_all().build()
}

/// Lambda's variable for how many invocations one execution environment takes at once.
pub const MAX_CONCURRENCY_VAR: &str = "AWS_LAMBDA_MAX_CONCURRENCY";

/// Whether [`MAX_CONCURRENCY_VAR`]'s value lets more than one invocation run at once.
fn concurrent(max_concurrency: Option<&str>) -> bool {
    max_concurrency
        .and_then(|n| n.trim().parse::<u32>().ok())
        .is_some_and(|n| n > 1)
}

/// A runtime loop: it runs on `main`'s thread (tokio's `block_on`), so it need not be `Send`
/// (lambda_runtime's `run_concurrent` futures are not `Send` for every lifetime).
pub(crate) type Loop = LocalBoxFuture<'static, Result<(), Error>>;

/// A handler as the loops take it: for the life of the process, its futures boxed so the
/// loop that awaits them is not generic over them.
pub(crate) type Handler<A, T> = &'static (dyn Fn(A) -> BoxFuture<'static, T> + Send + Sync);

/// `handle` as a [`Handler`]: this is generic, so it is compiled in the bootstrap, and it is
/// all that is.
pub(crate) fn boxed<A, T, F, Fut>(handle: F) -> Handler<A, T>
where
    A: 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    Box::leak(Box::new(move |arg| handle(arg).boxed()))
}

/// Runs an HTTP function until the runtime stops: every request goes to `handle` (which
/// never fails: errors are already JSON responses), is counted in `metrics` by route and
/// status, runs under its invocation's X-Ray trace id, and the metrics are flushed (EMF)
/// once per invocation. Invocations run at once up to `AWS_LAMBDA_MAX_CONCURRENCY`.
pub async fn serve_http<F, Fut>(emf: Emf, metrics: &'static Metrics, handle: F) -> Result<(), Error>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    http_loop(emf, metrics, boxed(handle)).await
}

fn http_loop(emf: Emf, metrics: &'static Metrics, handle: Handler<Request, Response<Body>>) -> Loop {
    lambda_http::run_concurrent(service_fn(move |req: Request| async move {
        let trace = req.lambda_context_ref().and_then(|c| c.xray_trace_id.clone());
        let response = api::measured(metrics, req, handle);
        Ok::<_, Infallible>(telemetry::in_invocation(trace, emf.invocation(response)).await)
    }))
    .boxed_local()
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
    websocket_loop(emf, boxed(handle)).await
}

fn websocket_loop(emf: Emf, handle: Handler<ApiGatewayWebsocketProxyRequest, ApiGatewayProxyResponse>) -> Loop {
    lambda_runtime::run_concurrent(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            let trace = event.context.xray_trace_id.clone();
            Ok::<_, Error>(telemetry::in_invocation(trace, emf.invocation(handle(event.payload))).await)
        },
    ))
    .boxed_local()
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
    scheduled_loop(emf, boxed(run)).await
}

fn scheduled_loop(emf: Emf, run: Handler<LambdaEvent<Value>, Result<Value, Error>>) -> Loop {
    lambda_runtime::run_concurrent(service_fn(move |event: LambdaEvent<Value>| async move {
        let trace = event.context.xray_trace_id.clone();
        telemetry::in_invocation(trace, emf.invocation(run(event))).await
    }))
    .boxed_local()
}

#[cfg(test)]
mod tests {
    use super::concurrent;

    #[test]
    fn only_a_max_concurrency_above_one_gets_worker_threads() {
        assert!(!concurrent(None));
        assert!(!concurrent(Some("1")));
        assert!(!concurrent(Some("many")));
        assert!(concurrent(Some("8")));
    }
}
