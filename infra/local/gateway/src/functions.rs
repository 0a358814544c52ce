//! The functions of template.yaml, by LogicalId, called in-process.

use aws_lambda_events::event::{
    apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest},
    kafka::KafkaEvent,
};
use devconnect::AppState;
use devconnect_realtime::{pusher::Pusher, Realtime};
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

/// Each HTTP function's LogicalId and the route keys its handler serves.
pub const HTTP_FUNCTIONS: &[(&str, &[&str])] = &[
    ("AuthFunction", devconnect_auth::ROUTES),
    ("RequestsFunction", devconnect_requests::ROUTES),
    ("MessagingFunction", devconnect_messaging::ROUTES),
    ("PresenceFunction", devconnect_presence::ROUTES),
    ("NotificationsFunction", devconnect_notifications::ROUTES),
    ("AnalyticsFunction", devconnect_analytics::ROUTES),
    ("OpsFunction", devconnect_ops::ROUTES),
];

/// MSK-triggered functions by LogicalId.
pub const CONSUMER_FUNCTIONS: &[&str] = &[
    "NotificationsConsumerFunction",
    "AnalyticsConsumerFunction",
    "RealtimePusherFunction",
];

/// The function behind the WebSocket API's routes.
pub const WEBSOCKET_FUNCTION: &str = "RealtimeFunction";

/// Scheduled functions by LogicalId.
pub const SCHEDULED_FUNCTIONS: &[&str] = &["OutboxRelayFunction", "PresenceSweepFunction"];

/// One `AppState` per function (they share connections; only the event `source` differs).
#[derive(Clone)]
pub struct Functions {
    auth: AppState,
    requests: AppState,
    messaging: AppState,
    presence: AppState,
    notifications: AppState,
    analytics: AppState,
    realtime: Realtime,
    ops: AppState,
}

impl Functions {
    /// Hosts every function on the given clients; `websocket_endpoint` is where the
    /// `@connections` API is served (the gateway itself, e.g. `http://127.0.0.1:3000`).
    pub fn new(state: &AppState, websocket_endpoint: &str) -> Self {
        Self {
            auth: state.for_function(devconnect_auth::FUNCTION_NAME),
            requests: state.for_function(devconnect_requests::FUNCTION_NAME),
            messaging: state.for_function(devconnect_messaging::FUNCTION_NAME),
            presence: state.for_function(devconnect_presence::FUNCTION_NAME),
            notifications: state.for_function(devconnect_notifications::FUNCTION_NAME),
            analytics: state.for_function(devconnect_analytics::FUNCTION_NAME),
            realtime: Realtime {
                app: state.for_function(devconnect_realtime::FUNCTION_NAME),
                pusher: Pusher::local(websocket_endpoint),
            },
            ops: state.for_function(devconnect_ops::FUNCTION_NAME),
        }
    }

    /// Invokes an HTTP function; `None` if no such function is hosted.
    pub async fn invoke_http(&self, function: &str, req: Request) -> Option<Response<Body>> {
        Some(match function {
            "AuthFunction" => devconnect_auth::handle(&self.auth, req).await,
            "RequestsFunction" => devconnect_requests::handle(&self.requests, req).await,
            "MessagingFunction" => devconnect_messaging::handle(&self.messaging, req).await,
            "PresenceFunction" => devconnect_presence::handle(&self.presence, req).await,
            "NotificationsFunction" => devconnect_notifications::handle(&self.notifications, req).await,
            "AnalyticsFunction" => devconnect_analytics::handle(&self.analytics, req).await,
            "OpsFunction" => devconnect_ops::handle(&self.ops, req).await,
            _ => return None,
        })
    }

    /// Invokes an MSK-triggered function with a batch. The value is the function's
    /// report with its partial batch response (`batchItemFailures`) alongside; `Err`
    /// only if there is no such function.
    pub async fn invoke_consumer(&self, function: &str, event: KafkaEvent) -> anyhow::Result<Value> {
        let outcome = match function {
            "NotificationsConsumerFunction" => devconnect_notifications::consume(&self.notifications, event).await,
            "AnalyticsConsumerFunction" => devconnect_analytics::consume(&self.analytics, event).await,
            "RealtimePusherFunction" => devconnect_realtime::push_batch(&self.realtime, event).await,
            other => anyhow::bail!("no consumer function {other}"),
        };
        Ok(serde_json::to_value(outcome)?)
    }

    /// Invokes the WebSocket function with a `$connect`, `$disconnect` or `$default` event.
    pub async fn invoke_websocket(&self, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        devconnect_realtime::handle(&self.realtime, event).await
    }

    /// Invokes a scheduled function as EventBridge would; returns its result.
    pub async fn invoke_scheduled(&self, function: &str) -> anyhow::Result<Value> {
        match function {
            "OutboxRelayFunction" => Ok(serde_json::to_value(devconnect_ops::relay(&self.ops).await?)?),
            "PresenceSweepFunction" => {
                let correlation = uuid::Uuid::now_v7().to_string();
                let marked = devconnect_presence::sweep(&self.presence, &correlation).await?;
                Ok(json!({ "markedOffline": marked }))
            }
            other => anyhow::bail!("no scheduled function {other}"),
        }
    }
}
