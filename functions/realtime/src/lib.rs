//! Realtime push over API Gateway's WebSocket API.
//!
//! - [`handle`] serves the WebSocket routes. `$connect` authenticates with the same
//!   session token as HTTP (query parameter `token`, or the `Sec-WebSocket-Protocol`
//!   header since browsers cannot set Authorization on a socket) and the same rate
//!   limit, records the connection, and marks the user online. `$disconnect` forgets
//!   it and marks the user offline when their last socket closes. `$default` answers
//!   `ping` with `pong` and relays `typing` to a connection; anything else gets an
//!   error frame, never a dropped socket or a 5xx. The pong and error frames are the
//!   response body (two-way route, see [`handle`]); only the typing relay to another
//!   user's sockets uses PostToConnection.
//! - [`push_batch`] is the MSK consumer that delivers MESSAGE_SENT to the receiver,
//!   NOTIFICATION_CREATED to its user and USER_ONLINE/USER_OFFLINE to that user's
//!   connections only, through PostToConnection; a 410 Gone removes the stale
//!   connection id. Frames are best effort (the SDK's bounded retries, then logged):
//!   the HTTP API stays the record, so a failed frame never blocks the partition.
#![warn(missing_docs)]

pub mod connections;
pub mod frames;
pub mod pusher;

use std::collections::{BTreeMap, HashSet};

use aws_lambda_events::{
    encodings::Body,
    event::{
        apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest},
        kafka::KafkaEvent,
    },
    http::{HeaderMap, HeaderValue},
};
use devconnect::{
    consumer::{Batch, BatchOutcome, Failure},
    events::EventType,
    metrics,
    session::{self, WithUser},
    AppError, AppState,
};
use frames::ClientFrame;
use pusher::{Pushed, Pusher};
use serde_json::{json, Value};

/// The envelope `source` of this function's events.
pub const FUNCTION_NAME: &str = "realtime";

/// The subprotocol a browser names next to its token: `new WebSocket(url, ["devconnect", token])`.
pub const SUBPROTOCOL: &str = "devconnect";

/// The realtime function's state: the usual clients plus the `@connections` client.
#[derive(Clone)]
pub struct Realtime {
    /// Redis, Kafka, config.
    pub app: AppState,
    /// PostToConnection.
    pub pusher: Pusher,
}

impl Realtime {
    /// In Lambda: configuration from the environment, clients built once.
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let app = AppState::connect(devconnect::config::Config::from_env()?, FUNCTION_NAME).await?;
        Ok(Self {
            app,
            pusher: Pusher::from_env().await?,
        })
    }
}

/// Serves one WebSocket route event. Never fails: the status code is the answer. On
/// `$default` the body, when there is one, is the frame for the sender (pong or error):
/// the route's `$default` route response makes API Gateway send it on the socket.
pub async fn handle(rt: &Realtime, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
    let ctx = &event.request_context;
    let connection_id = ctx.connection_id.clone().unwrap_or_default();
    let request_id = ctx.request_id.clone().unwrap_or_default();
    let route = ctx.route_key.clone().unwrap_or_default();
    let span =
        tracing::info_span!("websocket", route = %route, connection_id = %connection_id, request_id = %request_id);
    let _guard = span.enter();
    match route.as_str() {
        "$connect" => connect(rt, &event, &connection_id, &request_id).await,
        "$disconnect" => {
            if let Err(e) = disconnect(rt, &connection_id, &request_id).await {
                tracing::warn!(error = %e, "disconnect bookkeeping failed");
            }
            response(200, None)
        }
        _ => {
            let mut r = response(200, None);
            r.body = incoming(rt, event.body.as_deref(), &connection_id, &request_id)
                .await
                .map(|frame| Body::Text(frame.to_string()));
            r
        }
    }
}

fn response(status: i64, protocol: Option<&str>) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        let mut headers = HeaderMap::new();
        headers.insert("sec-websocket-protocol", p);
        r.headers = headers;
    }
    if status != 200 {
        r.body = Some(Body::Text(
            json!({"error": {"code": "connection_refused", "message": "missing, invalid or rate-limited token"}})
                .to_string(),
        ));
    }
    r
}

/// The token and the subprotocol to answer with (a browser must get one it offered back).
fn token_of(event: &ApiGatewayWebsocketProxyRequest) -> (Option<String>, Option<String>) {
    if let Some(t) = event.query_string_parameters.first("token") {
        return (Some(t.to_string()), None);
    }
    let offered: Vec<String> = event
        .headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let token = offered.iter().find(|p| p.contains('.')).cloned();
    let answer = offered
        .iter()
        .find(|p| *p == SUBPROTOCOL)
        .cloned()
        .or_else(|| token.clone());
    (token, answer)
}

