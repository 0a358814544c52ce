//! Child processes: a private redis-server (or a private 3-master Redis Cluster), a
//! private tansu broker and a private moto server (a local double of the AWS APIs, for
//! endpoint discovery).
//!
//! A server gets a port the OS called free a moment earlier, so another test (in this
//! process or another) may take it first. A test must never end up talking to someone
//! else's server, so a start only succeeds once the socket listening on the port is one
//! of the child's own open files ([`owns_listener`]); a start that finds the port
//! taken tries a fresh one ([`START_ATTEMPTS`]).

use std::{
    collections::HashSet,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use rskafka::client::{partition::UnknownTopicHandling, Client, ClientBuilder};

/// A port the OS says is free right now (it may not be by the time it is used).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A free port for a Redis Cluster node: redis-server also listens on the port 10,000
/// above it (the cluster bus) and refuses to start on a port above 55,535, which
/// [`free_port`] hands out about one time in five here (the kernel's ephemeral range
/// reaches 60,999).
pub fn free_cluster_port() -> u16 {
    (0..1_000)
        .map(|_| free_port())
        .find(|&port| port <= 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok())
        .expect("no free port with a free cluster bus port 10,000 above it")
}

/// Fresh ports a server start tries before giving up, each one found taken.
pub const START_ATTEMPTS: usize = 5;

/// The port a child was started on is held by another process, so the child cannot
/// listen there and whatever answers on it is not ours.
#[derive(Debug)]
pub struct PortTaken {
    /// The contested port.
    pub port: u16,
    /// Which server we tried to start there.
    pub what: &'static str,
}

impl std::fmt::Display for PortTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "port {} is held by another process, not by our {}",
            self.port, self.what
        )
    }
}

impl std::error::Error for PortTaken {}

/// Runs `launch` on ports from `ports` until a launch does not fail with [`PortTaken`],
/// at most [`START_ATTEMPTS`] times. Returns the port it settled on and the result.
async fn on_a_free_port<T>(
    mut ports: impl FnMut() -> u16,
    mut launch: impl AsyncFnMut(u16) -> anyhow::Result<T>,
) -> anyhow::Result<(u16, T)> {
    let mut taken = Vec::new();
    for _ in 0..START_ATTEMPTS {
        let port = ports();
        match launch(port).await {
            Err(e) if e.is::<PortTaken>() => taken.push(port),
            outcome => return outcome.map(|t| (port, t)),
        }
    }
    bail!("no free port after {START_ATTEMPTS} attempts: {taken:?} were taken by other processes")
}

/// Inodes of the TCP sockets listening on `port` (any local address), from the
/// kernel's socket tables; `None` where there is no /proc (not Linux).
fn listening_inodes(port: u16) -> Option<HashSet<u64>> {
    const LISTEN: &str = "0A";
    let mut inodes = HashSet::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, _, state, _, _, _, _, _, inode, ..] = fields[..] else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if state == LISTEN && local_port == Some(port) {
                inodes.extend(inode.parse::<u64>().ok());
            }
        }
    }
    readable.then_some(inodes)
}

/// Whether a socket listening on `port` is one of process `pid`'s open files: the
/// server answering there is the child we started. `None` where there is no /proc.
pub fn owns_listener(pid: u32, port: u16) -> Option<bool> {
    let inodes = listening_inodes(port)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).ok().is_some_and(|target| {
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']'));
            inode.and_then(|i| i.parse().ok()).is_some_and(|i| inodes.contains(&i))
        })
    }))
}

/// A program: `$<env>`, else `name` on PATH, else `~/.cache/devconnect/<cached>` (where
/// ./infra/local/test installs it), else `name` (so the spawn error names it).
fn binary(env: &str, name: &str, cached: &str) -> PathBuf {
    let cached = || {
        let p = PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/devconnect")
            .join(cached);
        p.is_file().then_some(p)
    };
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| which(name))
        .or_else(cached)
        .unwrap_or_else(|| name.into())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// Kills a server and reaps it, so an outage test or a finished test leaves no zombie.
