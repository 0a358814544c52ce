//! The Redis connection every function shares.
//!
//! On a single node (or a primary with replicas) it is a
//! [`redis::aio::ConnectionManager`]: multiplexed (one TCP connection serves all
//! concurrent requests of a container) and reconnecting by itself. On Redis Cluster
//! (ElastiCache Serverless, cluster mode enabled) it is a
//! [`redis::cluster_async::ClusterConnection`], which follows the slot map and
//! MOVED/ASK redirects. Both are cheap to clone, and connection and response timeouts
//! are bounded so a dead Redis turns into a quick 503 instead of a hung request.
//!
//! Every atomic operation (Lua script, MULTI) touches one hash slot (see
//! [`crate::keys`]), so it runs unchanged on a cluster. Plain pipelines may touch
//! several slots on purpose (a user record and the `users:{all}` index; both users'
//! projections); the cluster client refuses those with CROSSSLOT, so
//! [`StoreConnection`] splits them into one pipeline per slot, sends them
//! concurrently and puts the replies back in order. On a single node nothing is
//! split: the round trips stay what they were.

use std::{collections::HashMap, time::Duration};

use futures::{future::try_join_all, FutureExt};
use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot},
    Arg, Cmd, Pipeline, RedisFuture, Value,
};

/// A cheap-to-clone handle on Redis.
#[derive(Clone)]
pub struct Store {
    conn: StoreConnection,
    /// The projection generations this container last saw (see [`crate::projection`]),
    /// shared by clones: readers name keys from it without an extra round trip.
    generations: std::sync::Arc<crate::projection::Generations>,
}

/// One connection type for both deployments, so call sites do not care which it is.
#[derive(Clone)]
pub enum StoreConnection {
    /// A single endpoint (a standalone node, or the primary of a replication group).
    Single(ConnectionManager),
    /// Redis Cluster: commands are routed to the node that owns their slot.
    Cluster(ClusterConnection),
}

impl Store {
    /// Connects once, at init; `rediss://` URLs use TLS (ElastiCache in-transit encryption).
    /// With `cluster`, `url` is one seed node (or the configuration endpoint) of a Redis Cluster.
    pub async fn connect(url: &str, timeout: Duration, cluster: bool) -> redis::RedisResult<Self> {
        crate::tls::install_crypto_provider();
        let connecting = async {
            if cluster {
                let client = ClusterClientBuilder::new([url])
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Room for a MOVED after a failover or resharding, but no long retry loop.
                    .retries(2)
                    .build()?;
                Ok::<_, redis::RedisError>(StoreConnection::Cluster(client.get_async_connection().await?))
            } else {
                let client = redis::Client::open(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                Ok(StoreConnection::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
        };
        let conn = tokio::time::timeout(timeout * 3, connecting)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out connecting to redis")))??;
        Ok(Self {
            conn,
            generations: Default::default(),
        })
    }

    /// A handle for one operation; clones share the same multiplexed connection(s).
    pub fn conn(&self) -> StoreConnection {
        self.conn.clone()
    }

    /// The projection generations last seen on this Redis.
    pub fn generations(&self) -> &crate::projection::Generations {
        &self.generations
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, StoreConnection::Cluster(_))
    }

    /// The nodes a `SCAN` must visit to see every key: SCAN walks only the keys of the
    /// node it runs on, so on a cluster that is every primary (asked of the cluster now,
    /// one round trip), on a single endpoint the endpoint.
    pub async fn scan_nodes(&self) -> redis::RedisResult<Vec<ScanNode>> {
        let StoreConnection::Cluster(c) = &self.conn else {
            return Ok(vec![ScanNode(None)]);
        };
        let every_primary = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let replies = c.clone().route_command(redis::cmd("PING"), every_primary).await?;
        let Value::Map(by_address) = replies else {
            return Err(scan_error("PING on every primary: no reply per node"));
        };
        by_address
            .into_iter()
            .map(|(address, _)| {
                let address: String = redis::from_redis_value(address)?;
                let (host, port) = address
                    .rsplit_once(':')
                    .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
                    .ok_or_else(|| scan_error("a cluster node address without a port"))?;
                Ok(ScanNode(Some((host, port))))
            })
            .collect()
    }

    /// One `SCAN cursor MATCH pattern COUNT count` page on `node` (see [`Store::scan_nodes`]):
    /// the next cursor (0 when the node is done) and the keys of this page.
    pub async fn scan_page(
        &self,
        node: &ScanNode,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> redis::RedisResult<(u64, Vec<String>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count);
        match (&self.conn, &node.0) {
            (StoreConnection::Cluster(c), Some((host, port))) => {
                let on_node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                Ok(redis::from_redis_value(c.clone().route_command(scan, on_node).await?)?)
            }
            (StoreConnection::Single(_), None) => scan.query_async(&mut self.conn()).await,
            _ => Err(scan_error("a scan node of another kind of store")),
        }
    }
}

/// One node a key scan visits (see [`Store::scan_nodes`]): a cluster primary's address,
/// or `None` for the one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanNode(Option<(String, u16)>);

fn scan_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "redis scan", what.to_string()))
}

