//! Endpoint discovery: turns AWS resource names into addresses, once, at init.
//!
//! The SAM template can pass resource names (an MSK cluster ARN, an ElastiCache
//! cache) instead of endpoints, so nothing has to be copied from the console. These
//! are control-plane calls: made once per container in `AppState::connect`, never per
//! request. When the configuration already has endpoints and does not use MSK IAM,
//! no AWS configuration is even loaded, so the local stack never touches AWS.
//!
//! Every lookup is bounded by [`DISCOVERY_TIMEOUT`] in total: a function in a VPC
//! subnet with no route to the AWS APIs would otherwise sit in its TCP connect or
//! wait for an answer until Lambda kills the init at 10 s, with nothing in the log
//! that says why. Expiry fails with [`Problem::TimedOut`], which names the likely cause.

use std::{error::Error, fmt::Debug, future::Future, time::Duration};

use aws_config::{timeout::TimeoutConfig, SdkConfig};
use aws_sdk_elasticache::types::{Endpoint, ReplicationGroup, ServerlessCache};
use aws_sdk_kafka::{
    error::{DisplayErrorContext, SdkError},
    operation::get_bootstrap_brokers::GetBootstrapBrokersOutput,
};
use tokio::time::Instant;

use crate::{
    config::{Config, KafkaSecurity, KafkaSource, RedisSource},
    kafka_connection::{KafkaConnection, KafkaConnectionError},
};

/// The whole of discovery (every AWS call of one `resolve`) ends within this: half
/// of Lambda's 10 s init limit, so a stuck lookup fails with our message, not Lambda's.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SDK's own bound on one operation (all its attempts), inside
/// [`DISCOVERY_TIMEOUT`] so the SDK's timeout error, with its context, usually fires first.
pub const DISCOVERY_OPERATION_TIMEOUT: Duration = Duration::from_millis(4_500);

/// The SDK's bound on one attempt: a healthy control-plane call answers in well under
/// a second, so two attempts fit in [`DISCOVERY_OPERATION_TIMEOUT`].
pub const DISCOVERY_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// What an AWS API call that never answers most likely means inside a VPC.
pub const NO_ROUTE_HINT: &str = "no route to the AWS API from the function's subnet: \
add a NAT gateway or the kafka/elasticache VPC interface endpoints";

/// Where this container's clients connect, known after init.
#[derive(Clone)]
pub struct Endpoints {
    /// redis:// or rediss:// URL, with `REDIS_AUTH_TOKEN` as its password when set (a secret).
    pub redis_url: String,
    /// The cache speaks Redis Cluster, as discovery found it: a replication group with
    /// cluster mode enabled, or ElastiCache Serverless (cluster mode only). A
    /// single-node client on a sharded cache would fail every key outside its shard
    /// with MOVED, so this overrides `REDIS_CLUSTER=false`. `false` for `REDIS_URL`,
    /// where only `REDIS_CLUSTER` can tell.
    pub redis_cluster: bool,
    /// Brokers and their TLS/SASL settings.
    pub kafka: KafkaConnection,
}

/// Why an endpoint could not be found, naming the variable whose resource was looked up.
#[derive(Debug, thiserror::Error)]
#[error("{var}={resource}: {problem}")]
pub struct DiscoveryError {
    /// The environment variable naming the resource.
    pub var: &'static str,
    /// The resource's name or ARN.
    pub resource: String,
    /// What went wrong.
    pub problem: Problem,
}

