//! The functions of template.yaml, by LogicalId, called in-process.

use aws_lambda_events::event::{
    apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest},
    kafka::KafkaEvent,
};
use devconnect::{api, metrics::Metrics, AppState};
use devconnect_channels::Channels;
use devconnect_realtime::{pusher::Pusher, Realtime};
use futures::future::BoxFuture;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use std::{collections::BTreeMap, future::Future, time::Duration};

/// Each HTTP function's LogicalId and the route keys its handler serves.
pub const HTTP_FUNCTIONS: &[(&str, &[&str])] = &[
    ("AuthFunction", devconnect_auth::ROUTES),
    ("RequestsFunction", devconnect_requests::ROUTES),
    ("MessagingFunction", devconnect_messaging::ROUTES),
    ("PresenceFunction", devconnect_presence::ROUTES),
    ("NotificationsFunction", devconnect_notifications::ROUTES),
    ("AnalyticsFunction", devconnect_analytics::ROUTES),
    ("OpsFunction", devconnect_ops::ROUTES),
    ("ChannelsFunction", devconnect_channels::ROUTES),
];

/// MSK-triggered functions by LogicalId.
pub const CONSUMER_FUNCTIONS: &[&str] = &[
    "NotificationsConsumerFunction",
    "EmailSenderFunction",
    "SmsSenderFunction",
    "AnalyticsConsumerFunction",
    "RealtimePusherFunction",
    "ChannelsRouterFunction",
];

/// The function behind the WebSocket API's routes.
pub const WEBSOCKET_FUNCTION: &str = "RealtimeFunction";

/// Scheduled functions by LogicalId.
pub const SCHEDULED_FUNCTIONS: &[&str] = &[
    "OutboxRelayFunction",
    "PresenceSweepFunction",
    "ChannelsSchedulerFunction",
];

/// An HTTP function's `handle`, boxed: one type for all seven, and a shallow future
/// (the handlers' futures nest deep enough to hit rustc's layout recursion limit).
type HttpHandler = for<'a> fn(&'a AppState, Request) -> BoxFuture<'a, Response<Body>>;

/// Each function's template.yaml `BuildProperties: Binary` by LogicalId: the value of
/// its metrics' `Function` dimension, as in AWS (where `main` takes it from the binary).
pub const BINARIES: &[(&str, &str)] = &[
    ("AuthFunction", "auth"),
    ("RequestsFunction", "requests"),
    ("MessagingFunction", "messaging"),
    ("PresenceFunction", "presence"),
    ("PresenceSweepFunction", "presence-sweep"),
    ("NotificationsFunction", "notifications"),
    ("NotificationsConsumerFunction", "notifications-consumer"),
    ("AnalyticsFunction", "analytics"),
    ("AnalyticsConsumerFunction", "analytics-consumer"),
    ("OpsFunction", "ops"),
    ("OutboxRelayFunction", "outbox-relay"),
    ("RealtimeFunction", "realtime"),
    ("RealtimePusherFunction", "realtime-pusher"),
    ("EmailSenderFunction", "email-sender"),
    ("SmsSenderFunction", "sms-sender"),
    ("RebuildFunction", "rebuild"),
    ("ChannelsFunction", "channels"),
    ("ChannelsRouterFunction", "channels-router"),
    ("ChannelsSchedulerFunction", "channels-scheduler"),
];

/// One `AppState` per deployed function (binary): they share connections and one metrics
/// recorder; the event `source` and the metrics' `Function` dimension differ.
#[derive(Clone)]
pub struct Functions {
    auth: AppState,
    requests: AppState,
    messaging: AppState,
    presence: AppState,
    presence_sweep: AppState,
    notifications: AppState,
    notifications_consumer: AppState,
    analytics: AppState,
    analytics_consumer: AppState,
    realtime: Realtime,
    realtime_pusher: Realtime,
    ops: AppState,
    outbox_relay: AppState,
    /// EmailSenderFunction and SmsSenderFunction, recording into the local outbox.
    senders: devconnect_senders::local::LocalSenders,
    channels: Channels,
    channels_router: Channels,
    channels_scheduler: Channels,
    metrics: Metrics,
    /// Each function's template `Timeout` (see [`Functions::set_timeouts`]).
    timeouts: std::sync::Arc<BTreeMap<String, Duration>>,
    /// The HTTP API's integration timeout ([`HTTP_INTEGRATION_TIMEOUT`] unless shortened).
    integration_timeout: Duration,
}

