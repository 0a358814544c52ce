//! Structured JSON logs, set up once per process.
//!
//! One JSON object per line on stderr, which Lambda ships to the function's log group.
//! In AWS every line written during an invocation carries `"xrayTraceId"`, the root id
//! of the invocation's X-Ray trace (`1-5759e988-bd862e3fe1be46a994272793`), so a log
//! line leads to its trace and a trace to its log lines. Where it comes from:
//! `lambda_runtime` sets `_X_AMZN_TRACE_ID` (the `X-Amzn-Trace-Id` header of the
//! invocation, `Root=...;Parent=...;Sampled=...`) before it calls the handler, and
//! [`init`]'s formatter reads it for each line. The runtime's own
//! `Lambda runtime invoke` span also has `requestId` and `xrayTraceId`, but the JSON
//! formatter prints only the innermost span, and the HTTP handlers open a `request` span
//! inside it, so the span alone would lose the trace id on exactly the lines that matter.
//! With concurrent invocations (Lambda Managed Instances) the runtime sets no variable,
//! since one process-wide variable cannot name several invocations: the bootstraps run
//! each invocation inside [`in_invocation`], a task-local that wins over the variable.
//!
//! Levels: `RUST_LOG` if set; otherwise the level Lambda passes as `AWS_LAMBDA_LOG_LEVEL`
//! (template.yaml's `ApplicationLogLevel`), else `info`; either way the Kafka client is
//! held at `warn` unless `RUST_LOG` says otherwise, because at `info` it logs every
//! connection and metadata refresh. `RUST_LOG` takes `target=level` directives and a bare
//! default level (`debug,rskafka=info`): tracing-subscriber's `Targets` filter, whose
//! parser needs no regex engine (`EnvFilter`'s span and field directives would link one,
//! about 0.2 MB of every bootstrap). A `RUST_LOG` that does not parse is reported in the
//! logs and the default levels apply.

use std::{fmt::Write as _, future::Future};

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    filter::Targets,
    fmt::{
        self,
        format::{self, FormatEvent, FormatFields, Writer},
        FmtContext,
    },
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
};

/// Crates whose `info` lines would flood the logs (one line per broker connection and
/// metadata refresh), held at `warn` by the default filter.
pub const QUIET_CRATES: &[&str] = &["rskafka"];

/// Installs the JSON log subscriber (see the module docs for the level and the trace id).
/// Safe to call twice: the second call is a no-op, which tests rely on.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let lambda_level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok();
    let (filter, rejected) = filter(rust_log.as_deref(), lambda_level.as_deref());
    let installed = fmt::fmt()
        .json()
        .event_format(WithTraceId::new(
            format::json().with_current_span(true).with_span_list(false),
            current_trace_id,
        ))
        // stderr: Lambda ships it to CloudWatch all the same, and stdout stays clean for
        // `invoke` output and the EMF metric lines.
        .with_writer(std::io::stderr)
        .finish()
        .with(filter)
        .try_init();
    if let (Ok(()), Some(error)) = (installed, rejected) {
        tracing::warn!(%error, rust_log = rust_log.as_deref().unwrap_or_default(), "RUST_LOG is not a list of target=level directives; using the default levels");
    }
}

/// The filter of [`default_directives`]; when `RUST_LOG` does not parse, the filter
/// without it and the reason, for the caller to report.
fn filter(rust_log: Option<&str>, lambda_level: Option<&str>) -> (Targets, Option<String>) {
    match default_directives(rust_log, lambda_level).parse() {
        Ok(filter) => (filter, None),
        Err(error) => {
            let fallback = default_directives(None, lambda_level)
                .parse()
                .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
            (fallback, Some(error.to_string()))
        }
    }
}

/// The filter directives: `RUST_LOG` as given, else the Lambda level (its `FATAL`, which
/// `tracing` does not have, maps to `error`) or `info`, plus [`QUIET_CRATES`] at `warn`.
pub fn default_directives(rust_log: Option<&str>, lambda_level: Option<&str>) -> String {
    if let Some(directives) = rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        return directives.to_string();
    }
    let level = match lambda_level.map(|l| l.trim().to_ascii_lowercase()).as_deref() {
        Some(l @ ("trace" | "debug" | "info" | "warn" | "error")) => l.to_string(),
        Some("fatal") => "error".to_string(),
        _ => "info".to_string(),
    };
    let mut directives = level;
    for krate in QUIET_CRATES {
        let _ = write!(directives, ",{krate}=warn");
    }
    directives
}

tokio::task_local! {
    /// The `X-Amzn-Trace-Id` header of the invocation the current task serves.
    static INVOCATION_TRACE: Option<String>;
}

/// Runs `invocation` with `trace_header` (the invocation context's `xray_trace_id`) as the
/// trace of every line it logs, whatever other invocations run at the same time.
pub async fn in_invocation<T>(trace_header: Option<String>, invocation: impl Future<Output = T>) -> T {
    INVOCATION_TRACE.scope(trace_header, invocation).await
}

/// The X-Ray trace id of the current invocation: the `Root` of the task's trace header
/// ([`in_invocation`]), else of `_X_AMZN_TRACE_ID`.
fn current_trace_id() -> Option<String> {
    let scoped = INVOCATION_TRACE.try_with(Clone::clone).ok().flatten();
    let header = scoped.or_else(|| std::env::var("_X_AMZN_TRACE_ID").ok())?;
    trace_root(&header).map(str::to_string)
}

