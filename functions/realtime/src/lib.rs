//! Realtime push over API Gateway's WebSocket API.
//!
//! - [`handle`] serves the WebSocket routes. `$connect` authenticates with a single-use
//!   ticket (`?ticket=`, from POST /realtime/ticket, redeemed by GETDEL) or the session
//!   token as the `Sec-WebSocket-Protocol` `["devconnect", token]` (browsers cannot set
//!   Authorization on a socket; only `devconnect` is answered, never the token). A token
//!   in the URL (`?token=`) is refused: URLs are logged. It records the connection with
//!   the session that opened it, closes the user's oldest socket past
//!   `REALTIME_MAX_SOCKETS_PER_USER`, and marks the user online. `$disconnect` forgets it
//!   and marks the user offline when their last socket closes. `$default` counts each
//!   frame against the user's rate limit and checks the session still exists (else the
//!   socket is closed), answers `ping` with `pong` and relays `typing` to a connection;
//!   anything else gets an error frame, never a dropped socket or a 5xx. The pong and
//!   error frames are the response body (two-way route, see [`handle`]); only the typing
//!   relay to another user's sockets uses PostToConnection.
//! - [`push_batch`] is the MSK consumer that delivers MESSAGE_SENT to the receiver,
//!   NOTIFICATION_CREATED to its user and USER_ONLINE/USER_OFFLINE to that user's
//!   connections only, through PostToConnection, and only to sockets whose session
//!   still exists; a socket whose session ended or expired gets nothing and is closed
//!   (DeleteConnection), as are the sockets of the sessions a USER_LOGOUT names. A 410
//!   Gone removes the stale connection id. Frames are best effort (the SDK's bounded
//!   retries, then logged): the HTTP API stays the record, so a failed frame never
//!   blocks the partition.
#![warn(missing_docs)]

pub mod connections;
pub mod frames;
pub mod pusher;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aws_lambda_events::{
    encodings::Body,
    event::{
        apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest},
        kafka::KafkaEvent,
    },
    http::{HeaderMap, HeaderValue},
};
use connections::Opener;
use devconnect::{
    consumer::{Batch, BatchOutcome, Failure},
    keys, metrics,
    payloads::{Event, MessageSent, NotificationCreated, UserLogout},
    presence,
    session::{self, WithUser},
    user, AppError, AppState,
};
use frames::{ClientFrame, ServerFrame};
use futures::future::{BoxFuture, FutureExt};
use pusher::{Pushed, Pusher};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
    /// In Lambda: configuration from the environment, clients built once. Boxed here so
    /// it compiles once for the two bootstraps (see `devconnect::bootstrap`).
    pub fn from_env() -> BoxFuture<'static, Result<Self, lambda_runtime::Error>> {
        async {
            let app = AppState::connect(devconnect::config::Config::from_env()?, FUNCTION_NAME).await?;
            Ok(Self {
                app,
                pusher: Pusher::from_env().await?,
            })
        }
        .boxed()
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

/// The token offered as a subprotocol (`["devconnect", token]`), and whether
/// `devconnect` was offered: the only subprotocol ever answered, so the token is never
/// echoed back into a response header (and from there into logs and proxies).
fn token_of(event: &ApiGatewayWebsocketProxyRequest) -> (Option<String>, Option<&'static str>) {
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
    let answer = offered.iter().any(|p| p == SUBPROTOCOL).then_some(SUBPROTOCOL);
    (token, answer)
}

/// A session's id: the hex SHA-256 of its token, the last part of its key.
fn session_id_of(session_key: &str) -> String {
    session_key
        .rsplit_once(':')
        .map(|(_, id)| id.to_string())
        .unwrap_or_default()
}

/// Whether `id` looks like a session id (64 lowercase hex digits), before it is used in a key.
fn is_session_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where a ticket waits to be redeemed: keyed by its SHA-256, never the ticket itself.
pub fn ticket_key(ticket: &str) -> String {
    keys::realtime_ticket(&hex::encode(Sha256::digest(ticket.as_bytes())))
}