fn end(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` (`-STOP`, `-CONT`) to a running server with `kill`, waiting at most
/// 5 s for `kill` itself. A stopped process keeps its sockets open and accepts TCP
/// connections into the backlog but answers nothing: a hung dependency, not a dead one.
fn signal(child: Option<&Child>, signal: &str, what: &str) -> anyhow::Result<()> {
    let pid = child
        .with_context(|| format!("{what} is not running"))?
        .id()
        .to_string();
    let mut kill = Command::new("kill")
        .args([signal, &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running kill")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = kill.try_wait()? {
            if !status.success() {
                bail!("kill {signal} {pid} ({what}) failed: {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            end(kill);
            bail!("kill {signal} {pid} ({what}) did not finish within 5 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `child` itself listens on `port`, killing it on any failure. Fails with
/// [`PortTaken`] as soon as the port answers from another process's socket, or the
/// child exits while someone else listens there: never attaches to a stranger.
async fn wait_for_port(port: u16, mut child: Child, what: &'static str) -> anyhow::Result<Child> {
    match listen_check(port, &mut child, what).await {
        Ok(()) => Ok(child),
        Err(e) => {
            end(child);
            Err(e)
        }
    }
}

async fn listen_check(port: u16, child: &mut Child, what: &'static str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            if listening_inodes(port).is_some_and(|inodes| !inodes.is_empty()) {
                return Err(PortTaken { port, what }.into());
            }
            bail!("{what} exited during startup: {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            // Without /proc (not Linux) ownership cannot be checked; the exit check
            // above still catches a child that failed to bind, most of the time.
            return match owns_listener(child.id(), port) {
                Some(true) | None => Ok(()),
                Some(false) => Err(PortTaken { port, what }.into()),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{what} did not listen on {port} within 15 s")
}

/// What differs between the servers this harness runs as children: the command that
/// starts one. Starting on a port of its own, outages and freezes are [`Server`]'s.
pub trait Kind {
    /// The program, for messages.
    const WHAT: &'static str;
    /// The command that starts one listening on 127.0.0.1:`port`, working in `dir`.
    fn command(&self, port: u16, dir: &Path) -> Command;
}

/// A server child process that lives as long as this value, on a port whose listening
/// socket is its own (see the module docs).
pub struct Server<K: Kind> {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    kind: K,
}

impl<K: Kind> Server<K> {
    /// Starts `kind` on the first port from `ports` that no other process holds.
    async fn launch_on(kind: K, ports: impl FnMut() -> u16) -> anyhow::Result<Self> {
        let mut server = Self {
            port: 0,
            child: None,
            dir: tempfile::tempdir()?,
            kind,
        };
        on_a_free_port(ports, async |port| {
            server.port = port;
            server.relaunch().await
        })
        .await?;
        Ok(server)
    }

    /// Starts the child again on the same port; fails with [`PortTaken`] if another
    /// process took the port while it was down.
    async fn relaunch(&mut self) -> anyhow::Result<()> {
        self.stop();
        let child = self
            .kind
            .command(self.port, self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (see servers::binary for where it is looked for)", K::WHAT))?;
        self.child = Some(wait_for_port(self.port, child, K::WHAT).await?);
        Ok(())
    }

    /// The process id of the child, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it (simulating an outage); its data is gone (nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            end(child);
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered. See [`Self::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        signal(self.child.as_ref(), "-STOP", K::WHAT)
    }

    /// Lets a paused server run again (SIGCONT), with its data and connections intact.
    pub fn resume(&self) -> anyhow::Result<()> {
        signal(self.child.as_ref(), "-CONT", K::WHAT)
    }
}

impl<K: Kind> Drop for Server<K> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// redis-server, persisting nothing; a cluster node when `cluster_enabled`.
pub struct Redis {
    cluster_enabled: bool,
}

impl Kind for Redis {
    const WHAT: &'static str = "redis-server";

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut command = Command::new(binary("REDIS_SERVER_BIN", "redis-server", "bin/redis-server"));
        let port = port.to_string();
        command
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir);
        if self.cluster_enabled {
            let config_file = format!("nodes-{port}.conf");
            command.args(["--cluster-enabled", "yes", "--cluster-config-file", &config_file]);
        }
        command
    }
}

/// A redis-server that lives as long as this value.
pub type RedisServer = Server<Redis>;

impl Server<Redis> {
    /// Starts one on a free port, persisting nothing.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_node(false).await
    }

    async fn start_node(cluster_enabled: bool) -> anyhow::Result<Self> {
        let ports = if cluster_enabled { free_cluster_port } else { free_port };
        Self::launch_on(Redis { cluster_enabled }, ports).await
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port, empty; fails with [`PortTaken`] if another
    /// process took the port while it was down.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.relaunch().await
    }
}

