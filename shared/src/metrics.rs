//! Metric names, in one place: the code that records them, the CloudWatch alarms and
//! dashboard in template.yaml, and the local `/_local/metrics` endpoint all use these.
//!
//! Every metric is in the [`NAMESPACE`] namespace with the dimension [`FUNCTION`] (the
//! function's binary name, as in template.yaml's `BuildProperties: Binary`); request
//! metrics add [`ROUTE`] and [`STATUS_CLASS`]. Few dimensions on purpose: each
//! combination is a separate CloudWatch metric, billed and alarmed on separately.
//!
//! Below the names: [`Metrics`], the handle every function records through (it lives in
//! [`crate::AppState`] and the [`crate::publisher::Publisher`]); [`Emf`], the Lambda
//! side (one EMF flush per invocation); and the local gateway's in-memory recorder,
//! read by `GET /_local/metrics` through [`Metrics::snapshot`].

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use ::metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_cloudwatch_embedded::Collector;
use metrics_util::{
    registry::{Registry, Storage},
    storage::Summary,
};
use serde_json::{json, Value};

/// The CloudWatch namespace of every custom metric.
pub const NAMESPACE: &str = "DevConnect";

/// Dimension: the function's binary name (`auth`, `notifications-consumer`, ...).
pub const FUNCTION: &str = "Function";
/// Dimension: the API Gateway route key (`GET /profile`).
pub const ROUTE: &str = "Route";
/// Dimension: `2xx`, `4xx` or `5xx`.
pub const STATUS_CLASS: &str = "StatusClass";

/// Count: HTTP requests answered, by route and status class.
pub const REQUESTS: &str = "Requests";
/// Milliseconds: handler latency per HTTP request, by route.
pub const LATENCY: &str = "Latency";
/// Count: requests refused with 429.
pub const RATE_LIMITED: &str = "RateLimited";
/// Count: requests refused with 401 (missing, expired, revoked or forged credentials).
pub const AUTH_REFUSED: &str = "AuthRefused";

/// Count: events the broker took at once.
pub const EVENTS_PRODUCED: &str = "EventsProduced";
/// Count: events parked in the Redis outbox because the broker did not take them in time.
pub const EVENTS_PARKED: &str = "EventsParked";
/// Count: parked events the relay delivered.
pub const EVENTS_RELAYED: &str = "EventsRelayed";
/// Count: parked events moved to the quarantine list (can never be produced).
pub const EVENTS_QUARANTINED: &str = "EventsQuarantined";
/// Count: events neither produced nor parked (the broker and the Redis outbox both
/// failed) that no redelivery brings back: the NOTIFICATION_CREATED events of
/// notifications the consumer had already stored. Alarmed (`EventsLostAlarm`).
pub const EVENTS_LOST: &str = "EventsLost";
/// Count (gauge, sampled by the relay): events waiting in the outbox.
pub const OUTBOX_BACKLOG: &str = "OutboxBacklog";

/// Count: consumer records whose effect was applied.
pub const RECORDS_APPLIED: &str = "RecordsApplied";
/// Count: consumer records already applied by an earlier delivery.
pub const RECORDS_DUPLICATE: &str = "RecordsDuplicate";
/// Count: consumer records sent to dead-letter-events.
pub const RECORDS_DEAD_LETTERED: &str = "RecordsDeadLettered";
/// Count: consumer records handed back to the event source for a retry.
pub const RECORDS_RETRIED: &str = "RecordsRetried";
/// Milliseconds: time to process one consumer batch.
pub const BATCH_LATENCY: &str = "BatchLatency";
/// Count: attempts to close a day whose keys can never give a summary (wrong key types);
/// the day stays open and is tried again by later batches, so this keeps counting.
pub const SUMMARIES_FAILED: &str = "SummariesFailed";

