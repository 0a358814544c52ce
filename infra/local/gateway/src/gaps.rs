//! Loud gaps: every part of template.yaml is either emulated by the local gateway, or
//! classed here as having no local meaning, or refused.
//!
//! A refused part is a *gap*, named `<LogicalId>.<Property>[.<Property>...]` (functions'
//! events as `<Function>.Events.<Event>.<Property>`, globals as `Globals.Function.<Property>`).
//! [`crate::template::Template::load`] fails with every gap listed, unless each is named
//! in `LOCAL_GATEWAY_IGNORE` (comma-separated, exact names; naming something that is not a
//! gap is an error too, so the list cannot go stale). An ignored part is simply left out
//! locally (an ignored `Auth` serves the route without the authorizer, an ignored cron
//! schedule never runs).
//!
//! What is what:
//! - Resource types with no local meaning, accepted whatever their properties:
//!   [`NOT_APPLICABLE_TYPES`] (IAM, logs, alarms, dashboards, permissions).
//! - `AWS::Serverless::Function`: [`FUNCTION_PROPERTIES`] is emulated or documented as a
//!   no-op; `ReservedConcurrentExecutions` only for functions whose only events are
//!   schedules (the local scheduler invokes each one sequentially, so a reservation of 1 or
//!   more holds); `EventInvokeConfig` only with `MaximumRetryAttempts: 0` (local scheduled
//!   invocations are never retried) and `MaximumEventAgeInSeconds` (nothing queues locally).
//! - Events: `HttpApi` ([`HTTP_EVENT_PROPERTIES`]; `Auth`, `RouteSettings`, `TimeoutInMillis`
//!   are gaps), `Schedule` (`rate(...)` only: a `cron(...)` is a gap; `RetryPolicy` as for
//!   `EventInvokeConfig`), `MSK` ([`crate::template::EMULATED_MSK_PROPERTIES`]); any other
//!   event type is a gap (`<Function>.Events.<Event>.Type`).
//! - `AWS::Serverless::HttpApi`: `CorsConfiguration` and `DefaultRouteSettings` throttling
//!   are emulated, `AccessLogSettings` has no local meaning, anything else is a gap.
//! - WebSocket API (`AWS::ApiGatewayV2::*`): `WEBSOCKET` protocol with
//!   `$request.body.action` selection, `$connect`/`$disconnect`/`$default` routes with
//!   `AuthorizationType: NONE`, `AWS_PROXY` integrations, the stage's throttling; logging
//!   settings have no local meaning; anything else is a gap.
//! - Resource attributes: `Metadata`, `DependsOn`, `DeletionPolicy`, `UpdateReplacePolicy`
//!   are accepted; `Condition` only on a not-applicable resource (elsewhere the resource
//!   might not exist in AWS while the local stack serves it).

use std::collections::BTreeSet;

use serde_yaml::{Mapping, Value};

/// The variable that names the gaps a developer accepts.
pub const IGNORE_VAR: &str = "LOCAL_GATEWAY_IGNORE";

/// Resource types with no local meaning (nothing to emulate for a developer's run).
pub const NOT_APPLICABLE_TYPES: &[&str] = &[
    "AWS::IAM::ManagedPolicy",
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::Logs::LogGroup",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::CompositeAlarm",
    "AWS::CloudWatch::Dashboard",
    "AWS::Lambda::Permission",
    "AWS::ApiGateway::Account",
];

/// Function properties (per function or in `Globals.Function`) that are emulated
/// (`Events`, `Timeout`) or have no local meaning: the gateway calls the handler
/// in-process (`CodeUri`, `Handler`, `Runtime`, `Architectures`, `MemorySize`), the local
/// stack sets the environment itself (`Environment`), and IAM, VPC, tracing and log
/// settings do not change what a handler answers (`Policies`, `VpcConfig`, `Tracing`,
/// `LoggingConfig`, `Description`, `Tags`). Lambda Managed Instances
/// (`CapacityProviderConfig`, `PublishToLatestPublished`) runs many invocations in one
/// process at once, which the gateway does for every function already.
pub const FUNCTION_PROPERTIES: &[&str] = &[
    "Events",
    "Timeout",
    "CodeUri",
    "Handler",
    "Runtime",
    "Architectures",
    "MemorySize",
    "Environment",
    "Policies",
    "VpcConfig",
    "Tracing",
    "LoggingConfig",
    "Description",
    "Tags",
    "CapacityProviderConfig",
    "PublishToLatestPublished",
];