/// A local Redis Cluster of three masters (no replicas) on free ports, living as long
/// as this value: what ElastiCache Serverless and cluster mode look like to a client.
pub struct RedisCluster {
    /// The masters; together they own all 16384 slots.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled redis-servers, joins them with `redis-cli --cluster
    /// create` (`$REDIS_CLI_BIN`, else `redis-cli` on PATH) and waits for `cluster_state:ok`.
    pub async fn start() -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_node(true).await?);
        }
        let cli = binary("REDIS_CLI_BIN", "redis-cli", "bin/redis-cli");
        let output = tokio::process::Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .context("running redis-cli --cluster create (set REDIS_CLI_BIN or install redis-cli)")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let cluster = Self { nodes };
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>` of every master.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    async fn wait_until_ok(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for url in self.urls() {
            let mut conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await?;
                if info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{url} did not reach cluster_state:ok within 20 s: {info}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

/// tansu: a Kafka-protocol broker with in-memory storage.
pub struct Tansu {
    topics: Vec<String>,
}

impl Kind for Tansu {
    const WHAT: &'static str = "tansu";

    fn command(&self, port: u16, dir: &Path) -> Command {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(binary("TANSU_BIN", "tansu", "bin/tansu"));
        command
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            // tansu reads a .env from its working directory; keep it out of the checkout.
            .current_dir(dir)
            .env_remove("SCHEMA_REGISTRY");
        command
    }
}

/// A tansu broker (Kafka protocol, in-memory storage) that lives as long as this value.
pub type Broker = Server<Tansu>;

impl Server<Tansu> {
    /// Starts one on a free port and creates `topics` with 3 partitions each.
    pub async fn start(topics: &[&str]) -> anyhow::Result<Self> {
        let topics = topics.iter().map(|t| t.to_string()).collect();
        let broker = Self::launch_on(Tansu { topics }, free_port).await?;
        broker.create_topics().await?;
        Ok(broker)
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (its records are gone), with the topics
    /// re-created; fails with [`PortTaken`] if another process took the port meanwhile.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.relaunch().await?;
        self.create_topics().await
    }

    async fn create_topics(&self) -> anyhow::Result<()> {
        let controller = self.client().await?.controller_client()?;
        for topic in &self.kind.topics {
            controller
                .create_topic(topic, 3, 1, 5_000)
                .await
                .with_context(|| format!("creating topic {topic}"))?;
        }
        Ok(())
    }

    /// A fresh Kafka client (retries while the broker finishes starting, for at most 10 s
    /// in all: a broker that accepts connections but never answers fails too).
    pub async fn client(&self) -> anyhow::Result<Client> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let build = ClientBuilder::new(vec![self.address()]).build();
            match tokio::time::timeout_at(deadline, build).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) if tokio::time::Instant::now() > deadline => return Err(e.into()),
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => bail!("tansu on {} did not answer within 10 s", self.address()),
            }
        }
    }

    /// Every record on `topic` whose value is JSON (e.g. dead letters), across its 3
    /// partitions: (partition, offset, key, value).
    pub async fn records(&self, topic: &str) -> Vec<(i32, i64, String, serde_json::Value)> {
        let client = self.client().await.expect("kafka client");
        let mut out = Vec::new();
        for partition in 0..3 {
            let pc = client
                .partition_client(topic, partition, UnknownTopicHandling::Retry)
                .await
                .expect("partition");
            let mut offset = 0;
            loop {
                let (records, high) = pc.fetch_records(offset, 1..10_000_000, 50).await.expect("fetch");
                for r in &records {
                    let value = r.record.value.clone().unwrap_or_default();
                    out.push((
                        partition,
                        r.offset,
                        String::from_utf8_lossy(&r.record.key.clone().unwrap_or_default()).into_owned(),
                        serde_json::from_slice(&value).expect("JSON"),
                    ));
                    offset = r.offset + 1;
                }
                if records.is_empty() || offset >= high {
                    break;
                }
            }
        }
        out
    }

    /// Every envelope on `topic`, across partitions, with its partition and record key.
    pub async fn events(&self, topic: &str) -> Vec<ProducedEvent> {
        self.records(topic)
            .await
            .into_iter()
            .map(|(partition, offset, key, raw)| ProducedEvent {
                partition,
                offset,
                key,
                envelope: serde_json::from_value(raw.clone()).expect("envelope JSON"),
                raw,
            })
            .collect()
    }

    /// Every dead letter so far (dead-letter-events, all partitions), as JSON.
    pub async fn dead_letters(&self) -> Vec<serde_json::Value> {
        self.records("dead-letter-events")
            .await
            .into_iter()
            .map(|(_, _, _, value)| value)
            .collect()
    }
}

/// One record read back from the broker.
#[derive(Debug)]
pub struct ProducedEvent {
    /// Partition it landed on.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Record key.
    pub key: String,
    /// The parsed envelope.
    pub envelope: devconnect::events::Envelope,
    /// The raw JSON, to check field names on the wire.
    pub raw: serde_json::Value,
}

/// moto_server: a local double of the AWS APIs, in memory.
pub struct Moto;

impl Kind for Moto {
    const WHAT: &'static str = "moto_server";

    fn command(&self, port: u16, _dir: &Path) -> Command {
        let mut command = Command::new(binary("MOTO_SERVER_BIN", "moto_server", "moto-venv/bin/moto_server"));
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        command
    }
}

/// A moto server (AWS API double, in-memory) that lives as long as this value.
pub type MotoServer = Server<Moto>;

impl Server<Moto> {
    /// Starts one on a free port. The binary is `$MOTO_SERVER_BIN` (set by ./infra/local/test),
    /// else `moto_server` on PATH, else the venv ./infra/local/test installs.
    pub async fn start() -> anyhow::Result<Self> {
        Self::launch_on(Moto, free_port).await
    }

    /// `http://127.0.0.1:<port>`, for the SDK's endpoint override.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server of `kind` that will start on `port`, not yet running.
    fn on<K: Kind>(port: u16, kind: K) -> Server<K> {
        Server {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            kind,
        }
    }

    /// The pid the Redis answering on `url` reports for itself.
    async fn answering_pid(url: &str) -> u32 {
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
        let line = info.lines().find_map(|l| l.strip_prefix("process_id:")).unwrap();
        line.trim().parse().unwrap()
    }

    #[test]
    fn cluster_node_ports_leave_room_for_a_free_cluster_bus_port() {
        for _ in 0..50 {
            let port = free_cluster_port();
            assert!(
                port <= 55_535,
                "{port}: redis-server refuses a cluster node above 55,535"
            );
        }
    }

    #[tokio::test]
    async fn a_redis_started_on_a_taken_port_fails_instead_of_attaching_to_the_other() {
        let first = RedisServer::start().await.unwrap();
        let mut second = on(first.port, Redis { cluster_enabled: false });
        let err = second.restart().await.unwrap_err();
        assert!(err.is::<PortTaken>(), "{err:#}");
        assert!(second.pid().is_none(), "the second child is not left running");
        assert_eq!(answering_pid(&first.url()).await, first.pid().unwrap());
    }

    #[tokio::test]
    async fn a_redis_whose_port_is_taken_starts_on_a_fresh_one_and_is_the_one_answering() {
        let stranger = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = stranger.local_addr().unwrap().port();
        let mut ports = [taken].into_iter().chain(std::iter::repeat_with(free_port));
        let server = RedisServer::launch_on(Redis { cluster_enabled: false }, || ports.next().unwrap())
            .await
            .unwrap();
        assert_ne!(server.port, taken);
        assert_eq!(answering_pid(&server.url()).await, server.pid().unwrap());
    }

    #[tokio::test]
    async fn a_broker_started_on_a_taken_port_fails_instead_of_attaching() {
        let stranger = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut broker = on(stranger.local_addr().unwrap().port(), Tansu { topics: Vec::new() });
        let err = broker.restart().await.unwrap_err();
        assert!(err.is::<PortTaken>(), "{err:#}");
    }

    #[tokio::test]
    async fn a_moto_server_started_on_a_taken_port_fails_instead_of_attaching() {
        let stranger = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut moto = on(stranger.local_addr().unwrap().port(), Moto);
        let err = moto.relaunch().await.unwrap_err();
        assert!(err.is::<PortTaken>(), "{err:#}");
    }

    #[tokio::test]
    async fn a_start_gives_up_after_a_bounded_number_of_taken_ports() {
        let mut tries = 0;
        let outcome: anyhow::Result<(u16, ())> = on_a_free_port(free_port, async |port| {
            tries += 1;
            Err(PortTaken { port, what: "nothing" }.into())
        })
        .await;
        assert!(outcome.is_err());
        assert_eq!(tries, START_ATTEMPTS);
    }
}
