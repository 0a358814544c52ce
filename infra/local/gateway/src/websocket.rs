//! API Gateway's WebSocket API, emulated: sockets on `/ws` become `$connect`,
//! `$default` and `$disconnect` events for the realtime function, and the
//! `@connections` management endpoint (PostToConnection, DeleteConnection,
//! GetConnection) writes to the local sockets, so the real SDK client works locally.
//! Like API Gateway's (IAM-authorised: `execute-api:ManageConnections`), it refuses a
//! request that is not SigV4-signed; it cannot check the signature or the caller's
//! policy, as there is no IAM here.
//!
//! As in API Gateway, a route answers the client with the function's response body
//! only when template.yaml gives it a route response (two-way communication, see
//! [`crate::template::RouteResponses`]); without one the body is dropped, so a function that relies on
//! it fails locally just as it would in AWS.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use aws_lambda_events::{encodings::Body, event::apigw::ApiGatewayWebsocketProxyRequest};
use axum::{
    body::Bytes,
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        ConnectInfo, Path, RawQuery, Request, State,
    },
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{engine::general_purpose::STANDARD, Engine};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::server::Gateway;

/// The path clients connect to.
pub const PATH: &str = "/ws";

/// The route every client frame takes: the template has no action routes, so API
/// Gateway's route selection (`$request.body.action`) always falls through to it.
const DEFAULT_ROUTE: &str = "$default";

/// API Gateway's WebSocket limits: a message over 128 KB or a frame over 32 KB closes
/// the connection with 1009 (Message too big); an idle connection is closed after
/// 10 minutes and every connection after 2 hours (1001, Going away).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message.
    pub message_bytes: usize,
    /// Largest frame.
    pub frame_bytes: usize,
    /// Closed after this long without a message from the client.
    pub idle: std::time::Duration,
    /// Closed this long after it opened.
    pub lifetime: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            message_bytes: 128 * 1024,
            frame_bytes: 32 * 1024,
            idle: std::time::Duration::from_secs(10 * 60),
            lifetime: std::time::Duration::from_secs(2 * 60 * 60),
        }
    }
}

impl Limits {
    /// AWS's limits; for tests, `LOCAL_WS_IDLE_SECS` and `LOCAL_WS_LIFETIME_SECS` shorten
    /// the idle timeout and the lifetime.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Limits::from_env`] reading variables through `lookup`. They can only shorten a
    /// limit (AWS's is the most a socket gets); a value that is not a positive number of
    /// seconds is ignored (AWS's limit stays), with a warning.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let secs = |name: &str| {
            let value = lookup(name)?;
            match value.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 => Some(std::time::Duration::from_secs_f64(s)),
                _ => {
                    tracing::warn!(
                        variable = name,
                        value,
                        "not a positive number of seconds; AWS's limit applies"
                    );
                    None
                }
            }
        };
        let aws = Self::default();
        Self {
            idle: secs("LOCAL_WS_IDLE_SECS").map_or(aws.idle, |s| s.min(aws.idle)),
            lifetime: secs("LOCAL_WS_LIFETIME_SECS").map_or(aws.lifetime, |s| s.min(aws.lifetime)),
            ..aws
        }
    }
}

/// The close frame API Gateway sends.
fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Open sockets by connection id.
#[derive(Default)]
pub struct Sockets {
    open: Mutex<HashMap<String, (mpsc::UnboundedSender<Message>, i64)>>,
}

impl Sockets {
    fn add(&self, id: &str, tx: mpsc::UnboundedSender<Message>) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (tx, chrono::Utc::now().timestamp_millis()));
    }

    fn remove(&self, id: &str) -> Option<mpsc::UnboundedSender<Message>> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .map(|(tx, _)| tx)
    }

    fn send(&self, id: &str, message: Message) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(id).is_some_and(|(tx, _)| tx.send(message).is_ok())
    }

    fn connected_at(&self, id: &str) -> Option<i64> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|(_, at)| *at)
    }
}

fn event(
    route: &str,
    event_type: &str,
    connection_id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Option<String>,
    source_ip: &str,
) -> ApiGatewayWebsocketProxyRequest {
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let query: Map<String, Value> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    let mut e = json!({
        "headers": headers,
        "requestContext": {
            "routeKey": route,
            "eventType": event_type,
            "messageDirection": "IN",
            "connectionId": connection_id,
            "connectedAt": chrono::Utc::now().timestamp_millis(),
            "requestId": uuid::Uuid::now_v7().to_string(),
            "requestTimeEpoch": chrono::Utc::now().timestamp_millis(),
            "domainName": "localhost",
            "stage": "local",
            "apiId": "local",
            "identity": {"sourceIp": source_ip},
        },
        "isBase64Encoded": false,
    });
    if !query.is_empty() {
        e["queryStringParameters"] = Value::Object(query);
    }
    if let Some(b) = body {
        e["body"] = Value::String(b);
    }
    serde_json::from_value(e).unwrap_or_default()
}