/// `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1` ->
/// `1-5759e988-bd862e3fe1be46a994272793`. `None` when there is no non-empty `Root`.
pub fn trace_root(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|part| part.trim().split_once('='))
        .find(|(key, _)| key.eq_ignore_ascii_case("Root"))
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A JSON event format that puts `"xrayTraceId"` first in each line when a trace id is
/// known. Wraps the stock JSON format rather than rewriting it.
pub struct WithTraceId<F> {
    inner: F,
    trace_id: fn() -> Option<String>,
}

impl<F> WithTraceId<F> {
    /// `inner` formats the line; `trace_id` is asked for the id on every line.
    pub fn new(inner: F, trace_id: fn() -> Option<String>) -> Self {
        Self { inner, trace_id }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let Some(trace_id) = (self.trace_id)() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                let id = serde_json::to_string(&trace_id).map_err(|_| std::fmt::Error)?;
                write!(writer, "{{\"xrayTraceId\":{id},{rest}")
            }
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[test]
    fn the_trace_root_is_taken_from_the_lambda_trace_header() {
        assert_eq!(
            trace_root("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
            Some("1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_eq!(
            trace_root("Parent=53995c3f42cd8ad8; Root=1-abc ;Sampled=0"),
            Some("1-abc")
        );
        assert_eq!(trace_root("Parent=53995c3f42cd8ad8"), None);
        assert_eq!(trace_root("Root=;Sampled=1"), None);
        assert_eq!(trace_root(""), None);
    }

    #[tokio::test]
    async fn concurrent_invocations_each_log_their_own_trace_id() {
        let traced = |header: &'static str| {
            in_invocation(Some(header.to_string()), async {
                tokio::task::yield_now().await;
                current_trace_id()
            })
        };
        let (a, b) = tokio::join!(traced("Root=1-aaa;Sampled=1"), traced("Parent=9;Root=1-bbb"));
        assert_eq!((a.as_deref(), b.as_deref()), (Some("1-aaa"), Some("1-bbb")));
    }

    #[test]
    fn the_default_filter_follows_lambda_and_keeps_the_kafka_client_quiet() {
        assert_eq!(default_directives(None, None), "info,rskafka=warn");
        assert_eq!(default_directives(None, Some("DEBUG")), "debug,rskafka=warn");
        assert_eq!(default_directives(None, Some("FATAL")), "error,rskafka=warn");
        assert_eq!(default_directives(None, Some("bogus")), "info,rskafka=warn");
        assert_eq!(default_directives(Some(""), Some("WARN")), "warn,rskafka=warn");
        assert_eq!(
            default_directives(Some("debug,rskafka=info"), Some("WARN")),
            "debug,rskafka=info"
        );
    }

    #[test]
    fn rust_log_sets_levels_per_target() {
        let (filter, rejected) = filter(Some("warn,devconnect=debug"), Some("ERROR"));
        assert_eq!(rejected, None);
        assert!(filter.would_enable("devconnect::store", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("rskafka::client", &tracing::Level::INFO));
        assert!(filter.would_enable("rskafka::client", &tracing::Level::WARN));
    }

    #[test]
    fn the_kafka_client_is_held_at_warn_by_default() {
        let (filter, _) = filter(None, Some("DEBUG"));
        assert!(filter.would_enable("devconnect", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("rskafka::connection", &tracing::Level::INFO));
    }

    #[test]
    fn a_rust_log_that_does_not_parse_is_reported_and_the_lambda_level_applies() {
        let (filter, rejected) = filter(Some("debug,rskafka=loud"), Some("WARN"));
        assert!(rejected.is_some());
        assert!(filter.would_enable("devconnect", &tracing::Level::WARN));
        assert!(!filter.would_enable("devconnect", &tracing::Level::INFO));
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    fn lines_with(trace_id: fn() -> Option<String>) -> Vec<serde_json::Value> {
        let out = Captured::default();
        let subscriber = fmt::fmt()
            .json()
            .event_format(WithTraceId::new(
                format::json().with_current_span(true).with_span_list(false),
                trace_id,
            ))
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _invoke = invoke.enter();
            tracing::info!("outside the request span");
            let request = tracing::info_span!("request", route = "GET /profile");
            let _request = request.enter();
            tracing::warn!(user = "u1", "inside \"the\" request span");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn every_line_carries_the_trace_id_even_inside_nested_spans() {
        let lines = lines_with(|| Some("1-5759e988-bd862e3fe1be46a994272793".into()));
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert_eq!(line["xrayTraceId"], "1-5759e988-bd862e3fe1be46a994272793", "{line}");
            assert!(line["timestamp"].is_string() && line["level"].is_string(), "{line}");
        }
        assert_eq!(lines[1]["span"]["name"], "request");
        assert_eq!(lines[1]["fields"]["message"], "inside \"the\" request span");
    }

    #[test]
    fn without_a_trace_the_line_is_the_plain_json_format() {
        let lines = lines_with(|| None);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.get("xrayTraceId").is_none()));
    }
}
