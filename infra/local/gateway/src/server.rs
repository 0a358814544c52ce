//! The HTTP front door: route by template, build the event, call the handler.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::{to_bytes, Body as AxumBody},
    extract::{ConnectInfo, Request as AxumRequest, State},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response as AxumResponse},
    routing::{get, post},
    Router,
};
use lambda_http::Body;
use serde_json::json;

use crate::{
    apigw::{self, HttpCall},
    functions::Functions,
    routes::{Lookup, Routes},
    template::Template,
    websocket,
};

/// The HTTP API's payload quota (10 MB): past it API Gateway answers 413 itself.
pub const MAX_GATEWAY_BODY: usize = 10 * 1024 * 1024;

/// Lambda's synchronous invocation payload quota (6 MB) for the request: the whole event
/// JSON, so headers count and a binary body counts base64-encoded (a third larger).
/// Lambda refuses the invocation and API Gateway answers 413 before the function runs.
pub const MAX_LAMBDA_REQUEST: usize = 6 * 1024 * 1024;

/// Lambda's payload quota for the response (6 MB, measured by Lambda as 6,291,556 bytes):
/// past it the invocation fails after the function ran, and API Gateway answers 502.
pub const MAX_LAMBDA_RESPONSE: usize = 6 * 1024 * 1024 + 100;

/// Local only (not in template.yaml, so never deployed): the metrics every hosted function
/// recorded since the gateway started, the same names and dimensions as in CloudWatch.
pub const METRICS_PATH: &str = "/_local/metrics";

/// The template's routes bound to in-process functions.
pub struct Gateway {
    /// What template.yaml declares.
    pub template: Template,
    /// `template.routes`, compiled for matching requests.
    pub routes: Routes,
    /// The handlers.
    pub functions: Functions,
    /// Open WebSocket connections.
    pub sockets: websocket::Sockets,
    /// The WebSocket API's message, frame, idle and lifetime limits.
    pub websocket_limits: websocket::Limits,
    /// The HTTP API's throttling (template `DefaultRouteSettings`).
    pub http_bucket: Option<TokenBucket>,
    /// The WebSocket stage's throttling (template `DefaultRouteSettings`).
    pub websocket_bucket: Option<TokenBucket>,
}

impl Gateway {
    /// A gateway serving `template` with `functions`.
    /// Each function runs within its template `Timeout`; the HTTP API's and the
    /// WebSocket stage's throttling and the WebSocket limits (
    /// [`websocket::Limits::from_env`]) apply.
    pub fn new(template: Template, mut functions: Functions) -> Self {
        functions.set_timeouts(template.timeouts.clone());
        Self {
            http_bucket: template.http_throttle.map(TokenBucket::new),
            websocket_bucket: template.websocket_throttle.map(TokenBucket::new),
            routes: Routes::new(&template.routes),
            template,
            functions,
            sockets: websocket::Sockets::default(),
            websocket_limits: websocket::Limits::from_env(),
        }
    }
}

/// API Gateway's throttling: a token bucket of `burst` tokens refilled at `rate` per second.
pub struct TokenBucket {
    throttle: crate::template::Throttle,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(throttle: crate::template::Throttle) -> Self {
        Self {
            throttle,
            state: std::sync::Mutex::new((throttle.burst, std::time::Instant::now())),
        }
    }

    /// Takes a token; `false` = throttled.
    pub fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.throttle.rate).min(self.throttle.burst);
        let (tokens, allowed) = if tokens >= 1.0 {
            (tokens - 1.0, true)
        } else {
            (tokens, false)
        };
        *state = (tokens, now);
        allowed
    }
}

/// The axum app: every HttpApi route of the template, the WebSocket API on `/ws`,
/// the `@connections` management endpoint, and [`METRICS_PATH`].
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(websocket::PATH, get(websocket::upgrade))
        .route(METRICS_PATH, get(local_metrics).fallback(metrics_method_not_allowed))
        .route(crate::outbox::MAIL_PATH, get(crate::outbox::mail))
        .route(crate::outbox::SMS_PATH, get(crate::outbox::sms))
        .route(crate::openapi::PATH, get(crate::openapi::serve))
        .route(
            "/@connections/{id}",
            post(websocket::post_to_connection)
                .delete(websocket::delete_connection)
                .get(websocket::get_connection)
                .route_layer(axum::middleware::from_fn(websocket::signed)),
        )
        .fallback(dispatch)
        .with_state(gateway)
}

/// Runs every scheduled function on its period, capped at `max_period` so local runs are quick.
pub fn spawn_schedules(gateway: Arc<Gateway>, max_period: Duration) {
    for schedule in gateway.template.schedules.clone() {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(schedule.every.min(max_period));
            loop {
                tick.tick().await;
                if let Err(e) = gateway.functions.invoke_scheduled(&schedule.function).await {
                    tracing::warn!(function = %schedule.function, error = %e, "scheduled invocation failed");
                }
            }
        });
    }
}

/// `GET /_local/metrics`: `{"namespace", "counters", "gauges", "histograms"}`, each entry
/// `{"name", "dimensions": {"Function", ...}, "unit", "value"}` (histograms: count, sum,
/// min, max, p50, p99), totals since the gateway started.
async fn local_metrics(State(gateway): State<Arc<Gateway>>) -> AxumResponse {
    let snapshot = gateway.functions.metrics().snapshot().unwrap_or_default();
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        snapshot.to_string(),
    )
        .into_response()
}

async fn metrics_method_not_allowed(req: AxumRequest) -> AxumResponse {
    gateway_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{} is not allowed on {METRICS_PATH}", req.method()),
    )
}

