//! API Gateway (payload v2) request helpers and the one JSON response shape.
//!
//! Every response body is JSON; every error is
//! `{"error":{"code":"...","message":"...","requestId":"..."}}`.

use lambda_http::{
    http::{header, HeaderName, HeaderValue, StatusCode},
    request::RequestContext,
    Body, Request, RequestExt, Response,
};
use serde::{de::DeserializeOwned, Serialize};
use tracing::Instrument;

use crate::{
    error::AppError,
    metrics::Metrics,
    openapi::{ErrorBody, ErrorDetail},
    rate_limit::RateDecision,
    session::COOKIE_NAME,
};

/// Bodies above this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler needs to know about the request besides its body.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    /// API Gateway's request id; logged, returned in errors and used as correlationId.
    pub request_id: String,
    /// API Gateway's matched route, e.g. `POST /auth/signup`.
    pub route_key: String,
    /// The caller's IP (anonymous rate limits).
    pub source_ip: String,
}

impl RequestMeta {
    /// Reads the API Gateway v2 request context.
    pub fn of(req: &Request) -> Self {
        // From API Gateway every field is there; the fallbacks (an id of our own, the method
        // and path) are made only when one is missing.
        let ctx = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => Some(ctx),
            _ => None,
        };
        Self {
            request_id: ctx
                .and_then(|c| c.request_id.clone())
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            route_key: ctx
                .and_then(|c| c.route_key.clone())
                .unwrap_or_else(|| format!("{} {}", req.method(), req.uri().path())),
            source_ip: ctx
                .and_then(|c| c.http.source_ip.clone())
                .unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// The session token: `Authorization: Bearer <token>`, else the session cookie.
pub fn bearer_token(req: &Request) -> Option<&str> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return value.strip_prefix("Bearer ").map(str::trim);
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

/// A path parameter API Gateway extracted, e.g. `{userId}`.
pub fn path_param(req: &Request, name: &str) -> Result<String, AppError> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(String::from)
        .ok_or_else(|| AppError::BadRequest(format!("missing path parameter {name}")))
}

/// A query-string parameter, if present.
pub fn query_param<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query_string_parameters_ref().and_then(|q| q.first(name))
}

/// `?limit=`: `default` when absent, 400 unless 1..=`max`.
pub fn limit_param(req: &Request, default: usize, max: usize) -> Result<usize, AppError> {
    match query_param(req, "limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| AppError::Validation(format!("limit must be a number from 1 to {max}"))),
    }
}

/// Parses the JSON body: 400 `bad_request` if not JSON, 400 `validation_failed` if the
/// JSON has wrong types or missing/unknown fields. (An oversized body never gets here:
/// [`serve`] refuses it with 413 before the route runs.)
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, AppError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::BadRequest("a JSON body is required".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => AppError::Validation(e.to_string()),
        _ => AppError::BadRequest(format!("malformed JSON: {e}")),
    })
}

