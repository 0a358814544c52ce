//! Endpoint discovery against a local AWS API double (moto): the resources are created
//! through the AWS SDK, then `discovery::resolve_with` looks them up as it would in AWS.
//! moto has no DescribeServerlessCaches or GetBootstrapBrokers; those response-to-endpoint
//! mappings are unit-tested in `shared/src/discovery.rs` on SDK output values.

use std::collections::HashMap;

use aws_config::{Region, SdkConfig};
use aws_sdk_elasticache::config::{Credentials, SharedCredentialsProvider};
use devconnect::{
    config::Config,
    discovery::{self, DiscoveryError, Endpoints},
};
use devconnect_tests::servers::MotoServer;

/// The SDK pointed at moto with dummy static credentials: nothing can reach real AWS.
async fn aws(moto: &MotoServer) -> SdkConfig {
    devconnect::aws_http::config_loader()
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.url())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "moto",
        )))
        .load()
        .await
}

fn config(pairs: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([("KAFKA_BROKERS".into(), "127.0.0.1:9092".into())]);
    vars.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_map(&vars).expect("config")
}

async fn create_group(aws: &SdkConfig, id: &str, cluster_mode: bool, tls: bool) {
    let mut request = aws_sdk_elasticache::Client::new(aws)
        .create_replication_group()
        .replication_group_id(id)
        .replication_group_description("devconnect test")
        .engine("redis")
        .cache_node_type("cache.t4g.micro")
        .transit_encryption_enabled(tls);
    request = match cluster_mode {
        true => request
            .cluster_mode(aws_sdk_elasticache::types::ClusterMode::Enabled)
            .num_node_groups(2),
        false => request.num_cache_clusters(1),
    };
    request.send().await.expect("CreateReplicationGroup on moto");
}

async fn resolve(aws: &SdkConfig, pairs: &[(&str, &str)]) -> Result<Endpoints, DiscoveryError> {
    discovery::resolve_with(&config(pairs), Some(aws)).await
}

#[tokio::test]
async fn a_replication_group_without_cluster_mode_resolves_to_its_primary() {
    let moto = MotoServer::start().await.expect("moto_server");
    let aws = aws(&moto).await;
    create_group(&aws, "dc-plain", false, false).await;
    let endpoints = resolve(&aws, &[("ELASTICACHE_REPLICATION_GROUP_ID", "dc-plain")])
        .await
        .unwrap();
    let url = url::Url::parse(&endpoints.redis_url).unwrap();
    assert_eq!(url.scheme(), "redis");
    assert!(url.host_str().unwrap().starts_with("master.dc-plain."), "{url}");
    assert_eq!(url.port(), Some(6379));
    assert_eq!(url.password(), None);
    assert!(
        !endpoints.redis_cluster,
        "a non-cluster group gets a single-node client"
    );
}

#[tokio::test]
async fn an_encrypted_replication_group_resolves_to_rediss_with_the_auth_token() {
    let moto = MotoServer::start().await.expect("moto_server");
    let aws = aws(&moto).await;
    create_group(&aws, "dc-tls", false, true).await;
    let endpoints = resolve(
        &aws,
        &[
            ("ELASTICACHE_REPLICATION_GROUP_ID", "dc-tls"),
            ("REDIS_AUTH_TOKEN", "s3cret-t0ken"),
        ],
    )
    .await
    .unwrap();
    let url = url::Url::parse(&endpoints.redis_url).unwrap();
    assert_eq!(url.scheme(), "rediss");
    assert_eq!(url.password(), Some("s3cret-t0ken"));
}

#[tokio::test]
async fn a_cluster_mode_replication_group_resolves_to_its_configuration_endpoint() {
    let moto = MotoServer::start().await.expect("moto_server");
    let aws = aws(&moto).await;
    create_group(&aws, "dc-cluster", true, true).await;
    let endpoints = resolve(&aws, &[("ELASTICACHE_REPLICATION_GROUP_ID", "dc-cluster")])
        .await
        .unwrap();
    assert!(
        endpoints.redis_url.starts_with("rediss://clustercfg.dc-cluster."),
        "{}",
        endpoints.redis_url
    );
}