/// Count: records a projection rebuild replayed into its new generation.
pub const REBUILD_RECORDS: &str = "RebuildRecords";
/// Count (gauge, sampled by a rebuild): records between the rebuild and the topics' ends.
pub const REBUILD_LAG: &str = "RebuildLag";
/// Count: rebuilds that switched readers to their new generation.
pub const REBUILD_SWITCHES: &str = "RebuildSwitches";
/// Count: keys of an old projection generation deleted after a switch.
pub const REBUILD_KEYS_DELETED: &str = "RebuildKeysDeleted";

/// Count: emails or SMS a provider accepted (SES, SNS).
pub const DELIVERIES_SENT: &str = "DeliveriesSent";
/// Count: provider answers that said "slow down" (each is retried with backoff).
pub const DELIVERIES_THROTTLED: &str = "DeliveriesThrottled";
/// Count: deliveries a provider refused for good (bad address, rejected); dead-lettered.
pub const DELIVERIES_REJECTED: &str = "DeliveriesRejected";
/// Milliseconds: one provider call (SES SendEmail, SNS Publish).
pub const PROVIDER_LATENCY: &str = "ProviderLatency";

/// Count: WebSocket frames a socket took.
pub const FRAMES_SENT: &str = "FramesSent";
/// Count: frames to a connection API Gateway says is gone (410).
pub const FRAMES_GONE: &str = "FramesGone";
/// Count: frames not delivered for another reason (after the SDK's retries).
pub const FRAMES_FAILED: &str = "FramesFailed";
/// Count: WebSocket connects refused (401, 429, 503).
pub const WEBSOCKET_CONNECTS_REFUSED: &str = "WebSocketConnectsRefused";
/// Count: messages that alerted in-app only because their conversation's email/SMS
/// alert cooldown was running (what the cooldown saved, to tune its length).
pub const MESSAGE_ALERTS_SILENCED: &str = "MessageAlertsSilenced";

/// Every custom metric name, for the template checks.
pub const ALL: &[&str] = &[
    REQUESTS,
    LATENCY,
    RATE_LIMITED,
    AUTH_REFUSED,
    EVENTS_PRODUCED,
    EVENTS_PARKED,
    EVENTS_RELAYED,
    EVENTS_QUARANTINED,
    EVENTS_LOST,
    OUTBOX_BACKLOG,
    RECORDS_APPLIED,
    RECORDS_DUPLICATE,
    RECORDS_DEAD_LETTERED,
    RECORDS_RETRIED,
    BATCH_LATENCY,
    SUMMARIES_FAILED,
    REBUILD_RECORDS,
    REBUILD_LAG,
    REBUILD_SWITCHES,
    REBUILD_KEYS_DELETED,
    DELIVERIES_SENT,
    DELIVERIES_THROTTLED,
    DELIVERIES_REJECTED,
    PROVIDER_LATENCY,
    FRAMES_SENT,
    FRAMES_GONE,
    FRAMES_FAILED,
    WEBSOCKET_CONNECTS_REFUSED,
    MESSAGE_ALERTS_SILENCED,
];

/// Unit of a metric: [`LATENCY`], [`BATCH_LATENCY`] and [`PROVIDER_LATENCY`] are
/// milliseconds, the rest counts.
pub fn unit(name: &str) -> Unit {
    match name {
        LATENCY | BATCH_LATENCY | PROVIDER_LATENCY => Unit::Milliseconds,
        _ => Unit::Count,
    }
}

