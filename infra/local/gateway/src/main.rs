//! `local-gateway serve` | `local-gateway invoke <LogicalId> --event <file>` |
//! `local-gateway check` (reads `TEMPLATE`, default template.yaml; exits non-zero naming
//! every part the gateway does not emulate, unless opted out in `LOCAL_GATEWAY_IGNORE`).
//!
//! `serve` runs the emulated MSK triggers unless `LOCAL_MSK_TRIGGERS=off` (HTTP and
//! WebSocket work only: events still reach the broker, no consumer reads them).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use devconnect::{config::Config, telemetry, AppState};
use local_gateway::{
    apigw, default_template_path,
    functions::Functions,
    msk,
    server::{self, Gateway},
    template::Template,
    websocket,
};

// One thread, as each bootstrap runs when Lambda sends it one invocation at a time
// (devconnect::bootstrap::runtime): 20-25 % less CPU per request than tokio's worker
// threads, which wake one another and free one another's memory across cores. One core
// serves ~30,000 GET /profile a second; blocking work goes to the blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let template_path = std::env::var("TEMPLATE")
        .map(Into::into)
        .unwrap_or_else(|_| default_template_path());
    let template = Template::load(&template_path)?;
    if args.first().map(String::as_str) == Some("check") {
        eprintln!(
            "[devconnect] {}: every part is emulated locally{}",
            template_path.display(),
            if template.ignored.is_empty() {
                String::new()
            } else {
                format!(
                    " except (LOCAL_GATEWAY_IGNORE) {}",
                    template.ignored.iter().cloned().collect::<Vec<_>>().join(",")
                )
            }
        );
        return Ok(());
    }
    let port: u16 = env_number("PORT", 3000)?;
    let triggers = msk_triggers()?;
    let state = AppState::connect(Config::from_env()?, "local-gateway")
        .await
        .context("initialising: endpoint discovery and Redis")?;
    let functions = Functions::new(&state, &format!("http://127.0.0.1:{port}"));
    match args.first().map(String::as_str) {
        Some("serve") | None => serve(Gateway::new(template, functions), &state, port, triggers).await,
        Some("invoke") => invoke(&functions, &args[1..]).await,
        Some(other) => bail!("unknown command {other}: use serve, check or invoke <LogicalId> --event <file>"),
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name} must be a number")),
        Err(_) => Ok(default),
    }
}

/// `LOCAL_MSK_TRIGGERS`: `on` (the default) or `off`.
fn msk_triggers() -> anyhow::Result<bool> {
    match std::env::var("LOCAL_MSK_TRIGGERS").as_deref() {
        Err(_) | Ok("on") => Ok(true),
        Ok("off") => Ok(false),
        Ok(other) => bail!("LOCAL_MSK_TRIGGERS must be on or off, not {other:?}"),
    }
}

/// Serves until Ctrl-C; `triggers`: run the emulated MSK event source mappings.
async fn serve(gateway: Gateway, state: &AppState, port: u16, triggers: bool) -> anyhow::Result<()> {
    let schedule_cap: u64 = env_number("LOCAL_SCHEDULE_MAX_SECS", 2)?;
    let gateway = Arc::new(gateway);
    server::spawn_schedules(Arc::clone(&gateway), Duration::from_secs(schedule_cap));
    if triggers {
        msk::spawn_pollers(
            Arc::clone(&gateway),
            state.producer.connection().clone(),
            state.store.clone(),
        );
    } else {
        let consumers: Vec<_> = gateway
            .template
            .msk_sources
            .iter()
            .map(|s| s.function.as_str())
            .collect();
        eprintln!(
            "[devconnect] MSK triggers off (LOCAL_MSK_TRIGGERS=off): events reach the broker but {} are not invoked",
            if consumers.is_empty() {
                "no consumers".to_string()
            } else {
                let mut unique = consumers;
                unique.sort_unstable();
                unique.dedup();
                unique.join(", ")
            }
        );
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding port {port}"))?;
    for r in &gateway.template.routes {
        tracing::info!(route = %r.route_key(), function = %r.function, "route");
    }
    eprintln!("[devconnect] local gateway listening on http://127.0.0.1:{port}");
    eprintln!(
        "[devconnect] WebSocket API on ws://127.0.0.1:{port}{} (token as ?token= or Sec-WebSocket-Protocol)",
        websocket::PATH
    );
    axum::serve(
        listener,
        server::router(gateway).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

async fn invoke(functions: &Functions, args: &[String]) -> anyhow::Result<()> {
    let (function, event_path) = match args {
        [f, flag, path] if flag == "--event" || flag == "-e" => (f.as_str(), path.as_str()),
        _ => bail!("usage: invoke <LogicalId> --event <file>"),
    };
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(event_path).with_context(|| format!("reading {event_path}"))?)
            .with_context(|| format!("{event_path} is not JSON"))?;
    let output = if event.get("eventSource").and_then(|s| s.as_str()) == Some("aws:kafka") {
        functions
            .invoke_consumer(function, serde_json::from_value(event)?)
            .await?
    } else if event["requestContext"].get("connectionId").is_some() {
        serde_json::to_value(functions.invoke_websocket(serde_json::from_value(event)?).await)?
    } else if event.get("requestContext").is_some() {
        let response = functions
            .invoke_http(function, apigw::request(&event)?)
            .await
            .with_context(|| format!("no HTTP function {function}"))?;
        apigw::response_json(&response)
    } else {
        functions.invoke_scheduled(function).await?
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
