//! Operations: GET /health and the outbox relay that a schedule invokes.
#![warn(missing_docs)]

pub mod rebuild;

use std::time::{Duration, Instant};

use devconnect::{
    api::{self, Reply},
    metrics,
    outbox::{self, RelayReport},
    session::WithUser,
    AppError, AppState,
};
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

/// The envelope `source` of this function's events.
pub const FUNCTION_NAME: &str = "ops";

/// API Gateway route keys this function serves.
pub const ROUTES: &[&str] = &["GET /health"];

/// Records the relay reads from the outbox per Redis round trip.
pub const RELAY_BATCH: usize = 100;

/// Serves GET /health.
pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "GET /health" => Ok(health(state, req).await),
        _ => Err(api::unknown_route(meta)),
    })
    .await
}

/// healthy: both up; degraded: Kafka down (writes still succeed, events wait in the outbox);
/// unhealthy (503): Redis down. Also reports the outbox backlog and how many entries the
/// relay quarantined (never producible: alert on it growing; `null` when Redis is down).
///
/// Anonymous callers (load balancers, uptime checks) get only `status`: latencies, error
/// texts and outbox numbers describe the internals to an attacker. Details need an admin
/// token (ADMIN_USER_IDS, as for analytics); any other token, or none, or a token that
/// cannot be checked because Redis is down, gets the short form — never a 401, so the
/// health check itself works without credentials.
async fn health(state: &AppState, req: &Request) -> Reply {
    let redis = probe(async {
        let pong: String = redis::cmd("PING").query_async(&mut state.store.conn()).await?;
        Ok::<_, AppError>(pong == "PONG")
    })
    .await;
    let kafka = probe(async {
        let client = state
            .producer
            .client()
            .await
            .map_err(|e| AppError::unavailable("kafka", e))?;
        client
            .list_topics()
            .await
            .map_err(|e| AppError::unavailable("kafka", e))?;
        Ok(true)
    })
    .await;
    let backlog = outbox::backlog(&state.store).await.ok();
    let (redis_up, kafka_up) = (redis["status"] == "up", kafka["status"] == "up");
    let status = match (redis_up, kafka_up) {
        (true, true) => "healthy",
        (true, false) => "degraded",
        _ => "unhealthy",
    };
    let body = if is_admin(state, req).await {
        json!({
            "status": status,
            "dependencies": {"redis": redis, "kafka": kafka},
            "outboxBacklog": backlog.map(|b| b.waiting),
            "outboxQuarantined": backlog.map(|b| b.quarantined),
        })
    } else {
        json!({ "status": status })
    };
    if redis_up {
        Reply::ok(body)
    } else {
        Reply::unavailable(body)
    }
}

/// Whether the caller presents a valid token of an admin (ADMIN_USER_IDS).
async fn is_admin(state: &AppState, req: &Request) -> bool {
    if api::bearer_token(req).is_none() {
        return false;
    }
    match state.authenticate(req, WithUser::No).await {
        Ok(me) => state.config.admin_user_ids.contains(&me.user_id),
        Err(_) => false,
    }
}

async fn probe(check: impl std::future::Future<Output = Result<bool, AppError>>) -> Value {
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(2), check).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(Ok(true)) => json!({"status": "up", "latencyMs": latency_ms}),
        Ok(Ok(false)) => json!({"status": "down", "latencyMs": latency_ms, "error": "unexpected reply"}),
        Ok(Err(e)) => json!({"status": "down", "latencyMs": latency_ms, "error": e.to_string()}),
        Err(_) => json!({"status": "down", "latencyMs": latency_ms, "error": "timed out"}),
    }
}

/// One scheduled relay run: drains the outbox to Kafka in order, quarantining records
/// that can never be produced, and stops at [`outbox::RUN_DEADLINE`]. Each run samples
/// the backlog it leaves ([`metrics::OUTBOX_BACKLOG`]), so the alarm sees it every period.
pub async fn relay(state: &AppState) -> Result<RelayReport, AppError> {
    let report = outbox::relay(&state.store, &state.producer, RELAY_BATCH).await?;
    let m = &state.metrics;
    m.count(metrics::EVENTS_RELAYED, report.relayed as u64);
    m.count(metrics::EVENTS_QUARANTINED, report.quarantined as u64);
    m.gauge(metrics::OUTBOX_BACKLOG, report.remaining as f64);
    if report.quarantined > 0 {
        tracing::error!(
            quarantined = report.quarantined,
            "outbox relay quarantined records that can never be produced"
        );
    }
    if report.relayed > 0 || report.remaining > 0 {
        tracing::info!(
            relayed = report.relayed,
            remaining = report.remaining,
            quarantined = report.quarantined,
            "outbox relay run"
        );
    }
    Ok(report)
}