/// GET /ws: runs `$connect` before accepting, so a refused token never gets a socket.
pub async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    // API Gateway's connection ids look like "L0SM9cOFvHcCIhw=": 12 random bytes, base64.
    let connection_id = STANDARD.encode(&uuid::Uuid::new_v4().as_bytes()[..12]);
    // Registered before $connect runs, so frames pushed during $connect are buffered, not 410.
    let (tx, rx) = mpsc::unbounded_channel();
    gateway.sockets.add(&connection_id, tx);
    let ip = peer.ip().to_string();
    let connect = event(
        "$connect",
        "CONNECT",
        &connection_id,
        &headers,
        query.as_deref(),
        None,
        &ip,
    );
    let answer = gateway.functions.invoke_websocket(connect).await;
    if answer.status_code != 200 {
        gateway.sockets.remove(&connection_id);
        let status =
            StatusCode::from_u16(u16::try_from(answer.status_code).unwrap_or(500)).unwrap_or(StatusCode::FORBIDDEN);
        let body = match answer.body {
            Some(aws_lambda_events::encodings::Body::Text(t)) => t,
            _ => String::new(),
        };
        return (status, [("content-type", "application/json")], body).into_response();
    }
    let ws = match answer
        .headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
    {
        Some(p) => ws.protocols([p.to_string()]),
        None => ws,
    };
    let limits = gateway.websocket_limits;
    ws.max_message_size(limits.message_bytes)
        .max_frame_size(limits.frame_bytes)
        .on_upgrade(move |socket| run(gateway, connection_id, socket, rx, headers, ip))
}

async fn run(
    gateway: Arc<Gateway>,
    id: String,
    socket: WebSocket,
    mut rx: mpsc::UnboundedReceiver<Message>,
    headers: HeaderMap,
    ip: String,
) {
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
    });
    let limits = gateway.websocket_limits;
    let end_of_life = tokio::time::Instant::now() + limits.lifetime;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(limits.idle, stream.next()) => next.ok(),
            () = tokio::time::sleep_until(end_of_life) => None,
        };
        let message = match next {
            Some(Some(Ok(message))) => message,
            Some(Some(Err(e))) => {
                // The message or frame limit (the socket's own, set in `upgrade`).
                tracing::info!(connection = %id, error = %e, "WebSocket message or frame over API Gateway's limit");
                gateway.sockets.send(&id, close(1009, "Message too big"));
                break;
            }
            Some(None) => break,
            None => {
                // Idle for `limits.idle`, or open for `limits.lifetime`.
                gateway.sockets.send(&id, close(1001, "Going away"));
                break;
            }
        };
        let body = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        if gateway.websocket_bucket.as_ref().is_some_and(|b| !b.take()) {
            let throttled = json!({"message": "Too Many Requests", "connectionId": id, "requestId": uuid::Uuid::now_v7().to_string()});
            gateway.sockets.send(&id, Message::Text(throttled.to_string().into()));
            continue;
        }
        let frame = event(DEFAULT_ROUTE, "MESSAGE", &id, &headers, None, Some(body), &ip);
        let answer = gateway.functions.invoke_websocket(frame).await;
        if gateway.template.route_responses.two_way(DEFAULT_ROUTE) {
            // Through the writer's queue, so it keeps its place among pushed frames.
            match answer.body {
                Some(Body::Text(t)) if !t.is_empty() => {
                    gateway.sockets.send(&id, Message::Text(t.into()));
                }
                Some(Body::Binary(b)) if !b.is_empty() => {
                    gateway.sockets.send(&id, Message::Binary(b.into()));
                }
                _ => {}
            }
        }
    }
    // Dropping the socket's sender lets the writer send what is queued (a close frame
    // included) and stop.
    gateway.sockets.remove(&id);
    let mut writer = writer;
    if tokio::time::timeout(std::time::Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    let gone = event("$disconnect", "DISCONNECT", &id, &headers, None, None, &ip);
    gateway.functions.invoke_websocket(gone).await;
}

/// Guards the `@connections` routes as API Gateway's IAM authorisation does: a call
/// without a SigV4 `Authorization` header gets 403 before anything happens.
pub async fn signed(request: Request, next: Next) -> Response {
    let signed = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential="));
    if signed {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        [
            ("content-type", "application/json"),
            ("x-amzn-errortype", "MissingAuthenticationTokenException"),
        ],
        json!({"message": "Missing Authentication Token"}).to_string(),
    )
        .into_response()
}

/// POST /@connections/{id}: PostToConnection.
pub async fn post_to_connection(State(gateway): State<Arc<Gateway>>, Path(id): Path<String>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    if gateway.sockets.send(&id, Message::Text(text.into())) {
        StatusCode::OK.into_response()
    } else {
        gone()
    }
}

/// DELETE /@connections/{id}: DeleteConnection.
pub async fn delete_connection(State(gateway): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    match gateway.sockets.remove(&id) {
        Some(tx) => {
            let _ = tx.send(Message::Close(None));
            StatusCode::NO_CONTENT.into_response()
        }
        None => gone(),
    }
}

/// GET /@connections/{id}: GetConnection.
pub async fn get_connection(State(gateway): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    match gateway.sockets.connected_at(&id) {
        Some(at) => {
            let at = chrono::DateTime::from_timestamp_millis(at)
                .unwrap_or_default()
                .to_rfc3339();
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                json!({"connectedAt": at, "lastActiveAt": at}).to_string(),
            )
                .into_response()
        }
        None => gone(),
    }
}

fn gone() -> Response {
    (
        StatusCode::GONE,
        [
            ("content-type", "application/json"),
            ("x-amzn-errortype", "GoneException"),
        ],
        json!({"message": "Gone"}).to_string(),
    )
        .into_response()
}
