//! Reads the parts of the SAM template the local stack emulates.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context};
use serde_yaml::Value;

/// The YAML library the template is read with, for tests that check resources the
/// gateway does not emulate (alarms, dashboard) against the raw document.
pub use serde_yaml;

/// One `HttpApi` event of a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// The function's LogicalId, e.g. `AuthFunction`.
    pub function: String,
    /// Upper-case HTTP method (`ANY` matches all).
    pub method: String,
    /// Path template, e.g. `/users/{userId}`.
    pub path: String,
}

impl HttpRoute {
    /// API Gateway's route key, e.g. `GET /users/{userId}`.
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// One `Schedule` event of a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFunction {
    /// The function's LogicalId.
    pub function: String,
    /// The period of its `rate(...)` expression.
    pub every: Duration,
}

/// One `MSK` event of a function: an event source mapping for one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MskSource {
    /// The function's LogicalId.
    pub function: String,
    /// The topic it consumes.
    pub topic: String,
    /// Its consumer group (offsets are kept per group and topic).
    pub group: String,
    /// Most records per invocation.
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`: how long Lambda gathers records before invoking
    /// with fewer than `batch_size` (500 ms for Kafka sources when unset).
    pub batching_window: Duration,
    /// `LATEST` or `TRIM_HORIZON`, for a group with no stored offsets.
    pub starting_position: String,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`: the function's partial batch
    /// response is honoured (without it Lambda ignores `batchItemFailures`).
    pub report_batch_item_failures: bool,
    /// `MaximumRetryAttempts`: retries after the first invocation; `None` = -1 (infinite).
    pub maximum_retry_attempts: Option<u32>,
    /// `BisectBatchOnFunctionError`: split a batch whose invocation errors in two.
    pub bisect_batch_on_function_error: bool,
    /// `MaximumRecordAgeInSeconds`: older records go to the on-failure destination
    /// unprocessed; `None` = -1 (no limit).
    pub maximum_record_age: Option<Duration>,
    /// `DestinationConfig.OnFailure` (`kafka://<topic>`): the topic that receives each
    /// record Lambda gives up on.
    pub on_failure_topic: Option<String>,
}

/// Lambda's batching window for Kafka sources without `MaximumBatchingWindowInSeconds`.
pub const DEFAULT_KAFKA_BATCHING_WINDOW: Duration = Duration::from_millis(500);

/// Most retries Lambda applies when `MaximumRetryAttempts` is -1 (infinite) and an
/// on-failure destination is set.
pub const INFINITE_RETRIES_WITH_DESTINATION: u32 = 10;

impl MskSource {
    /// The retries this mapping really gets: `None` = retry forever. Lambda caps an
    /// infinite setting at [`INFINITE_RETRIES_WITH_DESTINATION`] once there is an
    /// on-failure destination.
    pub fn retry_limit(&self) -> Option<u32> {
        match (self.maximum_retry_attempts, &self.on_failure_topic) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => Some(INFINITE_RETRIES_WITH_DESTINATION),
            (None, None) => None,
        }
    }
}

/// What the gateway serves.
#[derive(Clone, Debug, Default)]
pub struct Template {
    /// Every HttpApi route.
    pub routes: Vec<HttpRoute>,
    /// Every rate-scheduled function.
    pub schedules: Vec<ScheduledFunction>,
    /// Every MSK event source, one per topic.
    pub msk_sources: Vec<MskSource>,
    /// Which WebSocket routes answer the client.
    pub route_responses: RouteResponses,
    /// Each function's `Timeout` (its own, else `Globals.Function`), by LogicalId.
    pub timeouts: BTreeMap<String, Duration>,
    /// The HTTP API's `DefaultRouteSettings` throttling.
    pub http_throttle: Option<Throttle>,
    /// The WebSocket stage's `DefaultRouteSettings` throttling.
    pub websocket_throttle: Option<Throttle>,
    /// The HTTP API's `CorsConfiguration`.
    pub cors: Option<Cors>,
    /// The gaps the developer opted out of (`LOCAL_GATEWAY_IGNORE`), left out locally.
    pub ignored: BTreeSet<String>,
}

/// Lambda's default function timeout (no `Timeout` in the template).
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(3);

/// A token bucket's settings: `rate` requests per second, bursts up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    /// Steady-state requests per second.
    pub rate: f64,
    /// Bucket size.
    pub burst: f64,
}

/// The HTTP API's CORS configuration, with parameters and conditions resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins (`*` = any).
    pub allow_origins: Vec<String>,
    /// Allowed methods.
    pub allow_methods: Vec<String>,
    /// Allowed request headers (lower case).
    pub allow_headers: Vec<String>,
    /// Response headers browsers may read.
    pub expose_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: bool,
    /// Seconds a preflight answer may be cached.
    pub max_age: Option<i64>,
}

/// The WebSocket routes whose integration response goes back to the client: those
/// with an `AWS::ApiGatewayV2::RouteResponse` (API Gateway only allows the `$default`
/// route response key on WebSocket APIs). API Gateway passes the backend's response
/// through only for these routes; for the others the function's body is discarded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteResponses {
    route_keys: BTreeSet<String>,
}

