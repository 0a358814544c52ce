//! API Gateway's WebSocket API, emulated: sockets on `/ws` become `$connect`,
//! `$default` and `$disconnect` events for the realtime function, and the
//! `@connections` management endpoint (PostToConnection, DeleteConnection,
//! GetConnection) writes to the local sockets, so the real SDK client works locally.
//!
//! As in API Gateway, a route answers the client with the function's response body
//! only when template.yaml gives it a route response (two-way communication, see
//! [`RouteResponses`]); without one the body is dropped, so a function that relies on
//! it fails locally just as it would in AWS.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::Path as FsPath,
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::Context;
use aws_lambda_events::{encodings::Body, event::apigw::ApiGatewayWebsocketProxyRequest};
use axum::{
    body::Bytes,
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        ConnectInfo, Path, RawQuery, State,
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use base64::{engine::general_purpose::STANDARD, Engine};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use serde_yaml::Value as Yaml;
use tokio::sync::mpsc;

use crate::server::Gateway;

/// The path clients connect to.
pub const PATH: &str = "/ws";

/// The route every client frame takes: the template has no action routes, so API
/// Gateway's route selection (`$request.body.action`) always falls through to it.
const DEFAULT_ROUTE: &str = "$default";

/// The WebSocket routes whose integration response goes back to the client: those
/// with an `AWS::ApiGatewayV2::RouteResponse` (API Gateway only allows the `$default`
/// route response key on WebSocket APIs). API Gateway passes the backend's response
/// through only for these routes; for the others the function's body is discarded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteResponses {
    route_keys: BTreeSet<String>,
}

impl RouteResponses {
    /// Reads them from a template file.
    pub fn load(path: &FsPath) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// Reads them from template YAML: each `AWS::ApiGatewayV2::RouteResponse` with
    /// `RouteResponseKey: $default` whose `RouteId` is `!Ref` to an
    /// `AWS::ApiGatewayV2::Route` makes that route's `RouteKey` two-way.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let doc: Yaml = serde_yaml::from_str(text).context("template.yaml is not YAML")?;
        let resources = doc
            .get("Resources")
            .and_then(Yaml::as_mapping)
            .context("template has no Resources")?;
        let property = |resource: &Yaml, name: &str| resource.get("Properties").and_then(|p| p.get(name)).cloned();
        let mut route_keys = BTreeSet::new();
        for resource in resources.values() {
            if resource.get("Type").and_then(Yaml::as_str) != Some("AWS::ApiGatewayV2::RouteResponse")
                || property(resource, "RouteResponseKey").as_ref().and_then(Yaml::as_str) != Some("$default")
            {
                continue;
            }
            let route_id = match property(resource, "RouteId") {
                Some(Yaml::Tagged(tagged)) if tagged.tag == "Ref" => tagged.value.as_str().map(String::from),
                _ => None,
            }
            .context("a RouteResponse's RouteId must be !Ref to a Route of the template")?;
            let route = resources
                .get(route_id.as_str())
                .filter(|r| r.get("Type").and_then(Yaml::as_str) == Some("AWS::ApiGatewayV2::Route"))
                .with_context(|| format!("RouteResponse refers to {route_id}, which is not a Route"))?;
            let key = property(route, "RouteKey")
                .and_then(|k| k.as_str().map(String::from))
                .with_context(|| format!("{route_id} has no RouteKey"))?;
            route_keys.insert(key);
        }
        Ok(Self { route_keys })
    }

    /// Routes that answer the client, e.g. `{"$default"}`.
    pub fn with_keys<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        Self {
            route_keys: keys.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `route_key`'s response body goes back on the socket.
    pub fn two_way(&self, route_key: &str) -> bool {
        self.route_keys.contains(route_key)
    }
}

/// Open sockets by connection id, and the routes that answer on them.
#[derive(Default)]
pub struct Sockets {
    open: Mutex<HashMap<String, (mpsc::UnboundedSender<Message>, i64)>>,
    route_responses: OnceLock<RouteResponses>,
}

impl Sockets {
    /// Sockets whose routes answer as `route_responses` says (instead of the template's).
    pub fn with_route_responses(route_responses: RouteResponses) -> Self {
        let sockets = Self::default();
        let _ = sockets.route_responses.set(route_responses);
        sockets
    }

    /// The template's route responses, read on first use from the template the gateway
    /// serves (`TEMPLATE`, else [`crate::default_template_path`]). A template that
    /// cannot be read gives none: every route one-way, logged once.
    pub fn route_responses(&self) -> &RouteResponses {
        self.route_responses.get_or_init(|| {
            let path = std::env::var_os("TEMPLATE")
                .map(Into::into)
                .unwrap_or_else(crate::default_template_path);
            RouteResponses::load(&path).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "WebSocket route responses unknown: no route answers the client");
                RouteResponses::default()
            })
        })
    }

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
    ws.on_upgrade(move |socket| run(gateway, connection_id, socket, rx, headers, ip))
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
    while let Some(Ok(message)) = stream.next().await {
        let body = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        let frame = event(DEFAULT_ROUTE, "MESSAGE", &id, &headers, None, Some(body), &ip);
        let answer = gateway.functions.invoke_websocket(frame).await;
        if gateway.sockets.route_responses().two_way(DEFAULT_ROUTE) {
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
    gateway.sockets.remove(&id);
    writer.abort();
    let gone = event("$disconnect", "DISCONNECT", &id, &headers, None, None, &ip);
    gateway.functions.invoke_websocket(gone).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_WAY: &str = r#"
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {ProtocolType: WEBSOCKET}
  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: $connect}
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: $default, RouteResponseSelectionExpression: $default}
  DefaultRouteResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties: {ApiId: !Ref Api, RouteId: !Ref DefaultRoute, RouteResponseKey: $default}
"#;

    #[test]
    fn a_route_with_a_default_route_response_is_two_way_and_the_others_are_not() {
        let r = RouteResponses::parse(TWO_WAY).unwrap();
        assert!(r.two_way("$default"));
        assert!(!r.two_way("$connect"));
        assert_eq!(r, RouteResponses::with_keys(["$default"]));
    }

    #[test]
    fn without_a_route_response_no_route_answers() {
        let one_way = TWO_WAY.split("  DefaultRouteResponse:").next().unwrap();
        assert!(!RouteResponses::parse(one_way).unwrap().two_way("$default"));
    }

    #[test]
    fn a_route_response_that_names_no_route_is_refused() {
        let broken = TWO_WAY.replace("RouteId: !Ref DefaultRoute", "RouteId: !Ref Api");
        let error = RouteResponses::parse(&broken).unwrap_err().to_string();
        assert!(error.contains("not a Route"), "{error}");
    }

    #[test]
    fn the_project_template_makes_default_two_way() {
        let r = RouteResponses::load(&crate::default_template_path()).unwrap();
        assert!(
            r.two_way("$default"),
            "template.yaml must declare the $default route response"
        );
        assert!(!r.two_way("$connect") && !r.two_way("$disconnect"));
    }
}