/// What went wrong while discovering one endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The AWS API call failed (permissions, wrong name, network).
    #[error("{operation} failed: {detail}")]
    Api {
        /// The AWS operation.
        operation: &'static str,
        /// The SDK error with its whole context (the SDK's own Display says only "service error").
        detail: String,
    },
    /// The AWS API call got no answer within the deadline.
    #[error("{operation} got no answer within {after:?}: {hint}", hint = NO_ROUTE_HINT)]
    TimedOut {
        /// The AWS operation.
        operation: &'static str,
        /// How long discovery had for it.
        after: Duration,
    },
    /// The API answered, but without the endpoint we need.
    #[error("the response has no {0}")]
    Missing(&'static str),
    /// A resource is named but there is no AWS configuration to look it up with.
    #[error("no AWS configuration to look it up with")]
    NoAwsConfig,
    /// The URL does not parse (config only checks its scheme).
    #[error("not a valid URL")]
    InvalidUrl,
    /// Kafka security could not be set up (TLS, MSK IAM).
    #[error(transparent)]
    Kafka(#[from] KafkaConnectionError),
}

/// Resolves `config`'s endpoints, loading the AWS configuration from the environment only if needed.
pub async fn resolve(config: &Config) -> Result<Endpoints, DiscoveryError> {
    let needs_aws = !matches!(config.redis, RedisSource::Url(_))
        || matches!(config.kafka, KafkaSource::MskCluster(_))
        || config.kafka_security == KafkaSecurity::Iam;
    let aws = match needs_aws {
        true => Some(
            crate::aws_http::config_loader()
                .timeout_config(discovery_timeouts())
                .load()
                .await,
        ),
        false => None,
    };
    resolve_with(config, aws.as_ref()).await
}

/// Resolves `config`'s endpoints with `aws` (tests pass one pointed at a local AWS double).
/// Every AWS call shares one deadline, [`DISCOVERY_TIMEOUT`] from now.
pub async fn resolve_with(config: &Config, aws: Option<&SdkConfig>) -> Result<Endpoints, DiscoveryError> {
    let deadline = Instant::now() + DISCOVERY_TIMEOUT;
    let token = config.redis_auth_token.as_deref();
    let (redis_url, redis_cluster) = match &config.redis {
        RedisSource::Url(url) => (
            with_auth_token(url, token).map_err(|problem| DiscoveryError {
                var: "REDIS_URL",
                resource: "<redacted>".into(),
                problem,
            })?,
            false,
        ),
        RedisSource::ServerlessCache(name) => {
            let err = |problem| DiscoveryError {
                var: "ELASTICACHE_SERVERLESS_CACHE_NAME",
                resource: name.clone(),
                problem,
            };
            let cache = describe_serverless_cache(need(aws, &err)?, name, deadline)
                .await
                .map_err(err)?;
            (serverless_cache_url(&cache, token).map_err(err)?, true)
        }
        RedisSource::ReplicationGroup(id) => {
            let err = |problem| DiscoveryError {
                var: "ELASTICACHE_REPLICATION_GROUP_ID",
                resource: id.clone(),
                problem,
            };
            let group = describe_replication_group(need(aws, &err)?, id, deadline)
                .await
                .map_err(err)?;
            (
                replication_group_url(&group, token).map_err(err)?,
                replication_group_is_cluster(&group),
            )
        }
    };
    let (brokers, var, resource) = match &config.kafka {
        KafkaSource::Brokers(brokers) => (brokers.clone(), "KAFKA_BROKERS", brokers.join(",")),
        KafkaSource::MskCluster(arn) => {
            let err = |problem| DiscoveryError {
                var: "MSK_CLUSTER_ARN",
                resource: arn.clone(),
                problem,
            };
            let output = get_bootstrap_brokers(need(aws, &err)?, arn, deadline)
                .await
                .map_err(err)?;
            let brokers = msk_brokers(&output, config.kafka_security).map_err(err)?;
            (brokers, "MSK_CLUSTER_ARN", arn.clone())
        }
    };
    let kafka = KafkaConnection::new(brokers, config.kafka_security, aws).map_err(|e| DiscoveryError {
        var,
        resource,
        problem: e.into(),
    })?;
    Ok(Endpoints {
        redis_url,
        redis_cluster,
        kafka,
    })
}

/// `resolve` loads the AWS configuration whenever a resource is named, so this only fails for callers of `resolve_with`.
fn need<'a>(
    aws: Option<&'a SdkConfig>,
    err: &impl Fn(Problem) -> DiscoveryError,
) -> Result<&'a SdkConfig, DiscoveryError> {
    aws.ok_or_else(|| err(Problem::NoAwsConfig))
}