/// The values of [`STATUS_CLASS`], indexed by [`class_index`].
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of an HTTP status's [`STATUS_CLASS`] value in [`STATUS_CLASSES`]: 1xx..4xx
/// by hundreds, anything else 5xx.
fn class_index(status: u16) -> usize {
    match status / 100 {
        hundreds @ 1..=4 => usize::from(hundreds) - 1,
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// No description, no source location: CloudWatch keeps neither.
static METADATA: Metadata<'static> = Metadata::new(module_path!(), ::metrics::Level::INFO, None);

/// Records this function's metrics: a recorder plus the [`FUNCTION`] dimension.
///
/// Cloning is shallow (one `Arc`). Code records through this handle, never through the
/// `metrics` macros and the process-global recorder, so that many local stacks in one test
/// process (and every function the local gateway hosts) each count into their own recorder.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<dyn Recorder + Send + Sync>,
    function: &'static str,
    local: Option<Arc<LocalRecorder>>,
    /// This function's request metric handles, by route (shared by clones).
    routes: Arc<RouteHandles>,
}

/// One route's request metrics, registered on its first request: building the key (labels
/// with the route as an owned string) and looking it up in the recorder costs more than
/// recording, so every later request only finds the route here and records.
#[derive(Clone)]
struct RouteMetrics {
    latency: Histogram,
    /// [`REQUESTS`] by status class (1xx..5xx), each registered on its first use: a
    /// registered counter is a metric (zero or not), so no class is made up in advance.
    requests: [Option<Counter>; STATUS_CLASSES.len()],
}

/// The request metric handles of one function, by route key.
#[derive(Default)]
struct RouteHandles(std::sync::RwLock<std::collections::HashMap<String, RouteMetrics>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("function", &self.function)
            .field("local", &self.local.is_some())
            .finish()
    }
}

impl Metrics {
    /// A fresh in-memory recorder (the local gateway, tests): read it with [`Metrics::snapshot`].
    pub fn local(function: &'static str) -> Self {
        let local = Arc::new(LocalRecorder::default());
        Self {
            recorder: local.clone(),
            function,
            local: Some(local),
            routes: Arc::default(),
        }
    }

    /// The same recorder, counting as another function (the gateway hosts them all in one process).
    pub fn for_function(&self, function: &'static str) -> Self {
        Self {
            function,
            routes: Arc::default(),
            ..self.clone()
        }
    }

    /// The [`FUNCTION`] dimension this handle records with.
    pub fn function(&self) -> &'static str {
        self.function
    }

    /// Adds `n` to the counter `name` (dimension: the function).
    pub fn count(&self, name: &'static str, n: u64) {
        if n > 0 {
            let key = Key::from_parts(name, vec![self.function_label()]);
            self.recorder.register_counter(&key, &METADATA).increment(n);
        }
    }

    /// Sets the gauge `name` (dimension: the function).
    pub fn gauge(&self, name: &'static str, value: f64) {
        let key = Key::from_parts(name, vec![self.function_label()]);
        self.recorder.register_gauge(&key, &METADATA).set(value);
    }

    /// Records a duration in milliseconds in the histogram `name` (dimension: the function).
    pub fn millis(&self, name: &'static str, elapsed: Duration) {
        let key = Key::from_parts(name, vec![self.function_label()]);
        self.recorder
            .register_histogram(&key, &METADATA)
            .record(elapsed.as_secs_f64() * 1000.0);
    }

    /// One answered HTTP request: [`REQUESTS`] by route and status class, [`LATENCY`] by
    /// route, and [`RATE_LIMITED`] (429) or [`AUTH_REFUSED`] (401).
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let class = class_index(status);
        let cached = self.routes.0.read().ok().and_then(|routes| {
            let r = routes.get(route)?;
            Some((r.latency.clone(), r.requests[class].clone()?))
        });
        let (latency, requests) = cached.unwrap_or_else(|| self.register_route(route, class));
        requests.increment(1);
        latency.record(elapsed.as_secs_f64() * 1000.0);
        match status {
            429 => self.count(RATE_LIMITED, 1),
            401 => self.count(AUTH_REFUSED, 1),
            _ => {}
        }
    }

    /// Registers `route`'s latency and its [`REQUESTS`] counter for the status class `class`, and
    /// keeps the handles for the route's next requests.
    fn register_route(&self, route: &str, class: usize) -> (Histogram, Counter) {
        let label = Label::new(ROUTE, route.to_string());
        let requests = Key::from_parts(
            REQUESTS,
            vec![
                self.function_label(),
                label.clone(),
                Label::new(STATUS_CLASS, STATUS_CLASSES[class]),
            ],
        );
        let requests = self.recorder.register_counter(&requests, &METADATA);
        let mut routes = self.routes.0.write().unwrap_or_else(|e| e.into_inner());
        let entry = routes.entry(route.to_string()).or_insert_with(|| RouteMetrics {
            latency: self
                .recorder
                .register_histogram(&Key::from_parts(LATENCY, vec![self.function_label(), label]), &METADATA),
            requests: Default::default(),
        });
        entry.requests[class] = Some(requests.clone());
        (entry.latency.clone(), requests)
    }

    /// What the in-memory recorder holds, as JSON; `None` for the EMF recorder (Lambda).
    pub fn snapshot(&self) -> Option<Value> {
        self.local.as_ref().map(|l| l.snapshot())
    }

    fn function_label(&self) -> Label {
        Label::new(FUNCTION, self.function)
    }
}