/// Redeems a single-use ticket (POST /realtime/ticket): GETDEL, so a second use finds
/// nothing, and the key holds only the ticket's hash. The session is checked when the
/// connection is registered, in the same script.
async fn redeem(app: &AppState, ticket: &str) -> Result<Opener, AppError> {
    let refused = || AppError::Unauthorized("missing, used or expired ticket");
    if ticket.is_empty() || ticket.len() > 256 {
        return Err(refused());
    }
    let value: Option<String> = redis::cmd("GETDEL")
        .arg(ticket_key(ticket))
        .query_async(&mut app.store.conn())
        .await?;
    let (user_id, session_id) = value.as_deref().and_then(|v| v.split_once(':')).ok_or_else(refused)?;
    let user_id = user::parse_user_id(user_id).map_err(|_| refused())?;
    if !is_session_id(session_id) {
        return Err(refused());
    }
    Ok(Opener {
        user_id,
        session_id: session_id.to_string(),
    })
}

/// Who is connecting: a ticket (`?ticket=`), or the token as a subprotocol. A token in
/// the query string is refused: URLs end up in logs, histories and proxies.
async fn opener_of(app: &AppState, event: &ApiGatewayWebsocketProxyRequest) -> Result<Opener, AppError> {
    let query = &event.query_string_parameters;
    if query.first("token").is_some() {
        return Err(AppError::Unauthorized(
            "tokens are not accepted in the URL: use a ticket",
        ));
    }
    if let Some(ticket) = query.first("ticket") {
        return redeem(app, ticket).await;
    }
    let (token, _) = token_of(event);
    let principal = session::authenticate_idle(
        &app.store,
        &app.config.rate_limits,
        app.config.session_idle_timeout,
        token.as_deref(),
        WithUser::No,
    )
    .await?;
    Ok(Opener {
        session_id: session_id_of(&principal.session_key),
        user_id: principal.user_id,
    })
}