/// API Gateway's HTTP API integration timeout: past it the client gets 503
/// `{"message":"Service Unavailable"}` (a REST API would answer 504).
pub const HTTP_INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What API Gateway itself answers, `{"message": ...}` with `status`.
pub fn gateway_message(status: u16, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(json!({ "message": message }).to_string()));
    *response.status_mut() = lambda_http::http::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        "content-type",
        lambda_http::http::HeaderValue::from_static("application/json"),
    );
    response
}

impl Functions {
    /// Hosts every function on the given clients; `websocket_endpoint` is where the
    /// `@connections` API is served (the gateway itself, e.g. `http://127.0.0.1:3000`).
    /// Every function records into `state`'s metrics recorder, read by [`Functions::metrics`].
    pub fn new(state: &AppState, websocket_endpoint: &str) -> Self {
        let binary = |logical_id: &str| {
            BINARIES
                .iter()
                .find(|(id, _)| *id == logical_id)
                .map_or("unknown", |(_, binary)| *binary)
        };
        let realtime = |logical_id| Realtime {
            app: state.for_function(devconnect_realtime::FUNCTION_NAME, binary(logical_id)),
            pusher: Pusher::local(websocket_endpoint),
        };
        // The channels functions sign unsubscribe links pointing at this gateway (or PUBLIC_API_URL).
        let settings = devconnect_channels::settings::Settings::from_env(websocket_endpoint).unwrap_or_else(|e| {
            tracing::error!(error = %e, "channels settings invalid; using the local defaults");
            devconnect_channels::settings::Settings::local(websocket_endpoint)
        });
        let channels = |logical_id| Channels {
            app: state.for_function(devconnect_channels::FUNCTION_NAME, binary(logical_id)),
            settings: settings.clone(),
        };
        Self {
            auth: state.for_function(devconnect_auth::FUNCTION_NAME, binary("AuthFunction")),
            requests: state.for_function(devconnect_requests::FUNCTION_NAME, binary("RequestsFunction")),
            messaging: state.for_function(devconnect_messaging::FUNCTION_NAME, binary("MessagingFunction")),
            presence: state.for_function(devconnect_presence::FUNCTION_NAME, binary("PresenceFunction")),
            presence_sweep: state.for_function(devconnect_presence::FUNCTION_NAME, binary("PresenceSweepFunction")),
            notifications: state.for_function(devconnect_notifications::FUNCTION_NAME, binary("NotificationsFunction")),
            notifications_consumer: state.for_function(
                devconnect_notifications::FUNCTION_NAME,
                binary("NotificationsConsumerFunction"),
            ),
            analytics: state.for_function(devconnect_analytics::FUNCTION_NAME, binary("AnalyticsFunction")),
            analytics_consumer: state
                .for_function(devconnect_analytics::FUNCTION_NAME, binary("AnalyticsConsumerFunction")),
            realtime: realtime("RealtimeFunction"),
            realtime_pusher: realtime("RealtimePusherFunction"),
            ops: state.for_function(devconnect_ops::FUNCTION_NAME, binary("OpsFunction")),
            outbox_relay: state.for_function(devconnect_ops::FUNCTION_NAME, binary("OutboxRelayFunction")),
            // The providers are the AWS API double at LOCAL_AWS_ENDPOINT (moto) if set, else a
            // stand-in that accepts everything; either way `GET /_local/outbox/*` shows what went out.
            senders: devconnect_senders::local::LocalSenders::new(
                state.for_function(devconnect_senders::EMAIL_FUNCTION, binary("EmailSenderFunction")),
                state.for_function(devconnect_senders::SMS_FUNCTION, binary("SmsSenderFunction")),
                std::env::var("LOCAL_AWS_ENDPOINT")
                    .ok()
                    .filter(|e| !e.is_empty())
                    .as_deref(),
            ),
            channels: channels("ChannelsFunction"),
            channels_router: channels("ChannelsRouterFunction"),
            channels_scheduler: channels("ChannelsSchedulerFunction"),
            metrics: state.metrics.clone(),
            timeouts: Default::default(),
            integration_timeout: HTTP_INTEGRATION_TIMEOUT,
        }
    }

