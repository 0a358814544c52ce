//! GET /analytics/daily.

use std::collections::BTreeMap;

use devconnect::openapi::ErrorBody;
use devconnect::{
    api::{self, Reply},
    clock,
    session::WithUser,
    AppError, AppState,
};
use lambda_http::Request;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store;

/// This function's part of docs/openapi.json (see `devconnect::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(daily))]
struct Api;

/// This function's operations, for docs/openapi.json.
pub fn openapi() -> devconnect::openapi::OpenApi {
    <Api as utoipa::OpenApi>::openapi()
}

/// GET /analytics/daily.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DailyReport {
    /// YYYY-MM-DD (UTC).
    date: String,
    /// Events counted that day.
    total_events: i64,
    /// Per event type.
    counts: BTreeMap<String, i64>,
    /// Per hour (`00`..`23`), per event type.
    hourly: BTreeMap<String, BTreeMap<String, i64>>,
    /// Distinct active users that day (HyperLogLog estimate).
    dau: i64,
    /// Distinct active users in that day's month up to that day (HyperLogLog estimate).
    mau: i64,
    /// USER_SIGNUP events.
    new_users: i64,
    /// MESSAGE_SENT events.
    messages_sent: i64,
    /// Requests sent -> accepted.
    connection_funnel: Funnel,
}

/// Connection requests sent and accepted that day.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Funnel {
    sent: i64,
    accepted: i64,
    /// accepted / sent; 0 when none were sent.
    acceptance_rate: f64,
}

#[utoipa::path(get, path = "/analytics/daily", params(
    ("date" = String, Query, description = "YYYY-MM-DD"),
), responses(
    (status = 200, description = "The day's counters", body = DailyReport),
    (status = 403, description = "The caller is not an admin", body = ErrorBody),
))]
/// GET /analytics/daily?date=YYYY-MM-DD -> counts per event type and hour, DAU, MAU,
/// new users, messages and the connection funnel. Admins only (ADMIN_USER_IDS).
pub async fn daily(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    if !state.config.admin_user_ids.contains(&me.user_id) {
        return Err(AppError::Forbidden("analytics are for admins".into()));
    }
    let date =
        api::query_param(req, "date").ok_or_else(|| AppError::Validation("date is required (YYYY-MM-DD)".into()))?;
    let date = chrono::NaiveDate::parse_from_str(date, clock::DAY_FORMAT)
        .map_err(|_| AppError::Validation("date must be YYYY-MM-DD".into()))?
        .format(clock::DAY_FORMAT)
        .to_string();
    let (counters, dau, mau) = store::day(&state.store, &date).await?;
    let mut by_type = BTreeMap::new();
    let mut by_hour: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (field, n) in &counters {
        match field.split_once(':') {
            Some((hour, event_type)) => {
                by_hour
                    .entry(hour.to_string())
                    .or_default()
                    .insert(event_type.to_string(), *n);
            }
            None if field != "events" => {
                by_type.insert(field.clone(), *n);
            }
            None => {}
        }
    }
    let count = |t: &str| by_type.get(t).copied().unwrap_or(0);
    let (sent, accepted) = (count("CONNECTION_REQUEST_SENT"), count("CONNECTION_ACCEPTED"));
    let rate = if sent > 0 { accepted as f64 / sent as f64 } else { 0.0 };
    Ok(Reply::ok(DailyReport {
        date,
        total_events: counters.get("events").copied().unwrap_or(0),
        new_users: count("USER_SIGNUP"),
        messages_sent: count("MESSAGE_SENT"),
        counts: by_type,
        hourly: by_hour,
        dau,
        mau,
        connection_funnel: Funnel {
            sent,
            accepted,
            acceptance_rate: rate,
        },
    })
    .rate(&me.rate))
}