async fn connect(
    rt: &Realtime,
    event: &ApiGatewayWebsocketProxyRequest,
    connection_id: &str,
    request_id: &str,
) -> ApiGatewayProxyResponse {
    let (token, protocol) = token_of(event);
    let app = &rt.app;
    let principal =
        match session::authenticate(&app.store, &app.config.rate_limits, token.as_deref(), WithUser::No).await {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(code = e.code(), "connection refused");
                app.metrics.count(metrics::WEBSOCKET_CONNECTS_REFUSED, 1);
                return response(i64::from(e.status().as_u16()), None);
            }
        };
    let registered = async {
        connections::register(&app.store, &principal.user_id, connection_id).await?;
        devconnect::presence::mark_online(app, &principal.user_id, request_id).await
    }
    .await;
    match registered {
        Ok(_) => response(200, protocol.as_deref()),
        Err(e) => {
            tracing::error!(error = %e, "could not register the connection");
            app.metrics.count(metrics::WEBSOCKET_CONNECTS_REFUSED, 1);
            response(503, None)
        }
    }
}

async fn disconnect(rt: &Realtime, connection_id: &str, request_id: &str) -> Result<(), AppError> {
    let app = &rt.app;
    let Some(user_id) = connections::owner(&app.store, connection_id).await? else {
        return Ok(());
    };
    if connections::unregister(&app.store, &user_id, connection_id).await? == 0 {
        devconnect::presence::mark_offline(app, &user_id, request_id, "disconnected").await?;
    }
    Ok(())
}

/// A `$default` frame: the reply for this connection (pong or error), or `None` after
/// relaying typing. The reply is the Lambda response body, which API Gateway sends back
/// on the socket through the route's `$default` route response (template.yaml), so
/// answering needs no PostToConnection and no way out of the VPC.
async fn incoming(rt: &Realtime, body: Option<&str>, connection_id: &str, request_id: &str) -> Option<Value> {
    match answer(rt, body, connection_id, request_id).await {
        Ok(frame) => frame,
        Err((code, message)) => Some(frames::error(code, &message)),
    }
}

async fn answer(
    rt: &Realtime,
    body: Option<&str>,
    connection_id: &str,
    request_id: &str,
) -> Result<Option<Value>, (&'static str, String)> {
    let frame = ClientFrame::parse(body)?;
    let unavailable = |e: AppError| ("service_unavailable", e.public_message());
    let app = &rt.app;
    let me = connections::owner(&app.store, connection_id)
        .await
        .map_err(unavailable)?
        .ok_or((
            "unknown_connection",
            "reconnect: this connection is not registered".to_string(),
        ))?;
    match frame {
        ClientFrame::Ping => {
            devconnect::presence::mark_online(app, &me, request_id)
                .await
                .map_err(unavailable)?;
            Ok(Some(frames::pong()))
        }
        ClientFrame::Typing { to } => {
            if !connections::are_connected(&app.store, &me, &to)
                .await
                .map_err(unavailable)?
            {
                return Err(("forbidden", "you can only signal typing to your connections".into()));
            }
            let mut sockets = connections::of_users(&app.store, std::slice::from_ref(&to))
                .await
                .map_err(unavailable)?;
            let sockets = sockets.remove(&to).transpose().map_err(unavailable)?;
            let frame = frames::typing(&me).to_string().into_bytes();
            let jobs = sockets
                .into_iter()
                .flatten()
                .map(|c| (c, vec![frame.clone()]))
                .collect();
            let outcomes = rt.pusher.fan_out(jobs).await;
            let stale: Vec<(String, String)> = outcomes
                .into_iter()
                .filter(|(_, o)| *o == Pushed::Gone)
                .map(|(c, _)| (to.clone(), c))
                .collect();
            connections::remove_stale(&app.store, &stale)
                .await
                .map_err(unavailable)?;
            Ok(None)
        }
    }
}

/// Who gets a frame for an event, before looking up sockets.
enum Audience {
    /// One user.
    User(String),
    /// The user's connections (never strangers).
    ConnectionsOf(String),
}

fn route_event(event_type: EventType, data: &Value, key: &str) -> Option<(Audience, Value)> {
    let field = |name: &str| data.get(name).and_then(Value::as_str).map(String::from);
    match event_type {
        EventType::MessageSent => Some((
            Audience::User(field("toUserId")?),
            json!({"type": "message", "message": data}),
        )),
        EventType::NotificationCreated => Some((
            Audience::User(field("recipientId")?),
            json!({"type": "notification", "notification": data}),
        )),
        EventType::UserOnline | EventType::UserOffline => {
            let online = event_type == EventType::UserOnline;
            let frame = json!({"type": "presence", "userId": key, "online": online, "at": data.get("at").or(data.get("lastSeen"))});
            Some((Audience::ConnectionsOf(key.to_string()), frame))
        }
        _ => None,
    }
}