impl RouteResponses {
    /// Each `AWS::ApiGatewayV2::RouteResponse` with `RouteResponseKey: $default` whose
    /// `RouteId` is `!Ref` to an `AWS::ApiGatewayV2::Route` makes that route's
    /// `RouteKey` two-way.
    fn from_resources(resources: &serde_yaml::Mapping) -> anyhow::Result<Self> {
        let property = |resource: &Value, name: &str| resource.get("Properties").and_then(|p| p.get(name)).cloned();
        let mut route_keys = BTreeSet::new();
        for resource in resources.values() {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::ApiGatewayV2::RouteResponse")
                || property(resource, "RouteResponseKey").as_ref().and_then(Value::as_str) != Some("$default")
            {
                continue;
            }
            let route_id = match property(resource, "RouteId") {
                Some(Value::Tagged(tagged)) if tagged.tag == "Ref" => tagged.value.as_str().map(String::from),
                _ => None,
            }
            .context("a RouteResponse's RouteId must be !Ref to a Route of the template")?;
            let route = resources
                .get(route_id.as_str())
                .filter(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::ApiGatewayV2::Route"))
                .with_context(|| format!("RouteResponse refers to {route_id}, which is not a Route"))?;
            let key = property(route, "RouteKey")
                .and_then(|k| k.as_str().map(String::from))
                .with_context(|| format!("{route_id} has no RouteKey"))?;
            route_keys.insert(key);
        }
        Ok(Self { route_keys })
    }

    /// Routes that answer the client, e.g. `{"$default"}`.
    pub fn with_keys<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        Self {
            route_keys: keys.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `route_key`'s response body goes back on the socket.
    pub fn two_way(&self, route_key: &str) -> bool {
        self.route_keys.contains(route_key)
    }
}

/// Parameter values for the local stack, e.g.
/// `LOCAL_PARAMETER_OVERRIDES="HttpApiThrottlingRateLimit=100000 HttpApiThrottlingBurstLimit=100000"`
/// (space-separated `Name=Value`, like `sam local --parameter-overrides`).
pub const PARAMETER_OVERRIDES_VAR: &str = "LOCAL_PARAMETER_OVERRIDES";

/// Function environment variables the local stack points at the servers it starts.
const STARTED_LOCALLY: &[&str] = &["REDIS_URL", "REDIS_AUTH_TOKEN", "KAFKA_BROKERS"];

impl Template {
    /// The function's timeout: its template `Timeout`, else Lambda's default.
    pub fn timeout(&self, function: &str) -> Duration {
        self.timeouts.get(function).copied().unwrap_or(DEFAULT_FUNCTION_TIMEOUT)
    }

    /// Loads and parses a template file, opting out of the gaps named in
    /// `LOCAL_GATEWAY_IGNORE` (see [`crate::gaps`]), with the parameter values in
    /// [`PARAMETER_OVERRIDES_VAR`] in place of their Defaults.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let overrides = std::env::var(PARAMETER_OVERRIDES_VAR).unwrap_or_default();
        Self::parse_with(&text, &crate::gaps::ignored_from_env(), &overrides)
            .with_context(|| format!("{} is not fully emulated locally", path.display()))
    }

    /// Parses template YAML; any part the gateway does not emulate is an error
    /// (see [`crate::gaps`]).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Self::parse_ignoring(text, &BTreeSet::new())
    }

    /// [`Template::parse`], leaving out the gaps named in `ignored` (each must be a gap).
    pub fn parse_ignoring(text: &str, ignored: &BTreeSet<String>) -> anyhow::Result<Self> {
        Self::parse_with(text, ignored, "")
    }