/// The SDK's timeouts for discovery calls (applied on top of whatever `aws` carries).
fn discovery_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(DISCOVERY_OPERATION_TIMEOUT)
        .operation_attempt_timeout(DISCOVERY_ATTEMPT_TIMEOUT)
        .build()
}

/// Awaits one AWS call until `deadline`; an SDK timeout and the outer one both become
/// [`Problem::TimedOut`] (the outer one also covers what the SDK's timeouts do not,
/// such as loading credentials).
async fn call<T, E, R>(
    operation: &'static str,
    deadline: Instant,
    send: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<T, Problem>
where
    E: Error + Send + Sync + 'static,
    R: Debug,
{
    let timed_out = Problem::TimedOut {
        operation,
        after: DISCOVERY_TIMEOUT,
    };
    match tokio::time::timeout_at(deadline, send).await {
        Err(_) | Ok(Err(SdkError::TimeoutError(_))) => Err(timed_out),
        Ok(Err(e)) => Err(Problem::Api {
            operation,
            detail: DisplayErrorContext(e).to_string(),
        }),
        Ok(Ok(output)) => Ok(output),
    }
}

async fn get_bootstrap_brokers(
    aws: &SdkConfig,
    arn: &str,
    deadline: Instant,
) -> Result<GetBootstrapBrokersOutput, Problem> {
    let config = aws_sdk_kafka::config::Builder::from(aws)
        .timeout_config(discovery_timeouts())
        .build();
    let client = aws_sdk_kafka::Client::from_conf(config);
    let send = client.get_bootstrap_brokers().cluster_arn(arn).send();
    call("kafka:GetBootstrapBrokers", deadline, send).await
}

fn elasticache(aws: &SdkConfig) -> aws_sdk_elasticache::Client {
    let config = aws_sdk_elasticache::config::Builder::from(aws)
        .timeout_config(discovery_timeouts())
        .build();
    aws_sdk_elasticache::Client::from_conf(config)
}

async fn describe_serverless_cache(aws: &SdkConfig, name: &str, deadline: Instant) -> Result<ServerlessCache, Problem> {
    let client = elasticache(aws);
    let send = client.describe_serverless_caches().serverless_cache_name(name).send();
    call("elasticache:DescribeServerlessCaches", deadline, send)
        .await?
        .serverless_caches
        .and_then(|caches| caches.into_iter().next())
        .ok_or(Problem::Missing("serverless cache"))
}

async fn describe_replication_group(aws: &SdkConfig, id: &str, deadline: Instant) -> Result<ReplicationGroup, Problem> {
    let client = elasticache(aws);
    let send = client.describe_replication_groups().replication_group_id(id).send();
    call("elasticache:DescribeReplicationGroups", deadline, send)
        .await?
        .replication_groups
        .and_then(|groups| groups.into_iter().next())
        .ok_or(Problem::Missing("replication group"))
}

/// The broker list MSK offers for `security` (each kind listens on its own port).
pub fn msk_brokers(output: &GetBootstrapBrokersOutput, security: KafkaSecurity) -> Result<Vec<String>, Problem> {
    let (list, field) = match security {
        KafkaSecurity::Plaintext => (output.bootstrap_broker_string(), "BootstrapBrokerString"),
        KafkaSecurity::Tls => (output.bootstrap_broker_string_tls(), "BootstrapBrokerStringTls"),
        KafkaSecurity::Iam => (
            output.bootstrap_broker_string_sasl_iam(),
            "BootstrapBrokerStringSaslIam",
        ),
    };
    let brokers: Vec<String> = list
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(String::from)
        .collect();
    match brokers.is_empty() {
        true => Err(Problem::Missing(field)),
        false => Ok(brokers),
    }
}

/// A serverless cache's URL: always TLS (serverless caches require it).
pub fn serverless_cache_url(cache: &ServerlessCache, token: Option<&str>) -> Result<String, Problem> {
    endpoint_url(cache.endpoint(), true, token).ok_or(Problem::Missing("Endpoint"))
}

/// Whether a replication group needs a Redis Cluster client: `ClusterEnabled` says so
/// (cluster mode enabled, even with one shard, serves CLUSTER commands and answers
/// MOVED during resharding); an absent flag means a group from before cluster mode.
pub fn replication_group_is_cluster(group: &ReplicationGroup) -> bool {
    group.cluster_enabled().unwrap_or(false)
}

/// A replication group's URL: the configuration endpoint in cluster mode, else the
/// primary's; rediss:// when it encrypts in transit.
pub fn replication_group_url(group: &ReplicationGroup, token: Option<&str>) -> Result<String, Problem> {
    let tls = group.transit_encryption_enabled().unwrap_or(false);
    match replication_group_is_cluster(group) {
        true => {
            endpoint_url(group.configuration_endpoint(), tls, token).ok_or(Problem::Missing("ConfigurationEndpoint"))
        }
        false => endpoint_url(
            group.node_groups().first().and_then(|g| g.primary_endpoint()),
            tls,
            token,
        )
        .ok_or(Problem::Missing("NodeGroups[0].PrimaryEndpoint")),
    }
}

fn endpoint_url(endpoint: Option<&Endpoint>, tls: bool, token: Option<&str>) -> Option<String> {
    let endpoint = endpoint?;
    let scheme = if tls { "rediss" } else { "redis" };
    let url = format!("{scheme}://{}:{}", endpoint.address()?, endpoint.port().unwrap_or(6379));
    with_auth_token(&url, token).ok()
}

/// Puts `token` in the URL as the AUTH password (percent-encoded), unless the URL has one.
fn with_auth_token(url: &str, token: Option<&str>) -> Result<String, Problem> {
    let Some(token) = token else {
        return Ok(url.to_string());
    };
    let mut parsed = url::Url::parse(url).map_err(|_| Problem::InvalidUrl)?;
    if parsed.password().is_none() && parsed.set_password(Some(token)).is_err() {
        return Err(Problem::InvalidUrl);
    }
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_elasticache::types::NodeGroup;
    use redis::IntoConnectionInfo;

    use super::*;

    fn endpoint(address: &str, port: i32) -> Endpoint {
        Endpoint::builder().address(address).port(port).build()
    }

    fn brokers_output() -> GetBootstrapBrokersOutput {
        GetBootstrapBrokersOutput::builder()
            .bootstrap_broker_string("b-1.dc:9092,b-2.dc:9092")
            .bootstrap_broker_string_tls("b-1.dc:9094,b-2.dc:9094")
            .bootstrap_broker_string_sasl_iam("b-1.dc:9098,b-2.dc:9098")
            .build()
    }

    #[test]
    fn msk_brokers_are_picked_per_kafka_security() {
        let output = brokers_output();
        assert_eq!(
            msk_brokers(&output, KafkaSecurity::Plaintext).unwrap(),
            ["b-1.dc:9092", "b-2.dc:9092"]
        );
        assert_eq!(
            msk_brokers(&output, KafkaSecurity::Tls).unwrap(),
            ["b-1.dc:9094", "b-2.dc:9094"]
        );
        assert_eq!(
            msk_brokers(&output, KafkaSecurity::Iam).unwrap(),
            ["b-1.dc:9098", "b-2.dc:9098"]
        );
    }

    #[test]
    fn an_msk_cluster_without_iam_brokers_names_the_missing_field() {
        let output = GetBootstrapBrokersOutput::builder()
            .bootstrap_broker_string_tls("b-1.dc:9094")
            .build();
        let problem = msk_brokers(&output, KafkaSecurity::Iam).unwrap_err();
        assert!(problem.to_string().contains("BootstrapBrokerStringSaslIam"));
    }

    #[test]
    fn a_serverless_cache_is_always_rediss_with_the_auth_token() {
        let cache = ServerlessCache::builder()
            .serverless_cache_name("dc-cache")
            .endpoint(endpoint("dc-cache-abc.serverless.euw1.cache.amazonaws.com", 6379))
            .build();
        assert_eq!(
            serverless_cache_url(&cache, None).unwrap(),
            "rediss://dc-cache-abc.serverless.euw1.cache.amazonaws.com:6379"
        );
        assert_eq!(
            serverless_cache_url(&cache, Some("t0ken")).unwrap(),
            "rediss://:t0ken@dc-cache-abc.serverless.euw1.cache.amazonaws.com:6379"
        );
    }

    #[test]
    fn a_serverless_cache_still_creating_has_no_endpoint() {
        let cache = ServerlessCache::builder().serverless_cache_name("dc-cache").build();
        assert!(serverless_cache_url(&cache, None)
            .unwrap_err()
            .to_string()
            .contains("Endpoint"));
    }

    #[test]
    fn a_replication_group_uses_its_primary_or_its_configuration_endpoint() {
        let primary = ReplicationGroup::builder()
            .cluster_enabled(false)
            .transit_encryption_enabled(false)
            .node_groups(
                NodeGroup::builder()
                    .primary_endpoint(endpoint("master.dc.euw1.cache.amazonaws.com", 6379))
                    .build(),
            )
            .build();
        assert_eq!(
            replication_group_url(&primary, None).unwrap(),
            "redis://master.dc.euw1.cache.amazonaws.com:6379"
        );
        assert!(!replication_group_is_cluster(&primary));
        let cluster = ReplicationGroup::builder()
            .cluster_enabled(true)
            .transit_encryption_enabled(true)
            .configuration_endpoint(endpoint("clustercfg.dc.euw1.cache.amazonaws.com", 6380))
            .build();
        assert_eq!(
            replication_group_url(&cluster, Some("t0ken")).unwrap(),
            "rediss://:t0ken@clustercfg.dc.euw1.cache.amazonaws.com:6380"
        );
        assert!(replication_group_is_cluster(&cluster));
        assert!(!replication_group_is_cluster(&ReplicationGroup::builder().build()));
    }

    #[test]
    fn an_auth_token_with_special_characters_reaches_redis_intact() {
        let token = "p@ss/w:rd#1%";
        let url = with_auth_token("rediss://cache.example:6379", Some(token)).unwrap();
        let info = url.as_str().into_connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some(token));
    }

    #[test]
    fn a_url_that_already_has_a_password_keeps_it() {
        let url = with_auth_token("rediss://:mine@cache.example:6379", Some("other")).unwrap();
        assert_eq!(url, "rediss://:mine@cache.example:6379");
    }

    #[tokio::test]
    async fn explicit_endpoints_resolve_without_aws() {
        let vars: HashMap<String, String> = [
            ("REDIS_URL", "redis://127.0.0.1:7000"),
            ("KAFKA_BROKERS", "127.0.0.1:9092"),
            ("KAFKA_SECURITY", "tls"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = Config::from_map(&vars).unwrap();
        let endpoints = resolve(&config).await.unwrap();
        assert_eq!(endpoints.redis_url, "redis://127.0.0.1:7000");
        assert!(!endpoints.redis_cluster, "a URL says nothing about cluster mode");
        assert_eq!(endpoints.kafka.brokers(), ["127.0.0.1:9092"]);
        assert_eq!(endpoints.kafka.security(), KafkaSecurity::Tls);
    }

    #[tokio::test]
    async fn a_named_resource_without_aws_configuration_fails_naming_its_variable() {
        let vars: HashMap<String, String> = [("ELASTICACHE_SERVERLESS_CACHE_NAME", "dc-cache")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_map(&vars).unwrap();
        let err = resolve_with(&config, None).await.err().unwrap();
        assert_eq!(err.var, "ELASTICACHE_SERVERLESS_CACHE_NAME");
        assert!(err.to_string().contains("dc-cache"));
    }
}
