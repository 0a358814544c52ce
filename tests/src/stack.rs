//! [`Stack`]: servers + application state + the local gateway, for one test.

use std::{collections::BTreeMap, collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use devconnect::{config::Config, outbox::RelayReport, AppState};
use local_gateway::{
    apigw::{self, HttpCall},
    default_template_path,
    functions::Functions,
    routes::{Lookup, Matched},
    server::{self, Gateway},
    template::Template,
};
use serde_json::{json, Value};

use crate::{
    round_trips::CountingProxy,
    servers::{Broker, ProducedEvent, RedisCluster, RedisServer},
};

/// Whether this test run asked for a Redis Cluster (`DEVCONNECT_TEST_REDIS=cluster`)
/// instead of one redis-server.
pub fn cluster_requested() -> bool {
    std::env::var("DEVCONNECT_TEST_REDIS").is_ok_and(|v| v == "cluster")
}

/// `true` (after saying why) when a test that kills and restarts Redis should not run:
/// on a cluster, "Redis is down" means three nodes and a re-formed slot map, which
/// these tests do not model.
pub fn skip_outage_test_on_cluster(test: &str) -> bool {
    let skip = cluster_requested();
    if skip {
        eprintln!(
            "skipping {test}: it stops and restarts one redis-server; not run with DEVCONNECT_TEST_REDIS=cluster"
        );
    }
    skip
}

/// The topics every stack creates: the one list, [`devconnect::events::Topic`].
pub const TOPICS: [&str; 8] = devconnect::events::Topic::DEFAULT_NAMES;

/// One test's world.
pub struct Stack {
    /// The private Redis (with `DEVCONNECT_TEST_REDIS=cluster`: the first master of the cluster).
    pub redis: RedisServer,
    /// The other masters of the cluster; empty on a single redis-server.
    pub other_masters: Vec<RedisServer>,
    /// The private broker.
    pub broker: Broker,
    /// The clients the handlers use.
    pub state: AppState,
    /// `http://127.0.0.1:<port>` of the local gateway.
    pub base_url: String,
    /// The template's routes bound to the handlers (for in-process calls).
    pub gateway: Arc<Gateway>,
    /// Counts Redis round trips, when started with [`Stack::start_counting`].
    pub round_trips: Option<CountingProxy>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Stack {
    /// Starts everything with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts everything with extra configuration variables (e.g. lower limits).
    pub async fn start_with(vars: &[(&str, &str)]) -> Self {
        Self::start_inner(vars, false).await
    }

    /// Starts everything with a round-trip counting proxy between the handlers and Redis.
    pub async fn start_counting(vars: &[(&str, &str)]) -> Self {
        Self::start_inner(vars, true).await
    }

    /// The round-trip counter of a [`Stack::start_counting`] stack, or `None` (after saying
    /// so) on a Redis Cluster: its clients talk to every master directly, past one proxy.
    pub fn round_trip_counter(&self) -> Option<&CountingProxy> {
        if self.round_trips.is_none() {
            eprintln!("round trips are counted on one redis-server only");
        }
        self.round_trips.as_ref()
    }

    /// Starts everything plus what `./infra/local/run` adds: the emulated MSK triggers
    /// (consumers receive every event) and the schedules (every `schedule_secs`).
    pub async fn start_full(vars: &[(&str, &str)]) -> Self {
        let stack = Self::start_inner(vars, false).await;
        local_gateway::msk::spawn_pollers(
            Arc::clone(&stack.gateway),
            stack.state.producer.connection().clone(),
            stack.state.store.clone(),
        );
        server::spawn_schedules(Arc::clone(&stack.gateway), Duration::from_secs(1));
        // Ready once every emulated trigger has committed its starting offsets.
        for source in &stack.gateway.template.msk_sources {
            let key = devconnect::keys::local_offsets(&source.group);
            let field = format!("{}:0", source.topic);
            for _ in 0..200 {
                let committed: bool = redis::cmd("HEXISTS")
                    .arg(&key)
                    .arg(&field)
                    .query_async(&mut stack.state.store.conn())
                    .await
                    .expect("HEXISTS");
                if committed {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        stack
    }

    async fn start_inner(vars: &[(&str, &str)], counting: bool) -> Self {
        let cluster = cluster_requested();
        let (redis, other_masters) = if cluster {
            let mut nodes = RedisCluster::start().await.expect("redis cluster").nodes;
            let first = nodes.remove(0);
            (first, nodes)
        } else {
            (RedisServer::start().await.expect("redis-server"), Vec::new())
        };
        let broker = Broker::start(&TOPICS).await.expect("tansu");
        // The proxy counts one node's traffic; cluster clients talk to every master directly.
        let round_trips = match counting && !cluster {
            true => Some(CountingProxy::start(redis.port).await.expect("proxy")),
            false => None,
        };
        let redis_url = match &round_trips {
            Some(proxy) => format!("redis://127.0.0.1:{}", proxy.port),
            None => redis.url(),
        };
        let mut env: HashMap<String, String> = HashMap::from([
            ("REDIS_URL".into(), redis_url),
            ("KAFKA_BROKERS".into(), broker.address()),
            ("COOKIE_SECURE".into(), "false".into()),
            ("RATE_LIMIT_ANONYMOUS".into(), "1000".into()),
            ("RATE_LIMIT_FREE".into(), "1000".into()),
            ("REDIS_CLUSTER".into(), cluster.to_string()),
        ]);
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_map(&env).expect("config");
        let state = AppState::connect(config, "tests").await.expect("connect");
        let template = Template::load(&default_template_path()).expect("template.yaml");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let gateway = Arc::new(Gateway::new(template, Functions::new(&state, &base_url)));
        let app = server::router(Arc::clone(&gateway)).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            redis,
            other_masters,
            broker,
            state,
            base_url,
            gateway,
            round_trips,
            server,
        }
    }

    /// Calls the handler for `method path[?query]` in-process, as Lambda would (no HTTP in between).
    pub async fn invoke(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> lambda_http::Response<lambda_http::Body> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let Lookup::Found(Matched {
            route,
            route_key,
            params,
        }) = self.gateway.routes.find(method, path)
        else {
            panic!("no route for {method} {path}");
        };
        let mut headers = lambda_http::http::HeaderMap::new();
        headers.insert(
            "content-type",
            lambda_http::http::HeaderValue::from_static("application/json"),
        );
        if let Some(t) = token {
            headers.insert("authorization", format!("Bearer {t}").parse().expect("token header"));
        }
        let call = HttpCall {
            route_key: route_key.to_string(),
            method,
            path,
            query,
            headers,
            path_params: params,
            body,
            source_ip: "127.0.0.1".into(),
        };
        let request = apigw::request(&apigw::event(&call)).expect("event");
        self.gateway
            .functions
            .invoke_http(&route.function, request)
            .await
            .expect("function")
    }

    /// `ws://127.0.0.1:<port>/ws`: the local WebSocket API.
    pub fn ws_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url.replacen("http", "ws", 1),
            local_gateway::websocket::PATH
        )
    }

    /// An HTTP client of the gateway, not signed in.
    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.base_url.clone(),
            token: None,
        }
    }

    /// Signs up a fresh user; returns a client holding their token, and their id.
    pub async fn signed_up(&self, email: &str) -> (Client, String) {
        let r = self
            .client()
            .post("/auth/signup", json!({"email": email, "password": "correct horse battery", "firstName": "Ada", "lastName": "Lovelace"}))
            .await;
        assert_eq!(r.status, 201, "signup failed: {}", r.body);
        let token = r.body["token"].as_str().expect("token").to_string();
        (
            self.client().with_token(&token),
            r.body["user"]["id"].as_str().expect("id").to_string(),
        )
    }

    /// Every envelope on `topic`, across partitions, with its partition and record key.
    pub async fn events(&self, topic: &str) -> Vec<ProducedEvent> {
        self.broker.events(topic).await
    }

    /// Runs one raw command against the stack's Redis, e.g. `["SET", key, "garbage"]` to
    /// break a key, and returns its reply (`()` ignores it).
    pub async fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut self.state.store.conn())
            .await
            .expect("redis command")
    }

    /// Every dead letter so far (dead-letter-events, all partitions), as JSON.
    pub async fn dead_letters(&self) -> Vec<Value> {
        self.broker.dead_letters().await
    }

    /// Every record on `topic` whose value is JSON (e.g. dead letters), across partitions:
    /// (partition, offset, key, value).
    pub async fn records(&self, topic: &str) -> Vec<(i32, i64, String, Value)> {
        self.broker.records(topic).await
    }

    /// One section of Redis's `INFO`, from the node the connection reaches.
    async fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.state.store.conn())
            .await
            .expect("INFO")
    }

    /// Redis's own CPU time so far in seconds (user + system, from `INFO cpu`): the benches
    /// divide its growth by the work done, since Redis's CPU is what sizes the cluster.
    /// On a cluster, the node the connection reaches.
    pub async fn redis_cpu_seconds(&self) -> f64 {
        self.info("cpu")
            .await
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| *k == "used_cpu_user" || *k == "used_cpu_sys")
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum()
    }

    /// Redis's calls and CPU µs per command since its stats were last reset, from
    /// `INFO commandstats`. On a cluster, the node the connection reaches.
    pub async fn command_stats(&self) -> BTreeMap<String, (u64, f64)> {
        self.info("commandstats")
            .await
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| rest.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
                Some((
                    name.to_string(),
                    (field("calls")?.parse().ok()?, field("usec")?.parse().ok()?),
                ))
            })
            .collect()
    }

    /// Every Redis key that holds data, with its type and contents: rate-limit counters
    /// are left out, since counting a refused request is the limiter's job.
    /// On a cluster every master is asked for its own keys.
    pub async fn data_snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for node in std::iter::once(&self.redis).chain(&self.other_masters) {
            let mut conn = redis::Client::open(node.url())
                .expect("redis url")
                .get_multiplexed_async_connection()
                .await
                .expect("connect to a redis node");
            snapshot_node(&mut conn, &mut out).await;
        }
        out
    }

    /// One run of the scheduled outbox relay.
    pub async fn relay(&self) -> RelayReport {
        devconnect::outbox::relay(&self.state.store, &self.state.producer, 100)
            .await
            .expect("relay")
    }
}