    /// [`Template::parse_ignoring`] with `overrides` (`Name=Value Name=Value`, as
    /// `sam local --parameter-overrides` takes them) replacing those parameters' Defaults.
    /// A name the template does not declare is an error, and so is a parameter that only
    /// sets functions' environment variables: the local stack takes its functions'
    /// environment from its own, not from the template, so the override would do nothing.
    pub fn parse_with(text: &str, ignored: &BTreeSet<String>, overrides: &str) -> anyhow::Result<Self> {
        let mut doc: Value = serde_yaml::from_str(text).context("template.yaml is not YAML")?;
        for pair in overrides.split_whitespace() {
            let (name, value) = pair
                .split_once('=')
                .with_context(|| format!("{PARAMETER_OVERRIDES_VAR}: {pair:?} is not Name=Value"))?;
            let uses = ParameterUses::of(&doc, name);
            if uses.elsewhere == 0 && !uses.environment.is_empty() {
                let vars: Vec<&str> = uses.environment.iter().map(String::as_str).collect();
                let instead = if vars.iter().all(|v| STARTED_LOCALLY.contains(v)) {
                    "the local stack connects its functions to the servers it starts".to_string()
                } else {
                    let set: Vec<String> = vars.iter().map(|var| format!("{var}={value}")).collect();
                    format!("set {} in the environment of ./infra/local/run instead", set.join(" "))
                };
                bail!(
                    "{PARAMETER_OVERRIDES_VAR}: {name} only sets functions' environment ({}), which the local \
                     stack does not take from the template: {instead}",
                    vars.join(", ")
                );
            }
            let parameter = doc
                .get_mut("Parameters")
                .and_then(|p| p.get_mut(name))
                .and_then(Value::as_mapping_mut)
                .with_context(|| format!("{PARAMETER_OVERRIDES_VAR}: the template has no parameter {name}"))?;
            parameter.insert("Default".into(), Value::String(value.to_string()));
        }
        crate::gaps::check(&crate::gaps::Gaps::of(&doc), ignored)?;
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .context("template has no Resources")?;
        let mut template = Self {
            route_responses: RouteResponses::from_resources(resources)?,
            ignored: ignored.clone(),
            ..Self::default()
        };
        let resolver = Resolver { doc: &doc };
        let global_timeout = doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Timeout"));
        for (id, resource) in resources {
            let id = id.as_str().unwrap_or_default();
            let props = resource.get("Properties");
            match resource.get("Type").and_then(Value::as_str) {
                Some("AWS::Serverless::Function") => {
                    if let Some(t) = props.and_then(|p| p.get("Timeout")).or(global_timeout) {
                        let secs = resolver
                            .number(t)
                            .with_context(|| format!("{id}.Timeout must be a number of seconds"))?;
                        template.timeouts.insert(id.to_string(), Duration::from_secs_f64(secs));
                    }
                }
                Some("AWS::Serverless::HttpApi") => {
                    template.http_throttle = resolver.throttle(props.and_then(|p| p.get("DefaultRouteSettings")));
                    if let Some(cors) = props.and_then(|p| p.get("CorsConfiguration")) {
                        template.cors = Some(resolver.cors(cors));
                    }
                }
                Some("AWS::ApiGatewayV2::Stage") => {
                    template.websocket_throttle = resolver.throttle(props.and_then(|p| p.get("DefaultRouteSettings")));
                }
                _ => {}
            }
        }
        for (id, resource) in resources {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let function = id.as_str().context("resource id is not a string")?.to_string();
            let Some(events) = resource
                .get("Properties")
                .and_then(|p| p.get("Events"))
                .and_then(Value::as_mapping)
            else {
                continue;
            };
            for (event_name, event) in events {
                let props = event.get("Properties");
                let field = |name: &str| {
                    props
                        .and_then(|p| p.get(name))
                        .and_then(Value::as_str)
                        .map(String::from)
                };
                match event.get("Type").and_then(Value::as_str) {
                    Some("HttpApi") => template.routes.push(HttpRoute {
                        function: function.clone(),
                        method: field("Method").context("HttpApi event without Method")?.to_uppercase(),
                        path: field("Path").context("HttpApi event without Path")?,
                    }),
                    Some("Schedule") => {
                        let event_name = event_name.as_str().unwrap_or_default();
                        if ignored.contains(&format!("{function}.Events.{event_name}.Schedule"))
                            || event
                                .get("Properties")
                                .and_then(|p| p.get("Enabled"))
                                .and_then(Value::as_bool)
                                == Some(false)
                        {
                            continue;
                        }
                        let schedule = field("Schedule").context("Schedule event without Schedule")?;
                        template.schedules.push(ScheduledFunction {
                            function: function.clone(),
                            every: parse_rate(&schedule)?,
                        });
                    }
                    Some("MSK") => {
                        let event_name = event_name.as_str().context("event name is not a string")?;
                        let mut props = props.and_then(Value::as_mapping).cloned().unwrap_or_default();
                        props.retain(|k, _| {
                            !ignored.contains(&format!("{function}.Events.{event_name}.{}", k.as_str().unwrap_or("")))
                        });
                        let context = MskContext {
                            function: &function,
                            event: event_name,
                            parameters: doc.get("Parameters"),
                            prefix: String::new(),
                        };
                        template.msk_sources.extend(parse_msk(&context, &props)?);
                    }
                    _ => {}
                }
            }
        }
        Ok(template)
    }
}

/// Where a template uses one parameter (`!Ref Name` or `${Name}` in a `!Sub`).
#[derive(Debug, Default)]
struct ParameterUses {
    /// The function environment variables it sets (`...Environment.Variables.VAR`).
    environment: BTreeSet<String>,
    /// How many uses are anywhere else (conditions, resource properties, outputs).
    elsewhere: usize,
}

impl ParameterUses {
    fn of(doc: &Value, name: &str) -> Self {
        let mut uses = Self::default();
        if let Value::Mapping(sections) = doc {
            for (section, value) in sections {
                if section.as_str() != Some("Parameters") {
                    uses.walk(value, name, &mut Vec::new());
                }
            }
        }
        uses
    }

    fn walk<'a>(&mut self, value: &'a Value, name: &str, path: &mut Vec<&'a str>) {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                let uses = match tag.trim_start_matches('!') {
                    "Ref" => tagged.value.as_str() == Some(name),
                    "Sub" => {
                        let text = tagged.value.as_str().or_else(|| tagged.value.get(0)?.as_str());
                        text.is_some_and(|t| t.contains(&format!("${{{name}}}")))
                    }
                    _ => false,
                };
                if uses {
                    match path.iter().position(|p| *p == "Environment") {
                        Some(i) if path.get(i + 1) == Some(&"Variables") && path.len() > i + 2 => {
                            self.environment.insert(path[i + 2].to_string());
                        }
                        _ => self.elsewhere += 1,
                    }
                }
                self.walk(&tagged.value, name, path);
            }
            Value::Mapping(map) => {
                for (key, child) in map {
                    path.push(key.as_str().unwrap_or_default());
                    self.walk(child, name, path);
                    path.pop();
                }
            }
            Value::Sequence(items) => {
                for item in items {
                    self.walk(item, name, path);
                }
            }
            _ => {}
        }
    }
}