    /// Applies each function's template `Timeout` (LogicalId -> timeout); a function not
    /// listed gets [`crate::template::DEFAULT_FUNCTION_TIMEOUT`]. As in Lambda, an
    /// invocation past it is stopped and counts as a function error.
    pub fn set_timeouts(&mut self, timeouts: BTreeMap<String, Duration>) {
        self.timeouts = std::sync::Arc::new(timeouts);
    }

    /// Shortens the HTTP API's integration timeout (AWS: 30 s at most, the default here), so
    /// a test can see API Gateway give up on a function that is still running.
    pub fn set_integration_timeout(&mut self, timeout: Duration) {
        self.integration_timeout = timeout;
    }

    /// The function's timeout.
    pub fn timeout(&self, function: &str) -> Duration {
        self.timeouts
            .get(function)
            .copied()
            .unwrap_or(crate::template::DEFAULT_FUNCTION_TIMEOUT)
    }

    /// Runs `invocation` within `function`'s timeout; `Err` with Lambda's message past it.
    async fn within_timeout<T>(&self, function: &str, invocation: impl Future<Output = T>) -> anyhow::Result<T> {
        let limit = self.timeout(function);
        tokio::time::timeout(limit, invocation).await.map_err(|_| {
            tracing::warn!(function, timeout = ?limit, "Task timed out");
            anyhow::anyhow!("{function}: Task timed out after {:.2} seconds", limit.as_secs_f64())
        })
    }

    /// The recorder every hosted function counts into (`GET /_local/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the hosted email and SMS senders handed to their provider (`GET /_local/outbox/*`).
    pub fn outbox(&self) -> &devconnect_senders::capture::Outbox {
        self.senders.outbox()
    }