/// Delivers a batch of events to the sockets they concern. Three Redis round trips at
/// most (connections of presence users, sockets of every target, stale cleanup).
/// Never fails the invocation: a record whose audience cannot be read is dead-lettered
/// (a broken key) or handed back for retry (Redis down). A frame the socket did not
/// take is logged and dropped: the HTTP API stays the record.
pub async fn push_batch(rt: &Realtime, event: KafkaEvent) -> BatchOutcome {
    let app = &rt.app;
    let mut batch = Batch::decode(FUNCTION_NAME, event);
    let routed: Vec<(usize, Audience, Vec<u8>)> = batch
        .records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            route_event(r.envelope.event_type, &r.envelope.data, &r.envelope.key)
                .map(|(audience, frame)| (i, audience, frame.to_string().into_bytes()))
        })
        .collect();
    batch.report.skipped = batch.records.len() - routed.len();
    let mut failures: Vec<(usize, Failure)> = Vec::new();
    let presence_users: Vec<String> = routed
        .iter()
        .filter_map(|(_, a, _)| match a {
            Audience::ConnectionsOf(u) => Some(u.clone()),
            Audience::User(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let delivered = match connections::friends_of(&app.store, &presence_users).await {
        Err(e) => {
            failures.extend(routed.iter().map(|(i, _, _)| (*i, Failure::from(&e))));
            0
        }
        Ok(friends) => {
            let mut frames_for_user: BTreeMap<String, Vec<(usize, &[u8])>> = BTreeMap::new();
            for (i, audience, frame) in &routed {
                let users = match audience {
                    Audience::User(u) => vec![u.clone()],
                    Audience::ConnectionsOf(u) => match &friends[u] {
                        Ok(list) => list.clone(),
                        Err(e) => {
                            failures.push((*i, Failure::from(e)));
                            continue;
                        }
                    },
                };
                for u in users {
                    frames_for_user.entry(u).or_default().push((*i, frame));
                }
            }
            deliver(rt, frames_for_user, &mut failures).await
        }
    };
    batch.report.applied = delivered;
    for (i, failure) in failures {
        batch.fail(i, failure);
    }
    batch.finish(&app.publisher).await
}

/// Pushes each user's frames to each of their sockets; returns how many sockets got theirs.
async fn deliver(
    rt: &Realtime,
    frames_for_user: BTreeMap<String, Vec<(usize, &[u8])>>,
    failures: &mut Vec<(usize, Failure)>,
) -> usize {
    let targets: Vec<String> = frames_for_user.keys().cloned().collect();
    let sockets = match connections::of_users(&rt.app.store, &targets).await {
        Ok(sockets) => sockets,
        Err(e) => {
            let failure = Failure::from(&e);
            failures.extend(frames_for_user.values().flatten().map(|(i, _)| (*i, failure.clone())));
            return 0;
        }
    };
    let mut owner_of = BTreeMap::new();
    let mut frames_to = BTreeMap::new();
    let mut jobs = Vec::new();
    for (user_id, frames) in &frames_for_user {
        match &sockets[user_id] {
            Err(e) => failures.extend(frames.iter().map(|(i, _)| (*i, Failure::from(e)))),
            Ok(connections) => {
                for c in connections {
                    owner_of.insert(c.clone(), user_id.clone());
                    frames_to.insert(c.clone(), frames.len() as u64);
                    jobs.push((c.clone(), frames.iter().map(|(_, f)| f.to_vec()).collect()));
                }
            }
        }
    }
    let outcomes = rt.pusher.fan_out(jobs).await;
    let (mut delivered, mut failed, mut stale) = (0, 0, Vec::new());
    // Frames, not sockets: a socket with three events waiting gets (or misses) three frames.
    let (mut frames_sent, mut frames_gone, mut frames_failed) = (0, 0, 0);
    for (connection, outcome) in outcomes {
        let frames = frames_to.get(&connection).copied().unwrap_or(1);
        match outcome {
            Pushed::Delivered => {
                delivered += 1;
                frames_sent += frames;
            }
            Pushed::Gone => {
                frames_gone += frames;
                stale.push((owner_of[&connection].clone(), connection));
            }
            Pushed::Failed(e) => {
                failed += 1;
                frames_failed += frames;
                tracing::warn!(%connection, error = %e, "frame not delivered");
            }
        }
    }
    let m = &rt.app.metrics;
    m.count(metrics::FRAMES_SENT, frames_sent);
    m.count(metrics::FRAMES_GONE, frames_gone);
    m.count(metrics::FRAMES_FAILED, frames_failed);
    if let Err(e) = connections::remove_stale(&rt.app.store, &stale).await {
        // Harmless: a stale id expires with its TTL, and the next 410 removes it again.
        tracing::warn!(error = %e, stale = stale.len(), "stale connections not removed");
    }
    tracing::info!(delivered, failed, stale = stale.len(), "frames pushed");
    delivered
}