async fn connect(
    rt: &Realtime,
    event: &ApiGatewayWebsocketProxyRequest,
    connection_id: &str,
    request_id: &str,
) -> ApiGatewayProxyResponse {
    let app = &rt.app;
    let refuse = |e: AppError| {
        tracing::info!(code = e.code(), "connection refused");
        app.metrics.count(metrics::WEBSOCKET_CONNECTS_REFUSED, 1);
        response(i64::from(e.status().as_u16()), None)
    };
    let opener = match opener_of(app, event).await {
        Ok(o) => o,
        Err(e) => return refuse(e),
    };
    let cap = app.config.realtime_max_sockets_per_user;
    let evicted =
        match connections::register(&app.store, &opener, connection_id, cap, app.config.session_idle_timeout).await {
            Ok(Some(evicted)) => evicted,
            Ok(None) => return refuse(AppError::Unauthorized("session ended")),
            Err(e) => {
                tracing::error!(error = %e, "could not register the connection");
                app.metrics.count(metrics::WEBSOCKET_CONNECTS_REFUSED, 1);
                return response(503, None);
            }
        };
    if !evicted.is_empty() {
        // Their records are already gone; their $disconnect finds nothing to undo.
        tracing::info!(evicted = evicted.len(), cap, "socket cap reached: closing the oldest");
        for (connection, outcome) in rt.pusher.close_all(evicted).await {
            if let Pushed::Failed(e) = outcome {
                tracing::warn!(%connection, error = %e, "evicted connection not closed");
            }
        }
    }
    match presence::mark_online(app, &opener.user_id, request_id).await {
        Ok(_) => response(200, token_of(event).1),
        Err(e) => {
            tracing::error!(error = %e, "could not mark the user online");
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
        presence::mark_offline(app, &user_id, request_id, "disconnected").await?;
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
    match connections::admit_frame(
        &app.store,
        &app.config.rate_limits,
        app.config.session_idle_timeout,
        &me,
        connection_id,
    )
    .await
    {
        Ok(_) => {}
        Err(AppError::RateLimited(d)) => {
            return Err(("rate_limited", format!("too many frames: retry in {} s", d.reset_secs)));
        }
        Err(AppError::Unauthorized(_)) => {
            // The session ended (logout, expiry) while the socket stayed open: close it.
            let _ = rt.pusher.close(connection_id).await;
            return Err(("session_ended", "sign in again".into()));
        }
        Err(e) => return Err(unavailable(e)),
    }
    match frame {
        ClientFrame::Ping => {
            presence::mark_online(app, &me, request_id).await.map_err(unavailable)?;
            Ok(Some(frames::pong()))
        }
        ClientFrame::Typing { to } => {
            if !connections::are_connected(&app.store, &me, &to)
                .await
                .map_err(unavailable)?
            {
                return Err(("forbidden", "you can only signal typing to your connections".into()));
            }
            // Only sockets whose session still exists, as in the pusher.
            let mut sockets =
                connections::live_of_users(&app.store, std::slice::from_ref(&to), app.config.session_idle_timeout)
                    .await
                    .map_err(unavailable)?;
            let sockets = sockets.remove(&to).transpose().map_err(unavailable)?;
            let frame = frames::typing(&me).to_string().into_bytes();
            let jobs = sockets
                .into_iter()
                .flat_map(|s| s.live)
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

/// What a record pushes. The frame's content also names who gets it, so a record's
/// audience and its frame come from one match and cannot disagree.
enum Push<'a> {
    /// MESSAGE_SENT, to its receiver.
    Message(&'a MessageSent),
    /// NOTIFICATION_CREATED, to its recipient.
    Notification(&'a NotificationCreated),
    /// USER_ONLINE / USER_OFFLINE of `user_id` (the record's key), to their connections.
    Presence {
        user_id: &'a str,
        online: bool,
        at: &'a str,
    },
}

/// Who gets a frame, before looking up sockets.
enum Audience<'a> {
    /// One user.
    User(&'a str),
    /// The user's connections (never strangers).
    ConnectionsOf(&'a str),
}

impl<'a> Push<'a> {
    /// What `event` (keyed `key`) pushes, if anything.
    fn of(event: &'a Event, key: &'a str) -> Option<Self> {
        Some(match event {
            Event::MessageSent(message) => Push::Message(message),
            Event::NotificationCreated(notification) => Push::Notification(notification),
            Event::UserOnline(online) => Push::Presence {
                user_id: key,
                online: true,
                at: &online.at,
            },
            Event::UserOffline(offline) => Push::Presence {
                user_id: key,
                online: false,
                at: &offline.last_seen,
            },
            _ => return None,
        })
    }

    fn audience(&self) -> Audience<'a> {
        match self {
            Push::Message(message) => Audience::User(&message.to_user_id),
            Push::Notification(notification) => Audience::User(&notification.recipient_id),
            Push::Presence { user_id, .. } => Audience::ConnectionsOf(user_id),
        }
    }

    /// The frame's bytes; built only for a record with a socket to go to.
    fn frame(&self) -> Vec<u8> {
        let frame = match self {
            Push::Message(message) => ServerFrame::Message {
                message: (*message).clone(),
            },
            Push::Notification(notification) => ServerFrame::Notification {
                notification: (*notification).clone(),
            },
            Push::Presence { user_id, online, at } => ServerFrame::Presence {
                user_id: user_id.to_string(),
                online: *online,
                at: at.to_string(),
            },
        };
        frame.to_value().to_string().into_bytes()
    }
}

/// The sessions a USER_LOGOUT ended. `None` if the user id is malformed; session ids
/// that are not 64 hex digits are ignored, so no event can make this build an arbitrary key.
fn ended_sessions(logout: &UserLogout) -> Option<(String, Vec<String>)> {
    let user_id = user::parse_user_id(&logout.user_id).ok()?;
    let sessions = logout
        .session_ids
        .iter()
        .filter(|id| is_session_id(id))
        .cloned()
        .collect();
    Some((user_id, sessions))
}

/// Delivers a batch of events to the sockets they concern, and closes the sockets of
/// sessions that ended. Four Redis round trips at most: (connections of presence users
/// and the sockets of logged-out sessions, concurrently), (which targets have a socket
/// open), (the live sockets of those, each checked against its session in the same
/// script; skipped when nobody has one open), (cleanup of closed and stale sockets). Never fails the invocation: a record whose audience cannot be read is
/// dead-lettered (a broken key) or handed back for retry (Redis down). A frame the
/// socket did not take is logged and dropped: the HTTP API stays the record.
///
/// Fan-out is bounded by `PUSH_MAX_CONNECTIONS_PER_BATCH`: frames for connections past
/// it are counted and logged, not retried. Retrying through the partial batch response
/// would hand back the record *and every later record of its partition*, re-sending
/// frames the other sockets already got, and a batch over the bound would be over it
/// again on every retry until it was dead-lettered; the HTTP API remains the record.
pub async fn push_batch(rt: &Realtime, event: KafkaEvent) -> BatchOutcome {
    let app = &rt.app;
    let mut batch = Batch::decode(FUNCTION_NAME, event);
    // (record index, what it pushes).
    let routed: Vec<(usize, Push)> = batch
        .records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Push::of(&r.event, &r.envelope.key).map(|push| (i, push)))
        .collect();
    let mut ended: HashMap<String, Vec<String>> = HashMap::new();
    let mut logouts: Vec<(usize, String)> = Vec::new();
    for (i, r) in batch.records.iter().enumerate() {
        let Event::UserLogout(logout) = &r.event else {
            continue;
        };
        if let Some((user_id, sessions)) = ended_sessions(logout) {
            ended.entry(user_id.clone()).or_default().extend(sessions);
            logouts.push((i, user_id));
        }
    }
    batch.report.skipped = batch.records.len() - routed.len() - logouts.len();
    let mut failures: Vec<(usize, Failure)> = Vec::new();
    let presence_users: Vec<String> = routed
        .iter()
        .filter_map(|(_, push)| match push.audience() {
            Audience::ConnectionsOf(u) => Some(u.to_string()),
            Audience::User(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (friends, logged_out) = tokio::join!(
        connections::friends_of(&app.store, &presence_users),
        connections::of_sessions(&app.store, &ended)
    );
    // (user, connection) to close: opened by a session that has ended.
    let mut to_close: BTreeSet<(String, String)> = BTreeSet::new();
    match logged_out {
        Err(e) => failures.extend(logouts.iter().map(|(i, _)| (*i, Failure::from(&e)))),
        Ok(by_user) => {
            for (i, user_id) in &logouts {
                match &by_user[user_id] {
                    Ok(list) => to_close.extend(list.iter().map(|c| (user_id.clone(), c.clone()))),
                    Err(e) => failures.push((*i, Failure::from(e))),
                }
            }
        }
    }
    let (delivered, stale) = match friends {
        Err(e) => {
            failures.extend(routed.iter().map(|(i, _)| (*i, Failure::from(&e))));
            (0, Vec::new())
        }
        Ok(friends) => {
            // User -> positions in `routed` of the frames they get.
            let mut frames_for_user: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (p, (i, push)) in routed.iter().enumerate() {
                let users = match push.audience() {
                    Audience::User(u) => vec![u.to_string()],
                    Audience::ConnectionsOf(u) => match &friends[u] {
                        Ok(list) => list.clone(),
                        Err(e) => {
                            failures.push((*i, Failure::from(e)));
                            continue;
                        }
                    },
                };
                for u in users {
                    frames_for_user.entry(u).or_default().push(p);
                }
            }
            deliver(rt, &routed, frames_for_user, &mut to_close, &mut failures).await
        }
    };
    close_and_forget(rt, to_close, stale).await;
    batch.report.applied = delivered + logouts.len();
    for (i, failure) in failures {
        batch.fail(i, failure);
    }
    batch.finish(&app.publisher).await
}

/// Closes the connections of ended sessions (DeleteConnection) and forgets them and
/// the stale ones (410) in one round trip. A close that failed is forgotten too: no
/// frame can reach a connection without a record, and its next `$default` frame finds
/// no session and closes it.
async fn close_and_forget(rt: &Realtime, to_close: BTreeSet<(String, String)>, mut stale: Vec<(String, String)>) {
    if !to_close.is_empty() {
        let owner: HashMap<String, String> = to_close.iter().map(|(u, c)| (c.clone(), u.clone())).collect();
        let outcomes = rt.pusher.close_all(owner.keys().cloned().collect()).await;
        let failed = outcomes.iter().filter(|(_, o)| matches!(o, Pushed::Failed(_))).count();
        if failed > 0 {
            tracing::warn!(failed, "connections of ended sessions not closed");
        }
        tracing::info!(closed = outcomes.len() - failed, "connections of ended sessions closed");
        stale.extend(to_close);
    }
    if let Err(e) = connections::remove_stale(&rt.app.store, &stale).await {
        // Harmless: a stale id expires with its TTL, and the next 410 removes it again;
        // a closed session's connection gets no frame (its session is gone) either way.
        tracing::warn!(error = %e, stale = stale.len(), "stale connections not removed");
    }
}

/// Pushes each user's frames (positions in `routed`, the batch's (record index, push)
/// pairs) to each of their sockets whose session is still valid, up to the batch's bound;
/// returns how many sockets got theirs, and the stale ones (410). Sockets whose session
/// has ended join `to_close` and get nothing. A frame is built only for a record with a
/// socket to go to, once however many sockets get it: most targets have none open.
async fn deliver(
    rt: &Realtime,
    routed: &[(usize, Push<'_>)],
    frames_for_user: BTreeMap<String, Vec<usize>>,
    to_close: &mut BTreeSet<(String, String)>,
    failures: &mut Vec<(usize, Failure)>,
) -> (usize, Vec<(String, String)>) {
    let targets: Vec<String> = frames_for_user.keys().cloned().collect();
    let sockets = match connections::live_of_targets(&rt.app.store, &targets, rt.app.config.session_idle_timeout).await
    {
        Ok(sockets) => sockets,
        Err(e) => {
            let failure = Failure::from(&e);
            failures.extend(
                frames_for_user
                    .values()
                    .flatten()
                    .map(|p| (routed[*p].0, failure.clone())),
            );
            return (0, Vec::new());
        }
    };
    let mut built: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut owner_of = BTreeMap::new();
    let mut frames_to = BTreeMap::new();
    let mut jobs = Vec::new();
    for (user_id, frames) in &frames_for_user {
        match &sockets[user_id] {
            Err(e) => failures.extend(frames.iter().map(|p| (routed[*p].0, Failure::from(e)))),
            Ok(found) => {
                to_close.extend(found.dead.iter().map(|c| (user_id.clone(), c.clone())));
                for c in &found.live {
                    if to_close.contains(&(user_id.clone(), c.clone())) {
                        continue;
                    }
                    owner_of.insert(c.clone(), user_id.clone());
                    frames_to.insert(c.clone(), frames.len() as u64);
                    let bytes = frames
                        .iter()
                        .map(|p| built.entry(*p).or_insert_with(|| routed[*p].1.frame()).clone())
                        .collect();
                    jobs.push((c.clone(), bytes));
                }
            }
        }
    }
    let bound = usize::try_from(rt.app.config.push_max_connections_per_batch).unwrap_or(usize::MAX);
    if jobs.len() > bound {
        let over: Vec<(String, Vec<Vec<u8>>)> = jobs.split_off(bound);
        let frames_over: usize = over.iter().map(|(_, f)| f.len()).sum();
        tracing::warn!(
            bound,
            connections_over = over.len(),
            frames_over,
            "fan-out bound reached: frames for the remaining connections not sent"
        );
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
    tracing::info!(delivered, failed, stale = stale.len(), "frames pushed");
    (delivered, stale)
}