/// Resolves `!Ref` (a parameter's Default), `!If`, `!Equals`, `!Not` and `!Join` the way
/// a deploy without parameter overrides would.
struct Resolver<'a> {
    doc: &'a Value,
}

impl Resolver<'_> {
    fn value(&self, value: &Value) -> Option<Value> {
        let Value::Tagged(tagged) = value else {
            return Some(value.clone());
        };
        let args = tagged.value.as_sequence();
        match tagged.tag.to_string().trim_start_matches('!') {
            "Ref" => self
                .doc
                .get("Parameters")
                .and_then(|p| p.get(tagged.value.as_str()?))
                .and_then(|p| p.get("Default"))
                .cloned(),
            "If" => {
                let args = args?;
                let condition = self.condition(args.first()?.as_str()?)?;
                self.value(args.get(if condition { 1 } else { 2 })?)
            }
            "Join" => {
                let args = args?;
                let separator = args.first()?.as_str()?;
                let parts = match self.value(args.get(1)?)? {
                    Value::Sequence(items) => items.iter().map(|i| self.string(i)).collect::<Option<Vec<_>>>()?,
                    // A CommaDelimitedList parameter's Default is the joined string already.
                    Value::String(s) => s.split(',').map(String::from).collect(),
                    _ => return None,
                };
                Some(Value::String(parts.join(separator)))
            }
            _ => None,
        }
    }

    fn condition(&self, name: &str) -> Option<bool> {
        self.truth(self.doc.get("Conditions")?.get(name)?)
    }

    fn truth(&self, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            Value::Tagged(t) => {
                let args = t.value.as_sequence();
                match t.tag.to_string().trim_start_matches('!') {
                    "Equals" => {
                        let args = args?;
                        Some(self.string(args.first()?)? == self.string(args.get(1)?)?)
                    }
                    "Not" => Some(!self.truth(args?.first()?)?),
                    "Condition" => self.condition(t.value.as_str()?),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn string(&self, value: &Value) -> Option<String> {
        match self.value(value)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn number(&self, value: &Value) -> Option<f64> {
        match self.value(value)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn list(&self, value: Option<&Value>) -> Vec<String> {
        match value.and_then(|v| self.value(v)) {
            Some(Value::Sequence(items)) => items.iter().filter_map(|i| self.string(i)).collect(),
            Some(Value::String(s)) => s.split(',').map(|s| s.trim().to_string()).collect(),
            _ => Vec::new(),
        }
    }

    fn throttle(&self, settings: Option<&Value>) -> Option<Throttle> {
        let settings = settings?;
        let rate = self.number(settings.get("ThrottlingRateLimit")?)?;
        let burst = settings
            .get("ThrottlingBurstLimit")
            .and_then(|b| self.number(b))
            .unwrap_or(rate);
        Some(Throttle { rate, burst })
    }

    fn cors(&self, cors: &Value) -> Cors {
        Cors {
            allow_origins: self.list(cors.get("AllowOrigins")),
            allow_methods: self.list(cors.get("AllowMethods")),
            allow_headers: self
                .list(cors.get("AllowHeaders"))
                .into_iter()
                .map(|h| h.to_lowercase())
                .collect(),
            expose_headers: self.list(cors.get("ExposeHeaders")),
            allow_credentials: cors
                .get("AllowCredentials")
                .and_then(|c| self.value(c))
                .is_some_and(|c| c.as_bool() == Some(true) || c.as_str() == Some("true")),
            max_age: cors.get("MaxAge").and_then(|m| self.number(m)).map(|m| m as i64),
        }
    }
}

/// MSK event properties the emulator implements. `Stream` names the cluster (there is
/// one local broker); `ProvisionedPollerConfig` only sizes throughput (how many pollers
/// Lambda runs), not what is delivered, so it is accepted and has no local effect.
/// Anything else (FilterCriteria, SchemaRegistryConfig,
/// KmsKeyArn, StartingPositionTimestamp, SourceAccessConfigurations, LoggingConfig,
/// MetricsConfig, ...) would make the local stack deliver differently from AWS without
/// saying so, so the template is refused instead.
pub const EMULATED_MSK_PROPERTIES: &[&str] = &[
    "Stream",
    "Topics",
    "StartingPosition",
    "ConsumerGroupId",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "Enabled",
    "FunctionResponseTypes",
    "MaximumRetryAttempts",
    "BisectBatchOnFunctionError",
    "MaximumRecordAgeInSeconds",
    "DestinationConfig",
    "ProvisionedPollerConfig",
];

/// Where an MSK event is in the template, for error messages and `!Ref` resolution.
struct MskContext<'a> {
    function: &'a str,
    event: &'a str,
    parameters: Option<&'a Value>,
    /// Path of the mapping being read, e.g. `DestinationConfig.OnFailure.`.
    prefix: String,
}

impl MskContext<'_> {
    /// The same event, reading the nested mapping `path`.
    fn within(&self, path: &str) -> Self {
        Self {
            prefix: format!("{}{path}.", self.prefix),
            ..*self
        }
    }

    /// An error naming the function, the event and the property.
    fn error(&self, property: &str, why: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "template.yaml: {} event {} (MSK): property {}{property} {why}",
            self.function,
            self.event,
            self.prefix
        )
    }

    /// A property's value with `!Ref <Parameter>` replaced by that parameter's Default
    /// (the value a deploy without overrides gets).
    fn resolve(&self, property: &str, value: &Value) -> anyhow::Result<Value> {
        let Value::Tagged(tagged) = value else {
            return Ok(value.clone());
        };
        let name = match (&tagged.tag, &tagged.value) {
            (tag, Value::String(name)) if *tag == "Ref" => name,
            (tag, _) => return Err(self.error(property, format!("uses {tag}, which the emulator cannot resolve"))),
        };
        self.parameters
            .and_then(|p| p.get(name.as_str()))
            .and_then(|p| p.get("Default"))
            .cloned()
            .ok_or_else(|| self.error(property, format!("refers to parameter {name}, which has no Default")))
    }

    /// A whole-number property (numbers written as strings count, as CloudFormation
    /// passes Number parameters as strings), checked against `range`.
    fn int(
        &self,
        props: &serde_yaml::Mapping,
        property: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> anyhow::Result<Option<i64>> {
        let Some(raw) = props.get(property) else {
            return Ok(None);
        };
        let value = self.resolve(property, raw)?;
        let n = match &value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| self.error(property, format!("must be a whole number, not {value:?}")))?;
        if !range.contains(&n) {
            return Err(self.error(property, format!("is {n}, outside {}..={}", range.start(), range.end())));
        }
        Ok(Some(n))
    }

    /// A boolean property.
    fn bool(&self, props: &serde_yaml::Mapping, property: &str) -> anyhow::Result<Option<bool>> {
        let Some(raw) = props.get(property) else {
            return Ok(None);
        };
        match self.resolve(property, raw)? {
            Value::Bool(b) => Ok(Some(b)),
            Value::String(s) if s == "true" || s == "false" => Ok(Some(s == "true")),
            other => Err(self.error(property, format!("must be true or false, not {other:?}"))),
        }
    }

    /// A string property.
    fn string(&self, props: &serde_yaml::Mapping, property: &str) -> anyhow::Result<Option<String>> {
        let Some(raw) = props.get(property) else {
            return Ok(None);
        };
        match self.resolve(property, raw)? {
            Value::String(s) => Ok(Some(s)),
            other => Err(self.error(property, format!("must be a string, not {other:?}"))),
        }
    }
}

/// One MSK event's event sources (one per topic), or an error for any property the
/// emulator does not implement; `Enabled: false` yields none.
fn parse_msk(cx: &MskContext, props: &serde_yaml::Mapping) -> anyhow::Result<Vec<MskSource>> {
    for key in props.keys() {
        let name = key.as_str().unwrap_or("<not a string>");
        if !EMULATED_MSK_PROPERTIES.contains(&name) {
            return Err(cx.error(
                name,
                "is not emulated by the local gateway (remove it, or implement it in infra/local/gateway)",
            ));
        }
    }
    if let Some(pollers) = props.get("ProvisionedPollerConfig") {
        check_pollers(cx, pollers)?;
    }
    if cx.bool(props, "Enabled")? == Some(false) {
        return Ok(Vec::new());
    }
    let topics: Vec<String> = props
        .get("Topics")
        .and_then(Value::as_sequence)
        .ok_or_else(|| cx.error("Topics", "is missing or not a list"))?
        .iter()
        .map(|t| {
            cx.resolve("Topics", t)?
                .as_str()
                .map(String::from)
                .ok_or_else(|| cx.error("Topics", "must list topic names"))
        })
        .collect::<anyhow::Result<_>>()?;
    let starting_position = cx.string(props, "StartingPosition")?.unwrap_or_else(|| "LATEST".into());
    if !matches!(starting_position.as_str(), "LATEST" | "TRIM_HORIZON") {
        return Err(cx.error(
            "StartingPosition",
            format!("{starting_position} is not emulated (LATEST or TRIM_HORIZON)"),
        ));
    }
    let retries = cx.int(props, "MaximumRetryAttempts", -1..=10_000)?;
    let age = cx.int(props, "MaximumRecordAgeInSeconds", -1..=604_800)?;
    if matches!(age, Some(0..=59)) {
        return Err(cx.error("MaximumRecordAgeInSeconds", "must be -1 or 60..=604800"));
    }
    let template = MskSource {
        function: cx.function.to_string(),
        topic: String::new(),
        group: cx
            .string(props, "ConsumerGroupId")?
            .unwrap_or_else(|| cx.function.to_string()),
        batch_size: cx.int(props, "BatchSize", 1..=10_000)?.map_or(100, |n| n as usize),
        batching_window: cx
            .int(props, "MaximumBatchingWindowInSeconds", 0..=300)?
            .map_or(DEFAULT_KAFKA_BATCHING_WINDOW, |n| Duration::from_secs(n as u64)),
        starting_position,
        report_batch_item_failures: response_types(cx, props)?,
        maximum_retry_attempts: retries.and_then(|n| u32::try_from(n).ok()),
        bisect_batch_on_function_error: cx.bool(props, "BisectBatchOnFunctionError")?.unwrap_or(false),
        maximum_record_age: age.and_then(|n| u64::try_from(n).ok()).map(Duration::from_secs),
        on_failure_topic: on_failure_topic(cx, props)?,
    };
    Ok(topics
        .into_iter()
        .map(|topic| MskSource {
            topic,
            ..template.clone()
        })
        .collect())
}

/// `FunctionResponseTypes`: only `ReportBatchItemFailures` exists for Kafka and is emulated.
fn response_types(cx: &MskContext, props: &serde_yaml::Mapping) -> anyhow::Result<bool> {
    let Some(raw) = props.get("FunctionResponseTypes") else {
        return Ok(false);
    };
    let list = raw
        .as_sequence()
        .ok_or_else(|| cx.error("FunctionResponseTypes", "must be a list"))?;
    for item in list {
        match cx.resolve("FunctionResponseTypes", item)?.as_str() {
            Some("ReportBatchItemFailures") => {}
            other => {
                return Err(cx.error(
                    "FunctionResponseTypes",
                    format!("value {other:?} is not emulated (only ReportBatchItemFailures)"),
                ))
            }
        }
    }
    Ok(!list.is_empty())
}

/// `DestinationConfig: {OnFailure: {Type: Kafka, Destination: kafka://<topic>}}`: the
/// only destination the local broker can hold.
fn on_failure_topic(cx: &MskContext, props: &serde_yaml::Mapping) -> anyhow::Result<Option<String>> {
    let Some(config) = props.get("DestinationConfig") else {
        return Ok(None);
    };
    let config = config
        .as_mapping()
        .ok_or_else(|| cx.error("DestinationConfig", "must be a mapping"))?;
    if let Some(other) = config.keys().find(|k| k.as_str() != Some("OnFailure")) {
        return Err(cx.error(
            "DestinationConfig",
            format!("key {other:?} is not emulated (only OnFailure)"),
        ));
    }
    let Some(on_failure) = config.get("OnFailure") else {
        return Ok(None);
    };
    let on_failure = on_failure
        .as_mapping()
        .ok_or_else(|| cx.error("DestinationConfig.OnFailure", "must be a mapping"))?;
    if let Some(other) = on_failure
        .keys()
        .find(|k| !matches!(k.as_str(), Some("Type" | "Destination")))
    {
        return Err(cx.error("DestinationConfig.OnFailure", format!("key {other:?} is not emulated")));
    }
    let inner = cx.within("DestinationConfig.OnFailure");
    if let Some(kind) = inner.string(on_failure, "Type")? {
        if kind != "Kafka" {
            return Err(inner.error("Type", format!("{kind} is not emulated (only Kafka)")));
        }
    }
    let destination = inner
        .string(on_failure, "Destination")?
        .ok_or_else(|| inner.error("Destination", "is missing"))?;
    match destination.strip_prefix("kafka://") {
        Some(topic) if !topic.is_empty() && !topic.contains('/') => Ok(Some(topic.to_string())),
        _ => Err(inner.error(
            "Destination",
            format!("{destination} is not emulated (only kafka://<topic> on the same cluster)"),
        )),
    }
}

/// `ProvisionedPollerConfig`: checked for well-formedness (Lambda's ranges), otherwise
/// without local effect (one poller per event source is enough for a laptop).
fn check_pollers(cx: &MskContext, pollers: &Value) -> anyhow::Result<()> {
    let pollers = pollers
        .as_mapping()
        .ok_or_else(|| cx.error("ProvisionedPollerConfig", "must be a mapping"))?;
    if let Some(other) = pollers
        .keys()
        .find(|k| !matches!(k.as_str(), Some("MinimumPollers" | "MaximumPollers")))
    {
        return Err(cx.error("ProvisionedPollerConfig", format!("key {other:?} is not known")));
    }
    let inner = cx.within("ProvisionedPollerConfig");
    let min = inner.int(pollers, "MinimumPollers", 1..=200)?;
    let max = inner.int(pollers, "MaximumPollers", 1..=2000)?;
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            return Err(cx.error(
                "ProvisionedPollerConfig",
                format!("MinimumPollers {min} exceeds MaximumPollers {max}"),
            ));
        }
    }
    Ok(())
}

