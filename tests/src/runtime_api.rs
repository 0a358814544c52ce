//! A Lambda Runtime API emulator, so a real bootstrap binary runs here as it does in Lambda.
//!
//! A bootstrap long-polls `GET /2018-06-01/runtime/invocation/next` for an event and
//! posts the answer to `.../invocation/{id}/response` (or `.../error`); a failed init
//! posts to `/runtime/init/error`. This emulator serves those four endpoints on a free
//! port, hands each [`RuntimeApi::invoke`] to exactly one waiting poll (several at once
//! when the bootstrap runs concurrent workers, as on Lambda Managed Instances), and
//! records when every poll arrived: the first one is the end of the cold start.

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tokio::{
    net::TcpListener,
    process::{Child, Command},
    sync::{mpsc, oneshot, Notify},
};

/// How long an invocation may take before [`RuntimeApi::invoke`] gives up on it.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the bootstrap answered to one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Posted to `/invocation/{id}/response`.
    Response(Bytes),
    /// Posted to `/invocation/{id}/error` (the handler returned an error).
    Error(Bytes),
}

impl Outcome {
    /// The response body as JSON; an error outcome is an `Err` naming the error body.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        match self {
            Outcome::Response(body) => Ok(serde_json::from_slice(body)?),
            Outcome::Error(body) => bail!("invocation error: {}", String::from_utf8_lossy(body)),
        }
    }
}

/// One event waiting for a `next` poll.
struct Event {
    request_id: String,
    payload: Bytes,
}

struct Shared {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    answers: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    polls: Mutex<Vec<Instant>>,
    polled: Notify,
    init_error: Mutex<Option<Bytes>>,
}

/// The emulator: one per bootstrap process, like one execution environment.
pub struct RuntimeApi {
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves the Runtime API on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let (queue, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: tokio::sync::Mutex::new(events),
            answers: Mutex::new(HashMap::new()),
            polls: Mutex::new(Vec::new()),
            polled: Notify::new(),
            init_error: Mutex::new(None),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&shared));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            queue,
            shared,
            server,
        })
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The variables Lambda gives every function, pointed at this emulator.
    pub fn lambda_env(&self, function: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.endpoint()),
            ("AWS_LAMBDA_FUNCTION_NAME", function.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}")),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "local".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            // Lambda puts the execution role's credentials here; the SDK signs with them.
            ("AWS_ACCESS_KEY_ID", "ASIAEXECUTIONROLE".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "execution-role-secret".to_string()),
            ("AWS_SESSION_TOKEN", "execution-role-session".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts `binary` as Lambda would: its environment is [`Self::lambda_env`] plus
    /// `extra`, nothing inherited but `PATH`; logs and EMF lines are discarded unless
    /// `DEVCONNECT_BOOTSTRAP_LOGS` is set.
    pub fn spawn(&self, binary: &str, function: &str, extra: &[(&str, &str)]) -> anyhow::Result<Child> {
        let mut command = Command::new(binary);
        command.env_clear().kill_on_drop(true).stdin(Stdio::null());
        if let Ok(path) = std::env::var("PATH") {
            command.env("PATH", path);
        }
        command.envs(self.lambda_env(function));
        command.envs(extra.iter().copied());
        let (stdout, stderr) = match std::env::var_os("DEVCONNECT_BOOTSTRAP_LOGS") {
            Some(_) => (Stdio::inherit(), Stdio::inherit()),
            None => (Stdio::null(), Stdio::null()),
        };
        command.stdout(stdout).stderr(stderr);
        command.spawn().with_context(|| format!("starting {binary}"))
    }

    /// Waits until `count` `next` polls have arrived (or the bootstrap reported a failed
    /// init, or `timeout` passed) and returns when the first arrived.
    pub async fn polls(&self, count: usize, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.polled.notified();
            if let Some(body) = self.shared.init_error.lock().unwrap().clone() {
                bail!("init failed: {}", String::from_utf8_lossy(&body));
            }
            {
                let polls = self.shared.polls.lock().unwrap();
                if polls.len() >= count {
                    return Ok(polls[0]);
                }
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .map_err(|_| anyhow!("fewer than {count} `next` polls within {timeout:?}"))?;
        }
    }

    /// How many `next` polls have arrived so far.
    pub fn poll_count(&self) -> usize {
        self.shared.polls.lock().unwrap().len()
    }

    /// Hands `payload` to the next poll and waits (at most [`INVOKE_TIMEOUT`]) for the answer.
    pub async fn invoke(&self, payload: &serde_json::Value) -> anyhow::Result<Outcome> {
        let request_id = uuid_like();
        let (answer, answered) = oneshot::channel();
        self.shared.answers.lock().unwrap().insert(request_id.clone(), answer);
        self.queue
            .send(Event {
                request_id: request_id.clone(),
                payload: Bytes::from(serde_json::to_vec(payload)?),
            })
            .map_err(|_| anyhow!("runtime API stopped"))?;
        let outcome = tokio::time::timeout(INVOKE_TIMEOUT, answered).await;
        self.shared.answers.lock().unwrap().remove(&request_id);
        match outcome {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => bail!("invocation {request_id} dropped"),
            Err(_) => bail!("invocation {request_id} unanswered after {INVOKE_TIMEOUT:?}"),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A request id unique within the process (Lambda's are UUIDs; any unique string works).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("req-{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.polls.lock().unwrap().push(Instant::now());
    shared.polled.notify_waiters();
    // One poll at a time takes the receiver; the others queue behind it, so each event
    // goes to exactly one poll, as Lambda's does.
    let event = shared.events.lock().await.recv().await;
    let Some(event) = event else {
        return StatusCode::GONE.into_response();
    };
    let deadline_ms = chrono::Utc::now().timestamp_millis() + INVOKE_TIMEOUT.as_millis() as i64;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", event.request_id.clone());
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:000000000000:function:local".into(),
    );
    set(
        "lambda-runtime-trace-id",
        format!("Root=1-00000000-{:0>24};Sampled=0", &event.request_id[4..]),
    );
    set("content-type", "application/json".into());
    (headers, event.payload).into_response()
}

fn answer(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match shared.answers.lock().unwrap().remove(id) {
        Some(waiting) => {
            let _ = waiting.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&shared, &id, Outcome::Response(body))
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&shared, &id, Outcome::Error(body))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    *shared.init_error.lock().unwrap() = Some(body);
    shared.polled.notify_waiters();
    StatusCode::ACCEPTED
}

/// An API Gateway HTTP API (payload 2.0) event, as the HTTP functions receive it; the
/// route key is `METHOD path`, so `path` must be a route without parameters.
pub fn http_event(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::from(*v)))
        .collect();
    let route_key = format!("{method} {path}");
    serde_json::json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "runtime-api-emulator"
            },
            "requestId": uuid_like(),
            "routeKey": route_key,
            "stage": "$default",
            "time": "28/Nov/2026:12:00:00 +0000",
            "timeEpoch": 0
        },
        "body": body,
        "isBase64Encoded": false
    })
}