/// Refuses any body above the size limit. [`serve`] calls it for every route before the
/// route runs, so no handler can forget it (a 10 MB POST /auth/logout is a 413 too).
fn reject_oversized(req: &Request) -> Result<(), AppError> {
    if req.body().as_ref().len() > MAX_BODY_BYTES {
        return Err(AppError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    Ok(())
}

/// A successful response before it is encoded.
///
/// Bodies are typed (`Serialize + ToSchema` structs, the same types `#[utoipa::path]`
/// names in docs/openapi.json), never ad-hoc `json!`, so the document and the code agree.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    /// The JSON, written once here (no intermediate `serde_json::Value`).
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
    /// The X-RateLimit-* figures, written as numbers by [`respond`] (no text in between).
    rate: Option<RateDecision>,
}

impl Reply {
    fn with_body(status: StatusCode, body: impl Serialize) -> Self {
        // Our bodies are structs and string-keyed maps, which always serialize; should one
        // ever fail, the client gets a 500 from `respond`, not a panic.
        let body = serde_json::to_string(&body).ok();
        let status = if body.is_some() {
            status
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self {
            status,
            body,
            headers: Vec::new(),
            rate: None,
        }
    }

    /// 200 with a JSON body.
    pub fn ok(body: impl Serialize) -> Self {
        Self::with_body(StatusCode::OK, body)
    }

    /// 201 with a JSON body.
    pub fn created(body: impl Serialize) -> Self {
        Self::with_body(StatusCode::CREATED, body)
    }

    /// 503 with a JSON body (a health report that is not an error).
    pub fn unavailable(body: impl Serialize) -> Self {
        Self::with_body(StatusCode::SERVICE_UNAVAILABLE, body)
    }

    /// 204.
    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            headers: Vec::new(),
            rate: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds the X-RateLimit-* headers of a counted request.
    pub fn rate(mut self, decision: &RateDecision) -> Self {
        self.rate = Some(*decision);
        self
    }
}

/// Runs one request through `route` inside a span carrying the request id, and encodes
/// the outcome. Every HTTP function's `handle` is this plus its route table.
pub async fn serve<F>(req: Request, route: F) -> Response<Body>
where
    F: AsyncFnOnce(&RequestMeta, &Request) -> Result<Reply, AppError>,
{
    let meta = RequestMeta::of(&req);
    let span = tracing::info_span!("request", request_id = %meta.request_id, route = %meta.route_key);
    let outcome = match reject_oversized(&req) {
        Ok(()) => route(&meta, &req).instrument(span.clone()).await,
        Err(err) => Err(err),
    };
    span.in_scope(|| respond(&meta, outcome))
}

/// Invokes an HTTP function's `handle` and records the request in `metrics`: count by
/// route and status class, latency, and a 429 or 401 refusal. Called where the function
/// is invoked (Lambda's `main`, the local gateway), once per request, so every route of
/// every function is measured the same way without each `handle` knowing about it.
pub async fn measured<F, Fut>(metrics: &Metrics, req: Request, handle: F) -> Response<Body>
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response<Body>>,
{
    let started = std::time::Instant::now();
    let route = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.route_key.clone(),
        _ => None,
    }
    // Without a route key (never from API Gateway), the method alone: a raw path
    // would make a new CloudWatch metric per id.
    .unwrap_or_else(|| req.method().to_string());
    let response = handle(req).await;
    metrics.request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// Encodes a handler's outcome: the one place errors become HTTP.
///
/// Every response is `Cache-Control: no-store`: nearly every route carries a token or
/// private data (profiles, messages, sessions), and the few that do not gain nothing
/// from a shared cache; deciding route by route is how a private page ends up cached.
pub fn respond(meta: &RequestMeta, outcome: Result<Reply, AppError>) -> Response<Body> {
    let reply = outcome.unwrap_or_else(|err| error_reply(meta, &err));
    // Headers go straight into the map: static names, numbers as numbers (no builder
    // moving the response through a closure per header, no name parsed per request).
    let mut response = Response::new(match reply.body {
        Some(v) => Body::Text(v),
        None => Body::Empty,
    });
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.reserve(6 + reply.headers.len());
    headers.insert(
        X_REQUEST_ID,
        HeaderValue::from_str(&meta.request_id).unwrap_or(HeaderValue::from_static("-")),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(rate) = &reply.rate {
        headers.insert(RATE_LIMIT, HeaderValue::from(rate.limit));
        headers.insert(RATE_REMAINING, HeaderValue::from(rate.remaining));
        headers.insert(RATE_RESET, HeaderValue::from(rate.reset_secs));
    }
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
    if matches!(response.body(), Body::Text(_)) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATE_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

fn error_reply(meta: &RequestMeta, err: &AppError) -> Reply {
    let status = err.status();
    if status.is_server_error() {
        tracing::error!(error = %crate::error::chain(err), request_id = %meta.request_id, "request failed");
    } else {
        tracing::info!(code = err.code(), status = status.as_u16(), "request refused");
    }
    let mut reply = Reply {
        status,
        body: serde_json::to_string(&ErrorBody {
            error: ErrorDetail {
                code: err.code().to_string(),
                message: err.public_message().to_string(),
                request_id: meta.request_id.clone(),
            },
        })
        .ok(),
        headers: Vec::new(),
        rate: None,
    };
    if let AppError::RateLimited(decision) = err {
        reply = reply.rate(decision);
    }
    if let Some(secs) = err.retry_after() {
        reply = reply.header("retry-after", secs.to_string());
    }
    reply
}

/// The 404 for a route this function does not serve.
pub fn unknown_route(meta: &RequestMeta) -> AppError {
    AppError::NotFound(format!("no route for {}", meta.route_key))
}