/// Parses `rate(5 minutes)`; cron expressions are not emulated.
fn parse_rate(expr: &str) -> anyhow::Result<Duration> {
    let inner = expr
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'))
        .context("only rate(...) is emulated")?;
    let (n, unit) = inner.trim().split_once(' ').context("rate needs a value and a unit")?;
    let n: u64 = n.parse().context("rate value is not a number")?;
    let secs = match unit.trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        other => bail!("unknown rate unit {other}"),
    };
    Ok(Duration::from_secs(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
Resources:
  Api: { Type: AWS::Serverless::HttpApi }
  UserFn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Get:
          Type: HttpApi
          Properties: { ApiId: !Ref Api, Method: get, Path: "/users/{userId}" }
        Tick:
          Type: Schedule
          Properties: { Schedule: rate(2 minutes) }
        Stream:
          Type: MSK
          Properties: { Stream: !Ref Cluster, Topics: [user-events], StartingPosition: TRIM_HORIZON, ConsumerGroupId: g1, BatchSize: 7 }
"#;

    #[test]
    fn http_api_events_become_routes_and_cloudformation_tags_are_tolerated() {
        let t = Template::parse(SAMPLE).unwrap();
        assert_eq!(
            t.routes,
            vec![HttpRoute {
                function: "UserFn".into(),
                method: "GET".into(),
                path: "/users/{userId}".into()
            }]
        );
        assert_eq!(t.schedules[0].every, Duration::from_secs(120));
    }

    #[test]
    fn msk_events_become_event_sources() {
        let t = Template::parse(SAMPLE).unwrap();
        assert_eq!(
            t.msk_sources,
            vec![MskSource {
                function: "UserFn".into(),
                topic: "user-events".into(),
                group: "g1".into(),
                batch_size: 7,
                batching_window: DEFAULT_KAFKA_BATCHING_WINDOW,
                starting_position: "TRIM_HORIZON".into(),
                report_batch_item_failures: false,
                maximum_retry_attempts: None,
                bisect_batch_on_function_error: false,
                maximum_record_age: None,
                on_failure_topic: None,
            }]
        );
        assert_eq!(
            t.msk_sources[0].retry_limit(),
            None,
            "-1 without a destination retries forever"
        );
    }

    /// A template with one MSK event carrying `extra` properties (YAML flow mapping items).
    fn msk_template(extra: &str) -> String {
        format!(
            r#"
Parameters:
  Retries: {{ Type: Number, Default: 5 }}
  Age: {{ Type: Number, Default: "21600" }}
  MinPollers: {{ Type: Number, Default: 1 }}
  NoDefault: {{ Type: Number }}
Resources:
  ConsumerFn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        UserEvents:
          Type: MSK
          Properties: {{ Stream: !Ref Cluster, Topics: [user-events], StartingPosition: TRIM_HORIZON, ConsumerGroupId: g1, BatchSize: 50{extra} }}
"#
        )
    }

    const CONTAINMENT: &str =
        ", FunctionResponseTypes: [ReportBatchItemFailures], MaximumRetryAttempts: !Ref Retries, \
        BisectBatchOnFunctionError: true, MaximumRecordAgeInSeconds: !Ref Age, \
        DestinationConfig: { OnFailure: { Type: Kafka, Destination: kafka://dead-letter-events } }, \
        ProvisionedPollerConfig: { MinimumPollers: !Ref MinPollers, MaximumPollers: 4 }";

    #[test]
    fn containment_properties_are_parsed_and_refs_resolve_to_parameter_defaults() {
        let t = Template::parse(&msk_template(CONTAINMENT)).unwrap();
        let s = &t.msk_sources[0];
        assert!(s.report_batch_item_failures);
        assert_eq!(s.maximum_retry_attempts, Some(5));
        assert!(s.bisect_batch_on_function_error);
        assert_eq!(s.maximum_record_age, Some(Duration::from_secs(21_600)));
        assert_eq!(s.on_failure_topic.as_deref(), Some("dead-letter-events"));
        assert_eq!(s.retry_limit(), Some(5));
    }

    #[test]
    fn infinite_retries_with_a_destination_are_capped_at_ten() {
        let t = Template::parse(&msk_template(
            ", MaximumRetryAttempts: -1, DestinationConfig: { OnFailure: { Destination: kafka://dlq } }",
        ))
        .unwrap();
        assert_eq!(t.msk_sources[0].maximum_retry_attempts, None);
        assert_eq!(t.msk_sources[0].retry_limit(), Some(INFINITE_RETRIES_WITH_DESTINATION));
    }

    #[test]
    fn the_batching_window_is_read_in_seconds_and_bounded_like_lambdas() {
        let t = Template::parse(&msk_template(", MaximumBatchingWindowInSeconds: 2")).unwrap();
        assert_eq!(t.msk_sources[0].batching_window, Duration::from_secs(2));
        let zero = Template::parse(&msk_template(", MaximumBatchingWindowInSeconds: 0")).unwrap();
        assert_eq!(zero.msk_sources[0].batching_window, Duration::ZERO);
        assert!(Template::parse(&msk_template(", MaximumBatchingWindowInSeconds: 301")).is_err());
    }

    #[test]
    fn a_disabled_msk_event_has_no_poller() {
        let t = Template::parse(&msk_template(", Enabled: false")).unwrap();
        assert!(t.msk_sources.is_empty());
    }

    /// The parse error for `extra`, which must name the function, the event and `property`.
    fn rejection(extra: &str, property: &str) -> String {
        let error = Template::parse(&msk_template(extra))
            .expect_err(&format!("{extra} must be refused"))
            .to_string();
        for part in ["ConsumerFn", "UserEvents", property] {
            assert!(error.contains(part), "{error:?} does not name {part}");
        }
        error
    }

    #[test]
    fn properties_the_emulator_does_not_implement_are_refused() {
        for (extra, property) in [
            (", FilterCriteria: { Filters: [{ Pattern: '{}' }] }", "FilterCriteria"),
            (
                ", SchemaRegistryConfig: { SchemaRegistryURI: x }",
                "SchemaRegistryConfig",
            ),
            (", KmsKeyArn: arn:aws:kms:x", "KmsKeyArn"),
            (", StartingPositionTimestamp: 1700000000", "StartingPositionTimestamp"),
            (
                ", SourceAccessConfigurations: [{ Type: SASL_SCRAM_512_AUTH, URI: x }]",
                "SourceAccessConfigurations",
            ),
            (", MetricsConfig: { Metrics: [EventCount] }", "MetricsConfig"),
        ] {
            let error = rejection(extra, property);
            assert!(error.contains("not emulated"), "{error}");
        }
    }

    #[test]
    fn unsupported_values_of_emulated_properties_are_refused() {
        for (extra, property) in [
            (", FunctionResponseTypes: [Other]", "FunctionResponseTypes"),
            (
                ", DestinationConfig: { OnFailure: { Type: SQS, Destination: arn:aws:sqs:x } }",
                "DestinationConfig.OnFailure.Type",
            ),
            (
                ", DestinationConfig: { OnFailure: { Destination: arn:aws:sqs:x } }",
                "DestinationConfig.OnFailure.Destination",
            ),
            (
                ", DestinationConfig: { OnFailure: { Destination: !Sub 'kafka://x' } }",
                "DestinationConfig.OnFailure.Destination",
            ),
            (", MaximumRetryAttempts: 10001", "MaximumRetryAttempts"),
            (", MaximumRecordAgeInSeconds: 30", "MaximumRecordAgeInSeconds"),
            (", MaximumRetryAttempts: !Ref NoDefault", "MaximumRetryAttempts"),
            (", BisectBatchOnFunctionError: maybe", "BisectBatchOnFunctionError"),
            (
                ", ProvisionedPollerConfig: { MinimumPollers: 5, MaximumPollers: 2 }",
                "ProvisionedPollerConfig",
            ),
        ] {
            rejection(extra, property);
        }
        let at_timestamp = msk_template("").replace("TRIM_HORIZON", "AT_TIMESTAMP");
        let error = Template::parse(&at_timestamp).unwrap_err().to_string();
        assert!(
            error.contains("UserEvents") && error.contains("StartingPosition"),
            "{error}"
        );
    }

    #[test]
    fn the_repository_template_is_accepted_with_containment_on_every_msk_event() {
        let t = Template::load(&crate::default_template_path()).unwrap();
        assert!(!t.msk_sources.is_empty());
        for s in &t.msk_sources {
            assert!(s.report_batch_item_failures, "{s:?}");
            assert!(s.bisect_batch_on_function_error, "{s:?}");
            assert!(s.retry_limit().is_some(), "{s:?}");
            assert!(s.maximum_record_age.is_some(), "{s:?}");
            assert_eq!(s.on_failure_topic.as_deref(), Some("dead-letter-events"), "{s:?}");
        }
    }

    #[test]
    fn path_templates_extract_parameters() {
        let t = Template::parse(SAMPLE).unwrap();
        let pattern = crate::routes::PathPattern::new(&t.routes[0].path);
        assert_eq!(
            pattern.params("/users/abc"),
            Some(vec![("userId".into(), "abc".into())])
        );
        assert_eq!(pattern.params("/users/"), None);
        assert_eq!(pattern.params("/users/a/b"), None);
    }

    const TWO_WAY: &str = r#"
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {ProtocolType: WEBSOCKET}
  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: $connect}
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: $default, RouteResponseSelectionExpression: $default}
  DefaultRouteResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties: {ApiId: !Ref Api, RouteId: !Ref DefaultRoute, RouteResponseKey: $default}