/// Histogram storage for the local recorder: a DDSketch summary (bounded memory however
/// long the gateway runs), behind a lock that only local runs pay for.
#[derive(Default)]
struct LocalSummary(Mutex<Option<Summary>>);

impl HistogramFn for LocalSummary {
    fn record(&self, value: f64) {
        if let Ok(mut summary) = self.0.lock() {
            summary.get_or_insert_with(Summary::with_defaults).add(value);
        }
    }
}

/// metrics-util's registry storage, with cumulative summaries instead of raw buckets.
#[derive(Default)]
struct LocalStorage;

impl Storage<Key> for LocalStorage {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<LocalSummary>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::default()
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::default()
    }

    fn histogram(&self, _: &Key) -> Self::Histogram {
        Arc::default()
    }
}

/// The local gateway's recorder: totals since start, never reset by reading them.
struct LocalRecorder {
    registry: Registry<Key, LocalStorage>,
}

impl Default for LocalRecorder {
    fn default() -> Self {
        Self {
            registry: Registry::new(LocalStorage),
        }
    }
}

impl Recorder for LocalRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

impl LocalRecorder {
    /// `{"namespace", "counters": [..], "gauges": [..], "histograms": [..]}`, each entry
    /// `{"name", "dimensions": {..}, "unit", ...}`, sorted by name then dimensions.
    fn snapshot(&self) -> Value {
        let entry = |key: &Key, fields: Value| {
            let dimensions: serde_json::Map<String, Value> = key
                .labels()
                .map(|l| (l.key().to_string(), Value::from(l.value())))
                .collect();
            let mut out = json!({
                "name": key.name(),
                "dimensions": dimensions,
                "unit": emf_unit(unit(key.name())),
            });
            if let (Some(out), Value::Object(fields)) = (out.as_object_mut(), fields) {
                out.extend(fields);
            }
            out
        };
        let (mut counters, mut gauges, mut histograms) = (Vec::new(), Vec::new(), Vec::new());
        self.registry.visit_counters(|key, c| {
            counters.push(entry(key, json!({"value": c.load(Ordering::Relaxed)})));
        });
        self.registry.visit_gauges(|key, g| {
            gauges.push(entry(key, json!({"value": f64::from_bits(g.load(Ordering::Relaxed))})));
        });
        self.registry.visit_histograms(|key, h| {
            let fields = match h.0.lock().ok().as_deref().and_then(Option::as_ref) {
                Some(s) => json!({
                    "count": s.count(),
                    "sum": s.sum(),
                    "min": s.min(),
                    "max": s.max(),
                    "p50": s.quantile(0.5),
                    "p99": s.quantile(0.99),
                }),
                None => json!({"count": 0}),
            };
            histograms.push(entry(key, fields));
        });
        let order = |a: &Value, b: &Value| {
            (a["name"].as_str(), a["dimensions"].to_string()).cmp(&(b["name"].as_str(), b["dimensions"].to_string()))
        };
        counters.sort_by(order);
        gauges.sort_by(order);
        histograms.sort_by(order);
        json!({"namespace": NAMESPACE, "counters": counters, "gauges": gauges, "histograms": histograms})
    }
}

/// CloudWatch's name of a unit (only the two this crate uses).
fn emf_unit(unit: Unit) -> &'static str {
    match unit {
        Unit::Milliseconds => "Milliseconds",
        _ => "Count",
    }
}