async fn dispatch(State(gateway): State<Arc<Gateway>>, req: AxumRequest) -> AxumResponse {
    let origin = req
        .headers()
        .get("origin")
        .and_then(|o| o.to_str().ok())
        .map(String::from);
    if let (Some(cors), Some(origin)) = (&gateway.template.cors, &origin) {
        if req.method() == axum::http::Method::OPTIONS && req.headers().contains_key("access-control-request-method") {
            return preflight(cors, origin);
        }
    }
    if gateway.http_bucket.as_ref().is_some_and(|b| !b.take()) {
        return aws_message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    }
    let mut response = route(gateway.clone(), req).await;
    if let (Some(cors), Some(origin)) = (&gateway.template.cors, &origin) {
        add_cors(cors, origin, &mut response);
    }
    response
}

/// `{"message": ...}`: what API Gateway itself answers when it refuses a request.
fn aws_message(status: StatusCode, message: &str) -> AxumResponse {
    (
        status,
        [("content-type", "application/json")],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

/// The origin to echo, if `cors` allows `origin`.
fn allowed_origin(cors: &crate::template::Cors, origin: &str) -> Option<String> {
    if cors.allow_origins.iter().any(|o| o == origin) {
        Some(origin.to_string())
    } else if cors.allow_origins.iter().any(|o| o == "*") {
        Some("*".into())
    } else {
        None
    }
}

/// API Gateway answers a CORS preflight itself (204), with the configured headers when
/// the origin is allowed.
fn preflight(cors: &crate::template::Cors, origin: &str) -> AxumResponse {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(allowed) = allowed_origin(cors, origin) {
        let mut headers = vec![
            ("access-control-allow-origin", allowed),
            ("access-control-allow-methods", cors.allow_methods.join(",")),
            ("access-control-allow-headers", cors.allow_headers.join(",")),
        ];
        if let Some(age) = cors.max_age {
            headers.push(("access-control-max-age", age.to_string()));
        }
        if cors.allow_credentials {
            headers.push(("access-control-allow-credentials", "true".into()));
        }
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    response
}

/// The CORS headers API Gateway adds to an actual request's response.
fn add_cors(cors: &crate::template::Cors, origin: &str, response: &mut AxumResponse) {
    let Some(allowed) = allowed_origin(cors, origin) else {
        return;
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        headers.insert("access-control-allow-origin", v);
    }
    if !cors.expose_headers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cors.expose_headers.join(",")) {
            headers.insert("access-control-expose-headers", v);
        }
    }
    if cors.allow_credentials {
        headers.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
    }
}

async fn route(gateway: Arc<Gateway>, req: AxumRequest) -> AxumResponse {
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let (mut parts, body) = req.into_parts();
    let method = parts.method.as_str();
    let path = parts.uri.path();
    let (route, route_key, params) = match gateway.routes.find(method, path) {
        Lookup::Found(m) => (m.route, m.route_key, m.params),
        Lookup::NotFound => {
            return gateway_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {method} {path}"),
            )
        }
        Lookup::MethodNotAllowed => {
            return gateway_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{method} is not allowed on {path}"),
            )
        }
    };
    let Ok(bytes) = to_bytes(body, MAX_GATEWAY_BODY).await else {
        return aws_message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let call = HttpCall {
        route_key: route_key.to_string(),
        method,
        path,
        query: parts.uri.query().unwrap_or_default(),
        headers: std::mem::take(&mut parts.headers),
        path_params: params,
        body: &bytes,
        source_ip,
    };
    let event = apigw::typed_event(&call);
    // JSON escaping grows a body at most sixfold, so only a body past a sixth of the quota
    // can make the event too large: the common small request is never written as JSON.
    if bytes.len() > MAX_LAMBDA_REQUEST / 6 && apigw::to_json(&event).to_string().len() > MAX_LAMBDA_REQUEST {
        tracing::warn!(function = %route.function, "request over Lambda's 6 MB invocation payload quota");
        return aws_message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    }
    let request = apigw::into_request(event);
    match gateway.functions.invoke_http(&route.function, request).await {
        Some(response) => lambda_response(&route.function, response),
        None => gateway_error(
            StatusCode::BAD_GATEWAY,
            "function_not_hosted",
            &format!("{} is not hosted locally", route.function),
        ),
    }
}

/// What the client gets for a function's response: the response itself, or API Gateway's
/// 502 when it is over Lambda's response payload quota ([`MAX_LAMBDA_RESPONSE`]), as the
/// invocation then fails in AWS ("Response payload size exceeded maximum allowed payload size").
pub fn lambda_response(function: &str, response: lambda_http::Response<Body>) -> AxumResponse {
    let body_len = match response.body() {
        Body::Text(t) => t.len(),
        Body::Binary(b) => b.len(),
        _ => 0,
    };
    // As for requests: only a body past a sixth of the quota can exceed it once encoded.
    let size = match body_len > MAX_LAMBDA_RESPONSE / 6 {
        true => apigw::response_json(&response).to_string().len(),
        false => 0,
    };
    if size > MAX_LAMBDA_RESPONSE {
        tracing::warn!(function, size, "response over Lambda's 6 MB invocation payload quota");
        return aws_message(StatusCode::BAD_GATEWAY, "Internal Server Error");
    }
    into_axum(response)
}

fn into_axum(response: lambda_http::Response<Body>) -> AxumResponse {
    // lambda_http and axum share the `http` crate: status and headers move over as they are.
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    AxumResponse::from_parts(parts, AxumBody::from(bytes))
}

/// What API Gateway itself answers (no function involved), in the product's error shape.
fn gateway_error(status: StatusCode, code: &str, message: &str) -> AxumResponse {
    let body = json!({"error": {"code": code, "message": message, "requestId": uuid::Uuid::now_v7().to_string()}});
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}