"#;

    #[test]
    fn a_route_with_a_default_route_response_is_two_way_and_the_others_are_not() {
        let r = Template::parse(TWO_WAY).unwrap().route_responses;
        assert!(r.two_way("$default"));
        assert!(!r.two_way("$connect"));
        assert_eq!(r, RouteResponses::with_keys(["$default"]));
    }

    #[test]
    fn without_a_route_response_no_route_answers() {
        let one_way = TWO_WAY.split("  DefaultRouteResponse:").next().unwrap();
        assert!(!Template::parse(one_way).unwrap().route_responses.two_way("$default"));
    }

    #[test]
    fn a_route_response_that_names_no_route_is_refused() {
        let broken = TWO_WAY.replace("RouteId: !Ref DefaultRoute", "RouteId: !Ref Api");
        let error = Template::parse(&broken).unwrap_err().to_string();
        assert!(error.contains("not a Route"), "{error}");
    }

    #[test]
    fn the_project_template_makes_default_two_way() {
        let r = Template::load(&crate::default_template_path()).unwrap().route_responses;
        assert!(
            r.two_way("$default"),
            "template.yaml must declare the $default route response"
        );
        assert!(!r.two_way("$connect") && !r.two_way("$disconnect"));
    }

    #[test]
    fn parameter_overrides_replace_defaults_and_unknown_names_are_refused() {
        let text = std::fs::read_to_string(crate::default_template_path()).unwrap();
        let none = BTreeSet::new();
        let default = Template::parse_with(&text, &none, "").unwrap().http_throttle.unwrap();
        let overrides = "HttpApiThrottlingRateLimit=100000 HttpApiThrottlingBurstLimit=200000";
        let t = Template::parse_with(&text, &none, overrides)
            .unwrap()
            .http_throttle
            .unwrap();
        assert_eq!((t.rate, t.burst), (100000.0, 200000.0), "default was {default:?}");
        let error = Template::parse_with(&text, &none, "NoSuchParameter=1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("NoSuchParameter"), "{error}");
        assert!(Template::parse_with(&text, &none, "HttpApiThrottlingRateLimit").is_err());
    }

    #[test]
    fn overriding_a_parameter_that_only_sets_function_environment_names_the_variable_to_set_instead() {
        let text = std::fs::read_to_string(crate::default_template_path()).unwrap();
        let error = Template::parse_with(&text, &BTreeSet::new(), "MessageAlertCooldownSeconds=0")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("MessageAlertCooldownSeconds") && error.contains("MESSAGE_ALERT_COOLDOWN_SECONDS=0"),
            "{error}"
        );
        let error = Template::parse_with(&text, &BTreeSet::new(), "RedisUrl=redis://elsewhere:6379")
            .unwrap_err()
            .to_string();
        assert!(error.contains("servers it starts"), "{error}");
    }
}