/// Adds the data keys of one node (connected to directly) to `out`.
async fn snapshot_node(conn: &mut redis::aio::MultiplexedConnection, out: &mut BTreeMap<String, String>) {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.expect("KEYS");
    for key in keys
        .into_iter()
        .filter(|k| !k.starts_with(devconnect::keys::RATE_LIMIT_PREFIX))
    {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(conn).await.expect("TYPE");
        let (command, extra): (&str, &[&str]) = match kind.as_str() {
            "string" => ("GET", &[]),
            "hash" => ("HGETALL", &[]),
            "list" => ("LRANGE", &["0", "-1"]),
            "set" => ("SMEMBERS", &[]),
            "zset" => ("ZRANGE", &["0", "-1", "WITHSCORES"]),
            "stream" => ("XRANGE", &["-", "+"]),
            other => panic!("snapshot does not know type {other}"),
        };
        let reply: redis::Value = redis::cmd(command)
            .arg(&key)
            .arg(extra)
            .query_async(conn)
            .await
            .expect("read");
        // Values may be binary (HyperLogLogs), so they are compared as lossy text.
        let lossy = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        let mut values: Vec<String> = match kind.as_str() {
            "string" => vec![lossy(redis::from_redis_value(reply).expect("bytes"))],
            "hash" | "list" | "set" | "zset" => redis::from_redis_value::<Vec<Vec<u8>>>(reply)
                .expect("bytes")
                .into_iter()
                .map(lossy)
                .collect(),
            _ => vec![format!("{reply:?}")],
        };
        if kind == "hash" {
            let mut pairs: Vec<String> = values.chunks(2).map(|p| p.join("=")).collect();
            pairs.sort();
            values = pairs;
        } else if kind == "set" {
            values.sort();
        }
        out.insert(key, format!("{kind}: {values:?}"));
    }
}

/// A small HTTP client of the gateway.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// A response, body parsed as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// JSON body.
    pub body: Value,
}

impl Reply {
    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of an error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }
}

impl Client {
    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The token this client sends.
    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or_default()
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.raw("GET", path, Vec::new()).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.raw("POST", path, body.to_string().into_bytes()).await
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.raw("PATCH", path, body.to_string().into_bytes()).await
    }

    /// Any method, any bytes.
    pub async fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        let mut req = self
            .http
            .request(method.parse().expect("method"), format!("{}{path}", self.base))
            .timeout(Duration::from_secs(20))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("gateway unreachable");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        Reply { status, headers, body }
    }
}
