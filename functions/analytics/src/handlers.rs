//! GET /analytics/daily.

use std::collections::BTreeMap;

use devconnect::{
    api::{self, Reply},
    session::WithUser,
    AppError, AppState,
};
use lambda_http::Request;
use serde_json::json;

use crate::store;

/// GET /analytics/daily?date=YYYY-MM-DD -> counts per event type and hour, DAU, MAU,
/// new users, messages and the connection funnel. Admins only (ADMIN_USER_IDS).
pub async fn daily(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    if !state.config.admin_user_ids.contains(&me.user_id) {
        return Err(AppError::Forbidden("analytics are for admins".into()));
    }
    let date =
        api::query_param(req, "date").ok_or_else(|| AppError::Validation("date is required (YYYY-MM-DD)".into()))?;
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| AppError::Validation("date must be YYYY-MM-DD".into()))?
        .format("%Y-%m-%d")
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
    Ok(Reply::ok(json!({
        "date": date,
        "totalEvents": counters.get("events").copied().unwrap_or(0),
        "counts": by_type,
        "hourly": by_hour,
        "dau": dau,
        "mau": mau,
        "newUsers": count("USER_SIGNUP"),
        "messagesSent": count("MESSAGE_SENT"),
        "connectionFunnel": {"sent": sent, "accepted": accepted, "acceptanceRate": rate},
    }))
    .rate(&me.rate))
}