/// `HttpApi` event properties that are emulated (`ApiId` names the one HTTP API;
/// `PayloadFormatVersion` must be "2.0", the only format the gateway builds).
pub const HTTP_EVENT_PROPERTIES: &[&str] = &["Method", "Path", "ApiId", "PayloadFormatVersion"];

/// One part of the template the local stack does not emulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// `Resource.Property[.Property...]`, the name `LOCAL_GATEWAY_IGNORE` takes.
    pub name: String,
    /// Why it is refused.
    pub why: String,
}

/// Collects the gaps of a template document.
pub struct Gaps {
    found: Vec<Gap>,
}

impl Gaps {
    fn add(&mut self, name: impl Into<String>, why: impl Into<String>) {
        self.found.push(Gap {
            name: name.into(),
            why: why.into(),
        });
    }

    /// Every gap of `doc`.
    pub fn of(doc: &Value) -> Vec<Gap> {
        let mut gaps = Gaps { found: Vec::new() };
        let empty = Mapping::new();
        if let Some(globals) = doc.get("Globals").and_then(Value::as_mapping) {
            for (section, props) in globals {
                let section = section.as_str().unwrap_or("?");
                let props = props.as_mapping().unwrap_or(&empty);
                match section {
                    "Function" => gaps.function("Globals.Function", props, None),
                    "HttpApi" => gaps.http_api("Globals.HttpApi", props),
                    _ => gaps.add(format!("Globals.{section}"), "this Globals section is not emulated"),
                }
            }
        }
        let resources = doc.get("Resources").and_then(Value::as_mapping).unwrap_or(&empty);
        for (id, resource) in resources {
            let id = id.as_str().unwrap_or("?");
            let kind = resource.get("Type").and_then(Value::as_str).unwrap_or("");
            let props = resource.get("Properties").and_then(Value::as_mapping).unwrap_or(&empty);
            let not_applicable = NOT_APPLICABLE_TYPES.contains(&kind);
            for key in resource.as_mapping().unwrap_or(&empty).keys() {
                match key.as_str().unwrap_or("?") {
                    "Type" | "Properties" | "Metadata" | "DependsOn" | "DeletionPolicy" | "UpdateReplacePolicy" => {}
                    "Condition" if not_applicable => {}
                    other => gaps.add(
                        format!("{id}.{other}"),
                        "the local stack would serve this resource whether or not the attribute holds",
                    ),
                }
            }
            match kind {
                _ if not_applicable => {}
                "AWS::Serverless::Function" => gaps.function(id, props, Some(props)),
                "AWS::Serverless::HttpApi" => gaps.http_api(id, props),
                "AWS::ApiGatewayV2::Api" => gaps.websocket_api(id, props),
                "AWS::ApiGatewayV2::Route" => gaps.route(id, props),
                "AWS::ApiGatewayV2::RouteResponse" => gaps.only(id, props, &["ApiId", "RouteId", "RouteResponseKey"]),
                "AWS::ApiGatewayV2::Integration" => gaps.integration(id, props),
                "AWS::ApiGatewayV2::Stage" => gaps.stage(id, props),
                other => gaps.add(format!("{id}.Type"), format!("resource type {other} is not emulated")),
            }
        }
        gaps.found
    }

    /// Every property of `props` outside `allowed` is a gap.
    fn only(&mut self, at: &str, props: &Mapping, allowed: &[&str]) {
        for key in props.keys() {
            let key = key.as_str().unwrap_or("?");
            if !allowed.contains(&key) {
                self.add(format!("{at}.{key}"), "is not emulated by the local gateway");
            }
        }
    }

