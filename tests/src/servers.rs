//! Child processes: a private redis-server (or a private 3-master Redis Cluster), a
//! private tansu broker and a private moto server (a local double of the AWS APIs, for
//! endpoint discovery).

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use rskafka::client::{Client, ClientBuilder};

/// A port the OS says is free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn binary(env: &str, name: &str) -> PathBuf {
    let cached = || {
        let p = PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/devconnect/bin")
            .join(name);
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

async fn wait_for_port(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during startup: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{what} did not listen on {port} within 15 s")
}

/// A redis-server that lives as long as this value.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    cluster_enabled: bool,
}

impl RedisServer {
    /// Starts one on a free port, persisting nothing.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_node(false).await
    }

    async fn start_node(cluster_enabled: bool) -> anyhow::Result<Self> {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir()?,
            cluster_enabled,
        };
        server.restart().await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (simulating an outage); its data is gone.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            end(child);
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered. See [`Self::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        signal(self.child.as_ref(), "-STOP", "redis-server")
    }

    /// Lets a paused server run again (SIGCONT), with its data and connections intact.
    pub fn resume(&self) -> anyhow::Result<()> {
        signal(self.child.as_ref(), "-CONT", "redis-server")
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut command = Command::new(binary("REDIS_SERVER_BIN", "redis-server"));
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path());
        if self.cluster_enabled {
            let config_file = format!("nodes-{}.conf", self.port);
            command.args(["--cluster-enabled", "yes", "--cluster-config-file", &config_file]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (set REDIS_SERVER_BIN or install redis-server)")?;
        wait_for_port(self.port, &mut child, "redis-server").await?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
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
        let cli = binary("REDIS_CLI_BIN", "redis-cli");
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

/// A tansu broker (Kafka protocol, in-memory storage) that lives as long as this value.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    topics: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts one on a free port and creates `topics` with 3 partitions each.
    pub async fn start(topics: &[&str]) -> anyhow::Result<Self> {
        let mut broker = Self {
            port: free_port(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            child: None,
            dir: tempfile::tempdir()?,
        };
        broker.restart().await?;
        Ok(broker)
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills it (simulating an outage). Memory storage: its records are gone.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            end(child);
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered. See [`Self::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        signal(self.child.as_ref(), "-STOP", "tansu")
    }

    /// Lets a paused broker run again (SIGCONT), with its records and connections intact.
    pub fn resume(&self) -> anyhow::Result<()> {
        signal(self.child.as_ref(), "-CONT", "tansu")
    }

    /// Starts it again on the same port, with the topics re-created.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut child = Command::new(binary("TANSU_BIN", "tansu"))
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            // tansu reads a .env from its working directory; keep it out of the checkout.
            .current_dir(self.dir.path())
            .env_remove("SCHEMA_REGISTRY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tansu (set TANSU_BIN or run ./infra/local/test, which installs it)")?;
        wait_for_port(self.port, &mut child, "tansu").await?;
        self.child = Some(child);
        let client = self.client().await?;
        let controller = client.controller_client()?;
        for topic in &self.topics {
            controller
                .create_topic(topic, 3, 1, 5_000)
                .await
                .with_context(|| format!("creating topic {topic}"))?;
        }
        Ok(())
    }

    /// A fresh Kafka client (retries while the broker finishes starting).
    pub async fn client(&self) -> anyhow::Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ClientBuilder::new(vec![self.address()]).build().await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A moto server (AWS API double, in-memory) that lives as long as this value.
pub struct MotoServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl MotoServer {
    /// Starts one on a free port. The binary is `$MOTO_SERVER_BIN` (set by ./infra/local/test),
    /// else `moto_server` on PATH, else the venv ./infra/local/test installs.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port();
        let venv = || {
            let p = PathBuf::from(std::env::var_os("HOME")?).join(".cache/devconnect/moto-venv/bin/moto_server");
            p.is_file().then_some(p)
        };
        let bin = std::env::var_os("MOTO_SERVER_BIN")
            .map(PathBuf::from)
            .or_else(|| which("moto_server"))
            .or_else(venv)
            .unwrap_or_else(|| "moto_server".into());
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server (set MOTO_SERVER_BIN or run ./infra/local/test, which installs it)")?;
        if let Err(e) = wait_for_port(port, &mut child, "moto_server").await {
            end(child);
            return Err(e);
        }
        Ok(Self { port, child })
    }

    /// `http://127.0.0.1:<port>`, for the SDK's endpoint override.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait(); // reap it: no zombie per test
    }
}