/// Forwards to the process-global recorder, which is where the EMF crate installs its own.
struct GlobalRecorder;

impl Recorder for GlobalRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        ::metrics::with_recorder(|r| r.describe_counter(key, unit, description));
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        ::metrics::with_recorder(|r| r.describe_gauge(key, unit, description));
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        ::metrics::with_recorder(|r| r.describe_histogram(key, unit, description));
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        ::metrics::with_recorder(|r| r.register_counter(key, metadata))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        ::metrics::with_recorder(|r| r.register_gauge(key, metadata))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        ::metrics::with_recorder(|r| r.register_histogram(key, metadata))
    }
}

/// Why the EMF recorder could not be installed (a second install in one process).
#[derive(Debug, thiserror::Error)]
#[error("installing the EMF metrics recorder")]
pub struct EmfError(#[source] crate::error::BoxError);

/// CloudWatch Embedded Metric Format for one Lambda function: built once in `main`,
/// flushed to stdout once per invocation (CloudWatch Logs turns those lines into metrics;
/// logs go to stderr, so the two never interleave within a line).
#[derive(Clone, Copy)]
pub struct Emf {
    collector: &'static Collector,
}

impl Emf {
    /// Installs the EMF recorder as the process's recorder (once per process) for the
    /// function whose template.yaml `BuildProperties: Binary` is `function`.
    pub fn install(function: &'static str) -> Result<(Self, Metrics), EmfError> {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .init()
            .map_err(EmfError)?;
        // Units are per metric name: describe every one before the first record.
        for name in ALL {
            let description = SharedString::const_str("");
            ::metrics::with_recorder(|r| {
                r.describe_counter(KeyName::from_const_str(name), Some(unit(name)), description)
            });
        }
        let metrics = Metrics {
            recorder: Arc::new(GlobalRecorder),
            function,
            local: None,
            routes: Arc::default(),
        };
        Ok((Self { collector }, metrics))
    }

    /// Writes what was recorded since the last flush: one EMF document (line) per
    /// dimension set; nothing if nothing was recorded.
    pub fn flush(&self, writer: impl std::io::Write) -> std::io::Result<()> {
        self.collector.flush(writer)
    }

    /// Runs one invocation, then flushes its metrics to stdout, once. A failed write is
    /// logged, never the invocation's failure: metrics are not worth a retried batch.
    pub async fn invocation<T>(&self, invocation: impl Future<Output = T>) -> T {
        let out = invocation.await;
        if let Err(e) = self.flush(std::io::stdout().lock()) {
            tracing::warn!(error = %e, "metrics not flushed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One Lambda invocation's worth of recording, flushed into a buffer, must be valid
    /// EMF: the `_aws` block, the namespace, one dimension set per document that names
    /// dimensions present as members, units, and the values. (The only test in this
    /// binary that installs the process-global recorder, so it runs once.)
    #[test]
    fn one_invocation_flushes_as_valid_emf() {
        let (emf, metrics) = Emf::install("auth").expect("first install in this process");
        metrics.request("POST /auth/signup", 201, Duration::from_millis(12));
        metrics.request("POST /auth/signup", 201, Duration::from_millis(8));
        metrics.request("POST /auth/login", 429, Duration::from_millis(3));
        metrics.count(EVENTS_PRODUCED, 2);
        let mut out = Vec::new();
        emf.flush(&mut out).expect("flush");

        let text = String::from_utf8(out).expect("utf-8");
        let docs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON document"))
            .collect();
        let mut seen = std::collections::BTreeMap::new();
        for doc in &docs {
            let aws = &doc["_aws"];
            assert!(
                aws["Timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
                "{doc}"
            );
            let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
            assert_eq!(directives.len(), 1, "{doc}");
            let directive = &directives[0];
            assert_eq!(directive["Namespace"], NAMESPACE);
            let sets = directive["Dimensions"].as_array().expect("Dimensions");
            assert_eq!(sets.len(), 1, "{doc}");
            let set: Vec<&str> = sets[0]
                .as_array()
                .expect("a dimension set")
                .iter()
                .map(|d| d.as_str().expect("dimension name"))
                .collect();
            assert_eq!(set[0], FUNCTION, "{doc}");
            assert_eq!(doc[FUNCTION], "auth");
            for dimension in &set {
                assert!(doc[*dimension].is_string(), "dimension {dimension} has no value: {doc}");
            }
            for metric in directive["Metrics"].as_array().expect("Metrics") {
                let name = metric["Name"].as_str().expect("Name");
                assert_eq!(metric["Unit"], emf_unit(unit(name)), "{doc}");
                seen.insert(
                    (
                        name.to_string(),
                        set.join(","),
                        doc[ROUTE].as_str().map(String::from),
                        doc[STATUS_CLASS].as_str().map(String::from),
                    ),
                    doc[name].clone(),
                );
            }
        }
        let key = |name: &str, set: &str, route: Option<&str>, class: Option<&str>| {
            (
                name.to_string(),
                set.to_string(),
                route.map(String::from),
                class.map(String::from),
            )
        };
        let expected = std::collections::BTreeMap::from([
            (
                key(
                    REQUESTS,
                    "Function,Route,StatusClass",
                    Some("POST /auth/signup"),
                    Some("2xx"),
                ),
                json!(2),
            ),
            (
                key(
                    REQUESTS,
                    "Function,Route,StatusClass",
                    Some("POST /auth/login"),
                    Some("4xx"),
                ),
                json!(1),
            ),
            (
                key(LATENCY, "Function,Route", Some("POST /auth/signup"), None),
                json!([12.0, 8.0]),
            ),
            (
                key(LATENCY, "Function,Route", Some("POST /auth/login"), None),
                json!([3.0]),
            ),
            (key(RATE_LIMITED, "Function", None, None), json!(1)),
            (key(EVENTS_PRODUCED, "Function", None, None), json!(2)),
        ]);
        assert_eq!(seen, expected, "{text}");

        // Flushed once: the next invocation starts from nothing.
        let mut again = Vec::new();
        emf.flush(&mut again).expect("flush");
        assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));
    }

    #[test]
    fn local_metrics_are_totals_per_function_and_never_reset_by_reading() {
        let auth = Metrics::local("auth");
        let consumer = auth.for_function("notifications-consumer");
        auth.request("GET /profile", 200, Duration::from_millis(2));
        auth.request("GET /profile", 401, Duration::from_millis(4));
        consumer.count(RECORDS_APPLIED, 3);
        consumer.gauge(OUTBOX_BACKLOG, 7.0);
        let first = auth.snapshot().expect("local");
        assert_eq!(
            first,
            consumer.snapshot().expect("local"),
            "one recorder, two functions"
        );
        let counter = |snap: &Value, name: &str, dims: Value| {
            snap["counters"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["name"] == name && c["dimensions"] == dims))
                .map(|c| c["value"].clone())
        };
        assert_eq!(
            counter(&first, RECORDS_APPLIED, json!({"Function": "notifications-consumer"})),
            Some(json!(3))
        );
        assert_eq!(
            counter(&first, AUTH_REFUSED, json!({"Function": "auth"})),
            Some(json!(1))
        );
        assert_eq!(
            counter(
                &first,
                REQUESTS,
                json!({"Function": "auth", "Route": "GET /profile", "StatusClass": "4xx"})
            ),
            Some(json!(1))
        );
        let latency = &first["histograms"][0];
        assert_eq!(
            (latency["name"].as_str(), latency["count"].as_u64()),
            (Some(LATENCY), Some(2))
        );
        assert_eq!(
            (latency["unit"].as_str(), latency["max"].as_f64()),
            (Some("Milliseconds"), Some(4.0))
        );
        assert_eq!(first["gauges"][0]["value"], 7.0);
        assert_eq!(auth.snapshot(), Some(first), "reading does not reset");
    }
}
