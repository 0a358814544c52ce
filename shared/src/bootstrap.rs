//! The Lambda runtime loops the bootstraps run: one for API Gateway requests, one for
//! scheduled (EventBridge) invocations; the Kafka one is [`crate::consumer::serve`].
//!
//! Each loop is compiled once, here. A bootstrap hands its handler over as a closure that
//! is boxed at the door, so lambda_runtime (its HTTP client, the event's JSON decoding, the
//! concurrency machinery) is not instantiated again over every bootstrap's own types. That
//! instantiation was ~12 s of CPU per bootstrap in `sam build`, 19 times, and again after
//! any change in `shared/` (issue 14, target 7). A boxed future per invocation costs one
//! allocation.

use std::{convert::Infallible, future::Future, pin::Pin};

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
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

type HttpHandler = dyn Fn(Request) -> BoxFuture<Response<Body>> + Send + Sync;
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

async fn http_loop(emf: Emf, metrics: &'static Metrics, handle: &'static HttpHandler) -> Result<(), Error> {
    lambda_http::run_concurrent(service_fn(move |req: Request| async move {
        let trace = req.lambda_context_ref().and_then(|c| c.xray_trace_id.clone());
        let response = api::measured(metrics, req, handle);
        Ok::<_, Infallible>(telemetry::in_invocation(trace, emf.invocation(response)).await)
    }))
    .await
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

async fn scheduled_loop(emf: Emf, run: &'static ScheduledHandler) -> Result<(), Error> {
    lambda_runtime::run_concurrent(service_fn(move |event: LambdaEvent<Value>| async move {
        let trace = event.context.xray_trace_id.clone();
        telemetry::in_invocation(trace, emf.invocation(run(event))).await
    }))
    .await
}
