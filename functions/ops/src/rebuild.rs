//! Rebuilding a projection: which topics feed it and whose apply code it uses, wired to
//! [`devconnect::rebuild`]. Invoked by hand: `{"projection":"analytics"}` to the
//! RebuildFunction in AWS, `./infra/local/run rebuild analytics` locally.

use devconnect::{
    config::Topics,
    projection::Projection,
    rebuild::{self, Options, RebuildError, Report},
    AppState,
};
use serde::Deserialize;

/// The Lambda event: `{"projection": "notifications" | "analytics"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Which projection to rebuild.
    pub projection: String,
}

/// Why a rebuild was not done.
#[derive(Debug, thiserror::Error)]
pub enum RebuildFailure {
    /// The event names no projection we have; nothing was touched.
    #[error("unknown projection {0:?}: expected \"notifications\" or \"analytics\"")]
    UnknownProjection(String),
    /// The rebuild itself stopped.
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
}

/// The topics a projection's consumer reads: the MSK events of its consumer function in
/// template.yaml (a test holds the two lists equal).
pub fn topic_names(t: &Topics, projection: Projection) -> Vec<String> {
    let mut topics = vec![
        t.user_events.clone(),
        t.connection_events.clone(),
        t.message_events.clone(),
    ];
    if projection == Projection::Analytics {
        topics.push(t.notification_events.clone());
    }
    topics
}

/// Rebuilds the projection `request` names, with the live consumer's apply code.
pub async fn rebuild(state: &AppState, request: &RebuildRequest, options: &Options) -> Result<Report, RebuildFailure> {
    let projection = Projection::parse(&request.projection)
        .ok_or_else(|| RebuildFailure::UnknownProjection(request.projection.clone()))?;
    let topics = topic_names(&state.config.topics, projection);
    let report = match projection {
        Projection::Analytics => {
            rebuild::run(state, projection, &topics, options, async |generation, records| {
                devconnect_analytics::replay(state, generation, records).await
            })
            .await?
        }
        Projection::Notifications => {
            rebuild::run(state, projection, &topics, options, async |generation, records| {
                devconnect_notifications::replay(state, generation, records).await
            })
            .await?
        }
    };
    Ok(report)
}