    /// A function's properties; `own` is the function's own mapping (None for Globals).
    fn function(&mut self, at: &str, props: &Mapping, own: Option<&Mapping>) {
        let only_schedules = own
            .and_then(|p| p.get("Events"))
            .and_then(Value::as_mapping)
            .is_some_and(|events| {
                !events.is_empty()
                    && events
                        .values()
                        .all(|e| e.get("Type").and_then(Value::as_str) == Some("Schedule"))
            });
        for (key, value) in props {
            let key = key.as_str().unwrap_or("?");
            match key {
                _ if FUNCTION_PROPERTIES.contains(&key) => {}
                "ReservedConcurrentExecutions" if only_schedules => {}
                "ReservedConcurrentExecutions" => self.add(
                    format!("{at}.{key}"),
                    "concurrency limits are only emulated for schedule-only functions (invoked one at a time)",
                ),
                "EventInvokeConfig" => self.retry_policy(&format!("{at}.{key}"), value),
                _ => self.add(format!("{at}.{key}"), "is not emulated by the local gateway"),
            }
        }
        let Some(events) = own.and_then(|p| p.get("Events")).and_then(Value::as_mapping) else {
            return;
        };
        let empty = Mapping::new();
        for (name, event) in events {
            let at = format!("{at}.Events.{}", name.as_str().unwrap_or("?"));
            let props = event.get("Properties").and_then(Value::as_mapping).unwrap_or(&empty);
            match event.get("Type").and_then(Value::as_str).unwrap_or("") {
                "HttpApi" => {
                    self.only(&at, props, HTTP_EVENT_PROPERTIES);
                    if let Some(v) = props.get("PayloadFormatVersion") {
                        if v.as_str() != Some("2.0") {
                            self.add(format!("{at}.PayloadFormatVersion"), "only 2.0 is emulated");
                        }
                    }
                }
                "Schedule" => {
                    for (key, value) in props {
                        let key = key.as_str().unwrap_or("?");
                        match key {
                            "Schedule" => {
                                if !value.as_str().is_some_and(|s| s.starts_with("rate(")) {
                                    self.add(
                                        format!("{at}.Schedule"),
                                        "only rate(...) schedules are emulated (not cron)",
                                    );
                                }
                            }
                            "Enabled" | "Name" | "Description" => {}
                            "RetryPolicy" => self.retry_policy(&format!("{at}.RetryPolicy"), value),
                            _ => self.add(format!("{at}.{key}"), "is not emulated by the local gateway"),
                        }
                    }
                }
                "MSK" => {
                    for key in props.keys() {
                        let key = key.as_str().unwrap_or("?");
                        if !crate::template::EMULATED_MSK_PROPERTIES.contains(&key) {
                            self.add(format!("{at}.{key}"), "is not emulated by the local gateway (MSK)");
                        }
                    }
                }
                other => self.add(format!("{at}.Type"), format!("event type {other:?} is not emulated")),
            }
        }
    }

    /// `EventInvokeConfig` / `RetryPolicy`: local scheduled invocations are never retried
    /// and never queued, so only "no retries" is what AWS does too.
    fn retry_policy(&mut self, at: &str, value: &Value) {
        let empty = Mapping::new();
        for (key, v) in value.as_mapping().unwrap_or(&empty) {
            match key.as_str().unwrap_or("?") {
                "MaximumRetryAttempts" if v.as_i64() == Some(0) => {}
                "MaximumRetryAttempts" => self.add(
                    format!("{at}.MaximumRetryAttempts"),
                    "only 0 is emulated (local invocations are never retried)",
                ),
                "MaximumEventAgeInSeconds" => {}
                other => self.add(format!("{at}.{other}"), "is not emulated by the local gateway"),
            }
        }
    }

    fn http_api(&mut self, at: &str, props: &Mapping) {
        for (key, value) in props {
            let key = key.as_str().unwrap_or("?");
            match key {
                "CorsConfiguration" => self.only(
                    &format!("{at}.{key}"),
                    value.as_mapping().unwrap_or(&Mapping::new()),
                    &[
                        "AllowOrigins",
                        "AllowMethods",
                        "AllowHeaders",
                        "ExposeHeaders",
                        "AllowCredentials",
                        "MaxAge",
                    ],
                ),
                "DefaultRouteSettings" => self.route_settings(&format!("{at}.{key}"), value),
                "AccessLogSettings" | "Description" | "Tags" => {}
                _ => self.add(format!("{at}.{key}"), "is not emulated by the local gateway"),
            }
        }
    }

