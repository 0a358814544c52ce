//! Structured JSON logs, set up once per process.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the JSON log subscriber (level from `RUST_LOG`, default `info`).
/// Safe to call twice: the second call is a no-op, which tests rely on.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rskafka=warn"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        // stderr: Lambda ships it to CloudWatch all the same, and stdout stays clean for `invoke` output.
        .with_writer(std::io::stderr)
        .try_init();
}