    /// Invokes an HTTP function, measured as its Lambda `main` measures it; `None` if no
    /// such function is hosted.
    pub async fn invoke_http(&self, function: &str, req: Request) -> Option<Response<Body>> {
        let invocation: BoxFuture<'_, Response<Body>> = if function == "ChannelsFunction" {
            // Its handler also takes the channels settings (unsubscribe secret, public URL).
            let ch = &self.channels;
            Box::pin(api::measured(&ch.app.metrics, req, move |req| {
                devconnect_channels::handle(ch, req)
            }))
        } else {
            let (state, handle): (&AppState, HttpHandler) = match function {
                "AuthFunction" => (&self.auth, |s, r| Box::pin(devconnect_auth::handle(s, r))),
                "RequestsFunction" => (&self.requests, |s, r| Box::pin(devconnect_requests::handle(s, r))),
                "MessagingFunction" => (&self.messaging, |s, r| Box::pin(devconnect_messaging::handle(s, r))),
                "PresenceFunction" => (&self.presence, |s, r| Box::pin(devconnect_presence::handle(s, r))),
                "NotificationsFunction" => (&self.notifications, |s, r| {
                    Box::pin(devconnect_notifications::handle(s, r))
                }),
                "AnalyticsFunction" => (&self.analytics, |s, r| Box::pin(devconnect_analytics::handle(s, r))),
                "OpsFunction" => (&self.ops, |s, r| Box::pin(devconnect_ops::handle(s, r))),
                _ => return None,
            };
            Box::pin(api::measured(&state.metrics, req, move |req| handle(state, req)))
        };
        let limit = self.timeout(function);
        // API Gateway waits at most 30 s (then 503); a function that times out earlier is a
        // function error, which the HTTP API answers with 500.
        Some(
            match tokio::time::timeout(limit.min(self.integration_timeout), invocation).await {
                Ok(response) => response,
                Err(_) if limit < self.integration_timeout => {
                    tracing::warn!(function, timeout = ?limit, "Task timed out");
                    gateway_message(500, "Internal Server Error")
                }
                Err(_) => gateway_message(503, "Service Unavailable"),
            },
        )
    }

    /// Invokes an MSK-triggered function with a batch. The value is the function's
    /// report with its partial batch response (`batchItemFailures`) alongside; `Err`
    /// if there is no such function or the invocation ran past the function's timeout.
    pub async fn invoke_consumer(&self, function: &str, event: KafkaEvent) -> anyhow::Result<Value> {
        let outcome = match function {
            "NotificationsConsumerFunction" => {
                self.within_timeout(
                    function,
                    devconnect_notifications::consume(&self.notifications_consumer, event),
                )
                .await?
            }
            "AnalyticsConsumerFunction" => {
                self.within_timeout(function, devconnect_analytics::consume(&self.analytics_consumer, event))
                    .await?
            }
            "ChannelsRouterFunction" => {
                self.within_timeout(function, devconnect_channels::consume(&self.channels_router, event))
                    .await?
            }
            "RealtimePusherFunction" => {
                self.within_timeout(function, devconnect_realtime::push_batch(&self.realtime_pusher, event))
                    .await?
            }
            "EmailSenderFunction" => self.within_timeout(function, self.senders.consume_email(event)).await?,
            "SmsSenderFunction" => self.within_timeout(function, self.senders.consume_sms(event)).await?,
            other => anyhow::bail!("no consumer function {other}"),
        };
        Ok(serde_json::to_value(outcome)?)
    }

    /// Invokes the WebSocket function with a `$connect`, `$disconnect` or `$default` event.
    /// Past the function's timeout the answer is API Gateway's 500 for a function error.
    pub async fn invoke_websocket(&self, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        match self
            .within_timeout(WEBSOCKET_FUNCTION, devconnect_realtime::handle(&self.realtime, event))
            .await
        {
            Ok(response) => response,
            Err(_) => {
                let mut response = ApiGatewayProxyResponse::default();
                response.status_code = 500;
                response.body = Some(aws_lambda_events::encodings::Body::Text(
                    json!({"message": "Internal server error"}).to_string(),
                ));
                response
            }
        }
    }

    /// Invokes a scheduled function as EventBridge would; returns its result, or an error
    /// past the function's timeout.
    pub async fn invoke_scheduled(&self, function: &str) -> anyhow::Result<Value> {
        self.within_timeout(function, self.run_scheduled(function)).await?
    }

    async fn run_scheduled(&self, function: &str) -> anyhow::Result<Value> {
        match function {
            "OutboxRelayFunction" => Ok(serde_json::to_value(devconnect_ops::relay(&self.outbox_relay).await?)?),
            "PresenceSweepFunction" => {
                let correlation = uuid::Uuid::now_v7().to_string();
                let marked = devconnect_presence::sweep(&self.presence_sweep, &correlation).await?;
                Ok(json!({ "markedOffline": marked }))
            }
            "ChannelsSchedulerFunction" => Ok(devconnect_channels::run_schedule(&self.channels_scheduler).await?),
            other => anyhow::bail!("no scheduled function {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Function` dimension locally must be what AWS records: the template's Binary.
    #[test]
    fn binaries_are_the_templates_build_properties() {
        let text = std::fs::read_to_string(crate::default_template_path()).expect("template.yaml");
        let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        let resources = template["Resources"].as_mapping().expect("Resources");
        let mut declared: Vec<(String, String)> = resources
            .iter()
            .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
            .map(|(id, r)| {
                let binary = r["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap_or("?");
                (id.as_str().unwrap_or("?").to_string(), binary.to_string())
            })
            .collect();
        declared.sort();
        let mut ours: Vec<(String, String)> = BINARIES.iter().map(|(i, b)| (i.to_string(), b.to_string())).collect();
        ours.sort();
        assert_eq!(ours, declared);
    }
}
