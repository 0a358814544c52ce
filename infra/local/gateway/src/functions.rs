//! The functions of template.yaml, by LogicalId, called in-process.

use devconnect::AppState;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

/// Each HTTP function's LogicalId and the route keys its handler serves.
pub const HTTP_FUNCTIONS: &[(&str, &[&str])] = &[
    ("AuthFunction", devconnect_auth::ROUTES),
    ("OpsFunction", devconnect_ops::ROUTES),
];

/// Scheduled functions by LogicalId.
pub const SCHEDULED_FUNCTIONS: &[&str] = &["OutboxRelayFunction"];

/// One `AppState` per function (they share connections; only the event `source` differs).
#[derive(Clone)]
pub struct Functions {
    auth: AppState,
    ops: AppState,
}

impl Functions {
    /// Hosts every function on the given clients.
    pub fn new(state: &AppState) -> Self {
        Self {
            auth: state.for_function(devconnect_auth::FUNCTION_NAME),
            ops: state.for_function(devconnect_ops::FUNCTION_NAME),
        }
    }

    /// Invokes an HTTP function; `None` if no such function is hosted.
    pub async fn invoke_http(&self, function: &str, req: Request) -> Option<Response<Body>> {
        Some(match function {
            "AuthFunction" => devconnect_auth::handle(&self.auth, req).await,
            "OpsFunction" => devconnect_ops::handle(&self.ops, req).await,
            _ => return None,
        })
    }

    /// Invokes a scheduled function as EventBridge would; returns its result.
    pub async fn invoke_scheduled(&self, function: &str) -> anyhow::Result<Value> {
        match function {
            "OutboxRelayFunction" => {
                let report = devconnect_ops::relay(&self.ops).await?;
                Ok(json!({"relayed": report.relayed, "remaining": report.remaining}))
            }
            other => anyhow::bail!("no scheduled function {other}"),
        }
    }
}
