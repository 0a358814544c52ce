//! The HTTP front door: route by template, build the event, call the handler.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::{to_bytes, Body as AxumBody},
    extract::{ConnectInfo, Request as AxumRequest, State},
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response as AxumResponse},
    routing::{get, post},
    Router,
};
use lambda_http::Body;
use serde_json::json;

use crate::{
    apigw::{self, HttpCall},
    functions::Functions,
    template::Template,
    websocket,
};

/// API Gateway's payload limit.
const MAX_GATEWAY_BODY: usize = 10 * 1024 * 1024;

/// Local only (not in template.yaml, so never deployed): the metrics every hosted function
/// recorded since the gateway started, the same names and dimensions as in CloudWatch.
pub const METRICS_PATH: &str = "/_local/metrics";

/// The template's routes bound to in-process functions.
pub struct Gateway {
    /// What template.yaml declares.
    pub template: Template,
    /// The handlers.
    pub functions: Functions,
    /// Open WebSocket connections.
    pub sockets: websocket::Sockets,
}

impl Gateway {
    /// A gateway serving `template` with `functions`.
    pub fn new(template: Template, functions: Functions) -> Self {
        Self {
            template,
            functions,
            sockets: websocket::Sockets::default(),
        }
    }
}

/// The axum app: every HttpApi route of the template, the WebSocket API on `/ws`,
/// the `@connections` management endpoint, and [`METRICS_PATH`].
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(websocket::PATH, get(websocket::upgrade))
        .route(METRICS_PATH, get(local_metrics).fallback(metrics_method_not_allowed))
        .route(
            "/@connections/{id}",
            post(websocket::post_to_connection)
                .delete(websocket::delete_connection)
                .get(websocket::get_connection),
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
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let candidates: Vec<_> = gateway
        .template
        .routes
        .iter()
        .filter_map(|r| r.match_path(&path).map(|params| (r, params)))
        .collect();
    if candidates.is_empty() {
        return gateway_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no route for {method} {path}"),
        );
    }
    let Some((route, params)) = candidates
        .into_iter()
        .find(|(r, _)| r.method == method || r.method == "ANY")
    else {
        return gateway_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        );
    };
    let Ok(bytes) = to_bytes(body, MAX_GATEWAY_BODY).await else {
        return gateway_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body exceeds 10 MiB",
        );
    };
    let call = HttpCall {
        route_key: route.route_key(),
        method: &method,
        path: &path,
        query: parts.uri.query().unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        path_params: params,
        body: &bytes,
        source_ip,
    };
    let request = match apigw::request(&apigw::event(&call)) {
        Ok(r) => r,
        Err(e) => {
            return gateway_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("unparseable request: {e}"),
            )
        }
    };
    match gateway.functions.invoke_http(&route.function, request).await {
        Some(response) => into_axum(response),
        None => gateway_error(
            StatusCode::BAD_GATEWAY,
            "function_not_hosted",
            &format!("{} is not hosted locally", route.function),
        ),
    }
}

fn into_axum(response: lambda_http::Response<Body>) -> AxumResponse {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    let mut out = AxumResponse::new(AxumBody::from(bytes));
    *out.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    out
}

/// What API Gateway itself answers (no function involved), in the product's error shape.
fn gateway_error(status: StatusCode, code: &str, message: &str) -> AxumResponse {
    let body = json!({"error": {"code": code, "message": message, "requestId": uuid::Uuid::now_v7().to_string()}});
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}
