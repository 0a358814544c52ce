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
use serde::Serialize;
use utoipa::ToSchema;

/// The envelope `source` of this function's events.
pub const FUNCTION_NAME: &str = "ops";

/// API Gateway route keys this function serves.
pub const ROUTES: &[&str] = &["GET /health"];

/// This function's part of docs/openapi.json (see `devconnect::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(health))]
struct Api;

/// This function's operations, for docs/openapi.json.
pub fn openapi() -> devconnect::openapi::OpenApi {
    <Api as utoipa::OpenApi>::openapi()
}

/// GET /health: the short form for everyone, the details for admins.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum HealthReport {
    Details(HealthDetails),
    Summary(HealthSummary),
}

/// What anyone may know.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct HealthSummary {
    /// `healthy`, `degraded` (Kafka down) or `unhealthy` (Redis down).
    status: &'static str,
}

/// What admins see.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HealthDetails {
    /// `healthy`, `degraded` (Kafka down) or `unhealthy` (Redis down).
    status: &'static str,
    dependencies: Dependencies,
    /// Events waiting in the outbox; null when Redis is down.
    outbox_backlog: Option<usize>,
    /// Outbox entries that can never be produced; null when Redis is down.
    outbox_quarantined: Option<usize>,
}

/// Each dependency's probe.
#[derive(Serialize, ToSchema)]
struct Dependencies {
    redis: Probe,
    kafka: Probe,
}

/// One dependency's probe.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Probe {
    /// `up` or `down`.
    status: &'static str,
    latency_ms: f64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

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

#[utoipa::path(get, path = "/health", security((), ("bearer" = [])), responses(
    (status = 200, description = "Redis is up (Kafka may be down: `degraded`)", body = HealthReport),
    (status = 503, description = "Redis is down", body = HealthReport),
))]
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
    let (redis_up, kafka_up) = (redis.status == "up", kafka.status == "up");
    let status = match (redis_up, kafka_up) {
        (true, true) => "healthy",
        (true, false) => "degraded",
        _ => "unhealthy",
    };
    let body = if is_admin(state, req).await {
        HealthReport::Details(HealthDetails {
            status,
            dependencies: Dependencies { redis, kafka },
            outbox_backlog: backlog.map(|b| b.waiting),
            outbox_quarantined: backlog.map(|b| b.quarantined),
        })
    } else {
        HealthReport::Summary(HealthSummary { status })
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

async fn probe(check: impl std::future::Future<Output = Result<bool, AppError>>) -> Probe {
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(2), check).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let error = match outcome {
        Ok(Ok(true)) => None,
        Ok(Ok(false)) => Some("unexpected reply".to_string()),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("timed out".to_string()),
    };
    Probe {
        status: if error.is_none() { "up" } else { "down" },
        latency_ms,
        error,
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