impl ConnectionLike for StoreConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            // A transaction must be one slot anyway; let the server say so if it is not.
            Self::Cluster(c) => match split_by_slot(pipeline).filter(|_| !pipeline.is_transaction()) {
                None => c.req_packed_commands(pipeline, offset, count),
                Some(parts) => send_split(c.clone(), parts, pipeline.len()).boxed(),
            },
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// One slot's share of a split pipeline: the sub-pipeline and, for each of its
/// commands, the index of the reply in the original pipeline (`None`: a copy of a
/// keyless command whose reply another part already gives).
struct Part {
    pipeline: Pipeline,
    origin: Vec<Option<usize>>,
}

/// The key a command is routed by, if it has one. Covers what this code pipelines:
/// EVAL/EVALSHA carry their first key after the key count; SCRIPT, PING and the like
/// have none; every other command has its key first.
fn routing_key(cmd: &Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .take(4)
        .map(|a| match a {
            Arg::Simple(bytes) => bytes,
            _ => &[],
        })
        .collect();
    let arg = |i: usize| args.get(i).copied();
    let name = arg(0)?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" => {
            let numkeys = std::str::from_utf8(arg(2)?).ok()?.parse::<usize>().ok()?;
            if numkeys == 0 {
                None
            } else {
                arg(3)
            }
        }
        b"SCRIPT" | b"PING" | b"ECHO" | b"PUBLISH" | b"INFO" | b"CLUSTER" => None,
        _ => arg(1),
    }
}

/// Splits a pipeline whose keys span several slots into one pipeline per slot, in
/// first-seen order. Keyless commands (the `SCRIPT LOAD` in front of EVALSHAs) go into
/// every part, so each node that runs a script has loaded it. `None` if the pipeline
/// touches at most one slot and can be sent as it is.
fn split_by_slot(pipeline: &Pipeline) -> Option<Vec<Part>> {
    let slots: Vec<Option<Slot>> = pipeline.cmd_iter().map(|c| routing_key(c).map(Slot::for_key)).collect();
    let mut order: Vec<Slot> = Vec::new();
    for slot in slots.iter().flatten() {
        if !order.contains(slot) {
            order.push(*slot);
        }
    }
    if order.len() < 2 {
        return None;
    }
    let index: HashMap<Slot, usize> = order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let mut parts: Vec<Part> = order
        .iter()
        .map(|_| Part {
            pipeline: redis::pipe(),
            origin: Vec::new(),
        })
        .collect();
    for (i, (cmd, slot)) in pipeline.cmd_iter().zip(&slots).enumerate() {
        match slot {
            Some(slot) => {
                let part = &mut parts[index[slot]];
                part.pipeline.add_command(cmd.clone());
                part.origin.push(Some(i));
            }
            None => {
                for (n, part) in parts.iter_mut().enumerate() {
                    part.pipeline.add_command(cmd.clone());
                    part.origin.push((n == 0).then_some(i));
                }
            }
        }
    }
    Some(parts)
}

/// Sends the parts of a split pipeline concurrently and returns every reply at its
/// original position, as one pipeline would have.
async fn send_split(conn: ClusterConnection, parts: Vec<Part>, len: usize) -> redis::RedisResult<Vec<Value>> {
    let replies = try_join_all(parts.iter().map(|part| {
        let mut conn = conn.clone();
        async move { conn.req_packed_commands(&part.pipeline, 0, part.pipeline.len()).await }
    }))
    .await?;
    let mut out = vec![Value::Nil; len];
    for (part, values) in parts.iter().zip(replies) {
        for (origin, value) in part.origin.iter().zip(values) {
            if let Some(i) = origin {
                out[*i] = value;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use redis::{ConnectionAddr, IntoConnectionInfo, Script};

    use super::split_by_slot;
    use crate::keys;

    #[test]
    fn a_one_slot_pipeline_is_not_split() {
        let mut pipe = redis::pipe();
        pipe.hgetall(keys::user("a")).get(keys::public_profile("a"));
        assert!(split_by_slot(&pipe).is_none());
    }

    #[test]
    fn a_cross_slot_pipeline_splits_per_slot_and_every_part_loads_the_script() {
        let script = Script::new("return 1");
        let mut pipe = redis::pipe();
        pipe.load_script(&script)
            .ignore()
            .invoke_script(&script.key(keys::presence("a")))
            .zadd(keys::ONLINE, "a", 1)
            .hset(keys::presence("a"), "online", 1);
        let parts = split_by_slot(&pipe).expect("two slots");
        let origins: Vec<_> = parts.iter().map(|p| p.origin.clone()).collect();
        assert_eq!(origins, vec![vec![Some(0), Some(1), Some(3)], vec![None, Some(2)]]);
        assert_eq!(parts[1].pipeline.len(), 2, "SCRIPT LOAD goes to the second slot too");
    }

    #[test]
    fn a_rediss_url_opens_as_a_tls_connection() {
        let info = "rediss://:t0ken@master.dc.euw1.cache.amazonaws.com:6379"
            .into_connection_info()
            .unwrap();
        match info.addr() {
            ConnectionAddr::TcpTls {
                host, port, insecure, ..
            } => {
                assert_eq!(
                    (host.as_str(), *port, *insecure),
                    ("master.dc.euw1.cache.amazonaws.com", 6379, false)
                );
            }
            other => panic!("expected TLS, got {other:?}"),
        }
        assert_eq!(info.redis_settings().password(), Some("t0ken"));
    }

    #[test]
    fn a_redis_url_stays_plain_tcp() {
        let info = "redis://127.0.0.1:6379".into_connection_info().unwrap();
        assert!(matches!(info.addr(), ConnectionAddr::Tcp(..)));
    }
}