/// moto answers `ClusterEnabled` in DescribeReplicationGroups, so this checks the
/// mapping on the wire: a sharded group is found to need a cluster client even though
/// `REDIS_CLUSTER` is unset (false), and `AppState::connect` uses
/// `REDIS_CLUSTER || Endpoints::redis_cluster`.
#[tokio::test]
async fn a_cluster_mode_replication_group_is_discovered_as_cluster_without_redis_cluster() {
    let moto = MotoServer::start().await.expect("moto_server");
    let aws = aws(&moto).await;
    create_group(&aws, "dc-sharded", true, false).await;
    let config = config(&[("ELASTICACHE_REPLICATION_GROUP_ID", "dc-sharded")]);
    assert!(!config.redis_cluster, "REDIS_CLUSTER is not set");
    let endpoints = discovery::resolve_with(&config, Some(&aws)).await.unwrap();
    assert!(endpoints.redis_cluster, "cluster mode must come from discovery");
}

#[tokio::test]
async fn an_unknown_replication_group_fails_naming_its_variable() {
    let moto = MotoServer::start().await.expect("moto_server");
    let aws = aws(&moto).await;
    let err = resolve(&aws, &[("ELASTICACHE_REPLICATION_GROUP_ID", "no-such-group")])
        .await
        .err()
        .unwrap();
    assert_eq!(err.var, "ELASTICACHE_REPLICATION_GROUP_ID");
    let message = err.to_string();
    assert!(
        message.contains("no-such-group") && message.contains("DescribeReplicationGroups"),
        "{message}"
    );
}

#[tokio::test]
async fn an_msk_cluster_the_api_cannot_describe_fails_naming_msk_cluster_arn() {
    let moto = MotoServer::start().await.expect("moto_server");
    let aws = aws(&moto).await;
    let arn = "arn:aws:kafka:us-east-1:123456789012:cluster/missing/00000000-0000-0000-0000-000000000000-1";
    let err = discovery::resolve_with(
        &config(&[
            ("KAFKA_BROKERS", ""),
            ("MSK_CLUSTER_ARN", arn),
            ("KAFKA_SECURITY", "iam"),
        ]),
        Some(&aws),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.var, "MSK_CLUSTER_ARN");
    assert!(err.to_string().contains("GetBootstrapBrokers"), "{err}");
}

/// A TCP endpoint that accepts connections and never answers: what an AWS API looks
/// like from a subnet whose traffic is swallowed. Accepted sockets are held until the
/// listener task is aborted (on drop of the returned handle's owner).
async fn silent_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

/// Runs discovery for `pairs` against an endpoint that never answers; asserts it fails
/// within the deadline, naming `var`, `resource` and the likely cause.
async fn discovery_against_a_silent_endpoint_times_out(pairs: &[(&str, &str)], var: &str, resource: &str) {
    let (url, listener) = silent_endpoint().await;
    let aws = devconnect::aws_http::config_loader()
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "silent",
        )))
        .load()
        .await;
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        discovery::DISCOVERY_TIMEOUT * 3,
        discovery::resolve_with(&config(pairs), Some(&aws)),
    )
    .await
    .expect("discovery must end by itself");
    let elapsed = started.elapsed();
    listener.abort();
    let err = outcome.err().expect("discovery against a silent endpoint must fail");
    eprintln!("{var}: failed after {elapsed:?}: {err}");
    assert!(
        elapsed < discovery::DISCOVERY_TIMEOUT + std::time::Duration::from_secs(1),
        "took {elapsed:?}"
    );
    assert_eq!(err.var, var);
    let message = err.to_string();
    assert!(message.contains(resource), "{message}");
    assert!(message.contains(discovery::NO_ROUTE_HINT), "{message}");
    assert!(message.contains("NAT gateway"), "{message}");
}

#[tokio::test]
async fn an_msk_lookup_that_gets_no_answer_fails_within_the_deadline_naming_the_cluster_and_the_cause() {
    let arn = "arn:aws:kafka:us-east-1:123456789012:cluster/silent/00000000-0000-0000-0000-000000000000-1";
    discovery_against_a_silent_endpoint_times_out(
        &[
            ("KAFKA_BROKERS", ""),
            ("MSK_CLUSTER_ARN", arn),
            ("KAFKA_SECURITY", "iam"),
        ],
        "MSK_CLUSTER_ARN",
        arn,
    )
    .await;
}

#[tokio::test]
async fn a_cache_lookup_that_gets_no_answer_fails_within_the_deadline_naming_the_cache_and_the_cause() {
    discovery_against_a_silent_endpoint_times_out(
        &[("ELASTICACHE_SERVERLESS_CACHE_NAME", "dc-silent-cache")],
        "ELASTICACHE_SERVERLESS_CACHE_NAME",
        "dc-silent-cache",
    )
    .await;
}