    /// Throttling is emulated; logging/metrics settings have no local meaning.
    fn route_settings(&mut self, at: &str, value: &Value) {
        self.only(
            at,
            value.as_mapping().unwrap_or(&Mapping::new()),
            &[
                "ThrottlingRateLimit",
                "ThrottlingBurstLimit",
                "DetailedMetricsEnabled",
                "LoggingLevel",
                "DataTraceEnabled",
            ],
        );
    }

    fn websocket_api(&mut self, at: &str, props: &Mapping) {
        for (key, value) in props {
            let key = key.as_str().unwrap_or("?");
            match key {
                "ProtocolType" if value.as_str() == Some("WEBSOCKET") => {}
                "RouteSelectionExpression" if value.as_str() == Some("$request.body.action") => {}
                "Name" | "Description" | "Tags" => {}
                _ => self.add(format!("{at}.{key}"), "is not emulated by the local gateway"),
            }
        }
    }

    fn route(&mut self, at: &str, props: &Mapping) {
        for (key, value) in props {
            let key = key.as_str().unwrap_or("?");
            match key {
                "RouteKey" if matches!(value.as_str(), Some("$connect" | "$disconnect" | "$default")) => {}
                "RouteKey" => self.add(
                    format!("{at}.RouteKey"),
                    "only $connect, $disconnect and $default are emulated",
                ),
                "AuthorizationType" if value.as_str() == Some("NONE") => {}
                "ApiId" | "Target" | "OperationName" | "RouteResponseSelectionExpression" => {}
                _ => self.add(format!("{at}.{key}"), "is not emulated by the local gateway"),
            }
        }
    }

    fn integration(&mut self, at: &str, props: &Mapping) {
        for (key, value) in props {
            let key = key.as_str().unwrap_or("?");
            match key {
                "IntegrationType" if value.as_str() == Some("AWS_PROXY") => {}
                "ApiId" | "IntegrationUri" | "Description" => {}
                _ => self.add(format!("{at}.{key}"), "is not emulated by the local gateway"),
            }
        }
    }

    fn stage(&mut self, at: &str, props: &Mapping) {
        for (key, value) in props {
            let key = key.as_str().unwrap_or("?");
            match key {
                "DefaultRouteSettings" => self.route_settings(&format!("{at}.{key}"), value),
                "ApiId" | "StageName" | "AutoDeploy" | "Description" | "Tags" | "AccessLogSettings" => {}
                _ => self.add(format!("{at}.{key}"), "is not emulated by the local gateway"),
            }
        }
    }
}

/// The names in `LOCAL_GATEWAY_IGNORE` (comma-separated; blanks dropped).
pub fn ignored_from_env() -> BTreeSet<String> {
    std::env::var(IGNORE_VAR)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Fails naming every gap not in `ignored`, and every ignored name that is no gap.
pub fn check(gaps: &[Gap], ignored: &BTreeSet<String>) -> anyhow::Result<()> {
    let names: BTreeSet<&str> = gaps.iter().map(|g| g.name.as_str()).collect();
    let stale: Vec<&String> = ignored.iter().filter(|i| !names.contains(i.as_str())).collect();
    let open: Vec<&Gap> = gaps.iter().filter(|g| !ignored.contains(&g.name)).collect();
    if open.is_empty() && stale.is_empty() {
        for g in gaps {
            tracing::warn!(part = %g.name, why = %g.why, "template.yaml part NOT emulated ({IGNORE_VAR})");
        }
        return Ok(());
    }
    let mut message = String::new();
    if !open.is_empty() {
        message.push_str("template.yaml has parts the local gateway does not emulate:\n");
        for g in &open {
            message.push_str(&format!("  - {} {}\n", g.name, g.why));
        }
        message.push_str(&format!(
            "Remove them, implement them in infra/local/gateway, or opt out by name: {IGNORE_VAR}={}\n",
            open.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(",")
        ));
    }
    if !stale.is_empty() {
        message.push_str(&format!(
            "{IGNORE_VAR} names parts that are not gaps of this template: {}\n",
            stale.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
        ));
    }
    anyhow::bail!(message.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use crate::template::Template;
    use std::collections::BTreeSet;

    fn repository_template() -> String {
        std::fs::read_to_string(crate::default_template_path()).expect("template.yaml")
    }

    /// The repository template with `from` replaced by `to` (which must occur).
    fn modified(from: &str, to: &str) -> String {
        let text = repository_template();
        assert!(text.contains(from), "template.yaml no longer has {from:?}");
        text.replacen(from, to, 1)
    }

    /// Refused naming a part that ends with `suffix`; opting out of that exact name works.
    fn refused(text: &str, suffix: &str) {
        let error = format!("{:#}", Template::parse(text).expect_err(suffix));
        assert!(error.contains("LOCAL_GATEWAY_IGNORE"), "{error}");
        let name = error
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .filter_map(|l| l.split_whitespace().next())
            .find(|n| n.ends_with(suffix))
            .unwrap_or_else(|| panic!("{error} does not name {suffix}"))
            .to_string();
        let ignored = BTreeSet::from([name.clone()]);
        let t = Template::parse_ignoring(text, &ignored).unwrap_or_else(|e| panic!("opting out of {name}: {e:#}"));
        assert!(t.ignored.contains(&name));
    }

    #[test]
    fn the_repository_template_needs_no_opt_out() {
        let t = Template::parse(&repository_template()).expect("every part emulated or not applicable");
        assert!(t.ignored.is_empty());
        assert_eq!(t.timeout("AuthFunction"), std::time::Duration::from_secs(10));
        assert_eq!(t.timeout("OutboxRelayFunction"), std::time::Duration::from_secs(60));
        assert!(t.http_throttle.is_some() && t.websocket_throttle.is_some());
        let cors = t.cors.expect("CORS");
        assert_eq!(cors.allow_origins, vec!["*"]);
        assert!(!cors.allow_credentials, "CorsAnyOrigin: no credentials with *");
    }

    #[test]
    fn an_authorizer_a_cron_schedule_an_unknown_property_and_event_type_are_refused_and_can_be_opted_out() {
        refused(
            &modified(
                "      CorsConfiguration:\n",
                "      Auth: { EnableIamAuthorizer: true }\n      CorsConfiguration:\n",
            ),
            "HttpApi.Auth",
        );
        let cron = modified("Schedule: rate(1 minute)", "Schedule: cron(0 * * * ? *)");
        refused(&cron, ".Events.EveryMinute.Schedule");
        refused(
            &modified(
                "    Timeout: 10\n",
                "    Timeout: 10\n    SnapStart: { ApplyOn: None }\n",
            ),
            "Globals.Function.SnapStart",
        );
        refused(
            &modified("AuthorizationType: NONE", "AuthorizationType: CUSTOM"),
            ".AuthorizationType",
        );
        refused(
            &modified(
                "      ReservedConcurrentExecutions: 1\n",
                "      ReservedConcurrentExecutions: 1\n      FileSystemConfigs: []\n",
            ),
            ".FileSystemConfigs",
        );
        refused(
            &modified("          Type: Schedule\n", "          Type: SQS\n"),
            ".Events.EveryMinute.Type",
        );
        refused(
            &modified("MaximumRetryAttempts: 0", "MaximumRetryAttempts: 2"),
            ".EventInvokeConfig.MaximumRetryAttempts",
        );
        refused(
            &modified("Resources:\n", "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n"),
            "Queue.Type",
        );
    }

    #[test]
    fn naming_something_that_is_no_gap_is_an_error() {
        let error = Template::parse_ignoring(&repository_template(), &BTreeSet::from(["HttpApi.Nope".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("HttpApi.Nope"), "{error}");
    }

    #[test]
    fn an_unknown_msk_property_can_be_opted_out_by_name() {
        let text = modified(
            "            Stream: !Ref MskClusterArn\n",
            "            Stream: !Ref MskClusterArn\n            FilterCriteria: { Filters: [] }\n",
        );
        refused(&text, ".FilterCriteria");
    }
}
