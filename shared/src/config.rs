//! Typed configuration, read from environment variables once per container.
//!
//! Every variable has a default that suits the local stack, so `cargo test` and
//! `./infra/local/run` need no setup; in AWS the SAM template sets them. A value
//! that is present but wrong fails init with a message naming the variable.
//!
//! Redis and Kafka may instead be named as AWS resources (an ElastiCache cache, an
//! MSK cluster), whose endpoints [`crate::discovery`] looks up once at init. Inside
//! Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set) there is no local fallback: a function
//! that was given neither fails at init instead of dialling 127.0.0.1.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use crate::events::Topic;

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable's name.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

/// Where Redis is: given as a URL, or an ElastiCache resource to look up at init.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisSource {
    /// `REDIS_URL`: redis:// or rediss:// (TLS).
    Url(String),
    /// `ELASTICACHE_SERVERLESS_CACHE_NAME`: a serverless cache (always TLS).
    ServerlessCache(String),
    /// `ELASTICACHE_REPLICATION_GROUP_ID`: a node-based cluster.
    ReplicationGroup(String),
}

impl fmt::Debug for RedisSource {
    // A URL may carry an AUTH token, so it is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(_) => f.write_str("Url(<redacted>)"),
            Self::ServerlessCache(name) => f.debug_tuple("ServerlessCache").field(name).finish(),
            Self::ReplicationGroup(id) => f.debug_tuple("ReplicationGroup").field(id).finish(),
        }
    }
}

/// Where the Kafka brokers are: given, or an MSK cluster to look up at init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KafkaSource {
    /// `KAFKA_BROKERS`: host:port bootstrap list.
    Brokers(Vec<String>),
    /// `MSK_CLUSTER_ARN`: its bootstrap brokers come from GetBootstrapBrokers.
    MskCluster(String),
}

/// `KAFKA_SECURITY`: how the Kafka client talks to the brokers (and which MSK broker list it asks for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KafkaSecurity {
    /// No TLS, no authentication (the local broker; MSK port 9092).
    #[default]
    Plaintext,
    /// TLS, no authentication (MSK port 9094).
    Tls,
    /// TLS plus SASL OAUTHBEARER with a SigV4-signed token (MSK IAM, port 9098).
    Iam,
}

impl FromStr for KafkaSecurity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "plaintext" => Ok(Self::Plaintext),
            "tls" => Ok(Self::Tls),
            "iam" => Ok(Self::Iam),
            _ => Err("expected plaintext, tls or iam".into()),
        }
    }
}

impl fmt::Display for KafkaSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plaintext => "plaintext",
            Self::Tls => "tls",
            Self::Iam => "iam",
        })
    }
}

/// Names of the Kafka topics (overridable so several stacks can share a cluster).
#[derive(Clone, Debug)]
pub struct Topics {
    /// USER_* events.
    pub user_events: String,
    /// CONNECTION_* events.
    pub connection_events: String,
    /// MESSAGE_* events.
    pub message_events: String,
    /// NOTIFICATION_CREATED.
    pub notification_events: String,
    /// EMAIL_REQUESTED: deliveries for the email sender.
    pub email_events: String,
    /// SMS_REQUESTED: deliveries for the SMS sender.
    pub sms_events: String,
    /// Derived metrics: DAILY_SUMMARY, MILESTONE.
    pub analytics_events: String,
    /// Records a consumer could not process.
    pub dead_letter_events: String,
}

impl Topics {
    /// Every topic's configured name, in [`Topic::ALL`] order (used to create them locally).
    pub fn all(&self) -> [&str; 8] {
        Topic::ALL.map(|topic| topic.name(self))
    }
}

/// Requests allowed per window, per tier.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    /// Per source IP, for requests without a session (signup, login).
    pub anonymous: u32,
    /// Per signed-in user on the free tier.
    pub free: u32,
    /// Per signed-in user on the premium tier.
    pub premium: u32,
    /// Length of one fixed window.
    pub window: Duration,
}

/// Everything a function reads from its environment.
#[derive(Clone)]
pub struct Config {
    /// `REDIS_URL`, or the ElastiCache cache to discover it from.
    pub redis: RedisSource,
    /// `REDIS_AUTH_TOKEN`: the Redis AUTH password, added to the URL (never printed).
    pub redis_auth_token: Option<String>,
    /// `REDIS_TIMEOUT_MS`: bound on connecting and on each command, so a dead Redis gives a 503, not a hang.
    pub redis_timeout: Duration,
    /// `REDIS_CLUSTER`: talk the Redis Cluster protocol (ElastiCache cluster mode enabled).
    /// Default false; an ElastiCache Serverless cache is always a cluster, whatever this says.
    pub redis_cluster: bool,
    /// `KAFKA_BROKERS`, or the MSK cluster to discover them from.
    pub kafka: KafkaSource,
    /// `KAFKA_SECURITY`.
    pub kafka_security: KafkaSecurity,
    /// `KAFKA_PRODUCE_TIMEOUT_MS`: how long a request waits for the broker before parking its event.
    pub produce_timeout: Duration,
    /// `TOPIC_*`.
    pub topics: Topics,
    /// `RATE_LIMIT_ANONYMOUS`, `RATE_LIMIT_FREE`, `RATE_LIMIT_PREMIUM`, `RATE_LIMIT_WINDOW_SECS`.
    pub rate_limits: RateLimits,
    /// `LOGIN_MAX_FAILURES`: failed logins per email allowed in one window.
    pub login_max_failures: u32,
    /// `LOGIN_FAILURE_WINDOW_SECS`.
    pub login_failure_window: Duration,
    /// `SESSION_TTL_SECS`.
    pub session_ttl: Duration,
    /// `SESSION_IDLE_TIMEOUT_SECS`: a session unused this long ends, whatever its absolute lifetime left.
    pub session_idle_timeout: Duration,
    /// `LOGIN_EMAIL_MAX_FAILURES`: failed logins per email from all addresses together in one
    /// window; far above `LOGIN_MAX_FAILURES` (which counts per email and client IP), so one
    /// address cannot lock a victim out, while many addresses together still hit a ceiling.
    pub login_email_max_failures: u32,
    /// `LOGIN_LOCK_BASE_SECS`: the first lock of an (email, IP) pair after `LOGIN_MAX_FAILURES`
    /// failures; it doubles with each further failure, up to the failure window.
    pub login_lock_base: Duration,
    /// `PROFILE_CACHE_TTL_SECS`.
    pub profile_cache_ttl: Duration,
    /// `MESSAGE_HISTORY_CAP`: messages kept per conversation (older ones are trimmed).
    pub message_history_cap: u32,
    /// `PRESENCE_TIMEOUT_SECS`: a user is online while their last heartbeat is younger than this.
    pub presence_timeout: Duration,
    /// `NOTIFICATIONS_CAP`: notifications kept per user (oldest dropped).
    pub notifications_cap: u32,
    /// `ADMIN_USER_IDS`: comma-separated user ids allowed to read analytics.
    pub admin_user_ids: Vec<String>,
    /// `COOKIE_SECURE`: add `Secure` to the session cookie (true in AWS, false on plain-http localhost).
    pub cookie_secure: bool,
    /// `REALTIME_MAX_SOCKETS_PER_USER`: open WebSocket connections per user; the oldest is
    /// closed when a new one exceeds it, so a leaked token cannot pin unbounded sockets.
    pub realtime_max_sockets_per_user: u32,
    /// `PUSH_MAX_CONNECTIONS_PER_BATCH`: connections one pusher batch pushes to; the rest
    /// of that batch's frames are counted and logged, not sent (see the realtime pusher).
    pub push_max_connections_per_batch: u32,
}

impl fmt::Debug for Config {
    // The Redis URL and token are secrets, so neither is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis", &self.redis)
            .field(
                "redis_auth_token",
                &self.redis_auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("redis_cluster", &self.redis_cluster)
            .field("kafka", &self.kafka)
            .field("kafka_security", &self.kafka_security)
            .field("topics", &self.topics)
            .field("rate_limits", &self.rate_limits)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from a map; tests use this instead of mutating the process environment.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { get: &get };
        // Inside Lambda there is no local Redis or broker to fall back on.
        let in_aws = env.optional("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let redis = redis_source(&env, in_aws)?;
        let kafka = kafka_source(&env, in_aws)?;
        Ok(Self {
            redis,
            redis_auth_token: env.optional("REDIS_AUTH_TOKEN"),
            redis_timeout: env.millis("REDIS_TIMEOUT_MS", 1_000)?,
            redis_cluster: env.parse("REDIS_CLUSTER", false)?,
            kafka,
            kafka_security: match env.optional("KAFKA_SECURITY") {
                None => KafkaSecurity::default(),
                Some(v) => v.parse().map_err(|reason| ConfigError {
                    var: "KAFKA_SECURITY",
                    reason: format!("{v:?}: {reason}"),
                })?,
            },
            produce_timeout: env.millis("KAFKA_PRODUCE_TIMEOUT_MS", 1_500)?,
            topics: Topics {
                user_events: env.string(Topic::User.env_var(), Topic::User.default_name())?,
                connection_events: env.string(Topic::Connection.env_var(), Topic::Connection.default_name())?,
                message_events: env.string(Topic::Message.env_var(), Topic::Message.default_name())?,
                notification_events: env.string(Topic::Notification.env_var(), Topic::Notification.default_name())?,
                email_events: env.string(Topic::Email.env_var(), Topic::Email.default_name())?,
                sms_events: env.string(Topic::Sms.env_var(), Topic::Sms.default_name())?,
                analytics_events: env.string(Topic::Analytics.env_var(), Topic::Analytics.default_name())?,
                dead_letter_events: env.string(Topic::DeadLetter.env_var(), Topic::DeadLetter.default_name())?,
            },
            rate_limits: RateLimits {
                anonymous: env.positive("RATE_LIMIT_ANONYMOUS", 60)?,
                free: env.positive("RATE_LIMIT_FREE", 300)?,
                premium: env.positive("RATE_LIMIT_PREMIUM", 1_200)?,
                window: Duration::from_secs(env.positive("RATE_LIMIT_WINDOW_SECS", 60)?.into()),
            },
            login_max_failures: env.positive("LOGIN_MAX_FAILURES", 5)?,
            login_failure_window: Duration::from_secs(env.positive("LOGIN_FAILURE_WINDOW_SECS", 900)?.into()),
            session_ttl: Duration::from_secs(env.positive("SESSION_TTL_SECS", 86_400)?.into()),
            session_idle_timeout: Duration::from_secs(env.positive("SESSION_IDLE_TIMEOUT_SECS", 1_800)?.into()),
            login_email_max_failures: env.positive("LOGIN_EMAIL_MAX_FAILURES", 100)?,
            login_lock_base: Duration::from_secs(env.positive("LOGIN_LOCK_BASE_SECS", 30)?.into()),
            profile_cache_ttl: Duration::from_secs(env.positive("PROFILE_CACHE_TTL_SECS", 1_800)?.into()),
            message_history_cap: env.positive("MESSAGE_HISTORY_CAP", 1_000)?,
            presence_timeout: Duration::from_secs(env.positive("PRESENCE_TIMEOUT_SECS", 300)?.into()),
            notifications_cap: env.positive("NOTIFICATIONS_CAP", 100)?,
            admin_user_ids: match get("ADMIN_USER_IDS") {
                Some(v) => v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                None => Vec::new(),
            },
            cookie_secure: env.parse("COOKIE_SECURE", true)?,
            realtime_max_sockets_per_user: env.positive("REALTIME_MAX_SOCKETS_PER_USER", 10)?,
            push_max_connections_per_batch: env.positive("PUSH_MAX_CONNECTIONS_PER_BATCH", 1_000)?,
        })
    }
}

/// `REDIS_URL` wins; else one ElastiCache name; else the local default (outside AWS only).
fn redis_source(env: &Env<'_>, in_aws: bool) -> Result<RedisSource, ConfigError> {
    let serverless = env.optional("ELASTICACHE_SERVERLESS_CACHE_NAME");
    let group = env.optional("ELASTICACHE_REPLICATION_GROUP_ID");
    let url = match env.optional("REDIS_URL") {
        Some(url) => url,
        None => {
            return match (serverless, group) {
                (Some(_), Some(_)) => Err(ConfigError {
                    var: "ELASTICACHE_SERVERLESS_CACHE_NAME",
                    reason: "set either it or ELASTICACHE_REPLICATION_GROUP_ID, not both".into(),
                }),
                (Some(name), None) => Ok(RedisSource::ServerlessCache(name)),
                (None, Some(id)) => Ok(RedisSource::ReplicationGroup(id)),
                (None, None) if in_aws => Err(ConfigError {
                    var: "REDIS_URL",
                    reason: "is unset: in AWS set REDIS_URL, ELASTICACHE_REPLICATION_GROUP_ID or \
                             ELASTICACHE_SERVERLESS_CACHE_NAME"
                        .into(),
                }),
                (None, None) => Ok(RedisSource::Url("redis://127.0.0.1:6379".into())),
            };
        }
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(ConfigError {
            var: "REDIS_URL",
            reason: "must start with redis:// or rediss://".into(),
        });
    }
    Ok(RedisSource::Url(url))
}

/// `KAFKA_BROKERS` wins; else `MSK_CLUSTER_ARN`; else the local default (outside AWS only).
fn kafka_source(env: &Env<'_>, in_aws: bool) -> Result<KafkaSource, ConfigError> {
    let brokers = match env.optional("KAFKA_BROKERS") {
        Some(brokers) => brokers,
        None => {
            return match env.optional("MSK_CLUSTER_ARN") {
                Some(arn) if arn.starts_with("arn:") => Ok(KafkaSource::MskCluster(arn)),
                Some(arn) => Err(ConfigError {
                    var: "MSK_CLUSTER_ARN",
                    reason: format!("{arn:?} is not an ARN (arn:aws:kafka:...)"),
                }),
                None if in_aws => Err(ConfigError {
                    var: "KAFKA_BROKERS",
                    reason: "is unset: in AWS set KAFKA_BROKERS or MSK_CLUSTER_ARN".into(),
                }),
                None => Ok(KafkaSource::Brokers(vec!["127.0.0.1:9092".into()])),
            };
        }
    };
    let list: Vec<String> = brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(String::from)
        .collect();
    if list.is_empty() || list.iter().any(|b| !b.contains(':')) {
        return Err(ConfigError {
            var: "KAFKA_BROKERS",
            reason: "expected host:port[,host:port...]".into(),
        });
    }
    Ok(KafkaSource::Brokers(list))
}

struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The trimmed value; empty counts as unset (SAM passes "" for an unset parameter).
    fn optional(&self, var: &str) -> Option<String> {
        (self.get)(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn string(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        match (self.get)(var) {
            Some(v) if v.trim().is_empty() => Err(ConfigError {
                var,
                reason: "is set but empty".into(),
            }),
            Some(v) => Ok(v.trim().to_string()),
            None => Ok(default.to_string()),
        }
    }

    fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match (self.get)(var) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError {
                var,
                reason: format!("{v:?}: {e}"),
            }),
        }
    }

    fn positive(&self, var: &'static str, default: u32) -> Result<u32, ConfigError> {
        match self.parse(var, default)? {
            0 => Err(ConfigError {
                var,
                reason: "must be greater than 0".into(),
            }),
            n => Ok(n),
        }
    }

    fn millis(&self, var: &'static str, default: u32) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.positive(var, default)?.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_map(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_suit_the_local_stack() {
        let c = config(&[]).unwrap();
        assert_eq!(c.redis, RedisSource::Url("redis://127.0.0.1:6379".into()));
        assert_eq!(c.kafka, KafkaSource::Brokers(vec!["127.0.0.1:9092".into()]));
        assert_eq!(c.kafka_security, KafkaSecurity::Plaintext);
        assert_eq!(c.redis_auth_token, None);
        assert_eq!(c.topics.user_events, "user-events");
        assert_eq!(c.login_max_failures, 5);
    }

    #[test]
    fn a_bad_number_names_its_variable() {
        let err = config(&[("RATE_LIMIT_FREE", "lots")]).unwrap_err();
        assert_eq!(err.var, "RATE_LIMIT_FREE");
        assert!(err.to_string().contains("RATE_LIMIT_FREE"));
    }

    #[test]
    fn zero_limits_are_rejected() {
        assert_eq!(
            config(&[("LOGIN_MAX_FAILURES", "0")]).unwrap_err().var,
            "LOGIN_MAX_FAILURES"
        );
    }

    #[test]
    fn a_redis_url_without_scheme_is_rejected() {
        assert_eq!(config(&[("REDIS_URL", "localhost:6379")]).unwrap_err().var, "REDIS_URL");
    }

    #[test]
    fn brokers_must_be_host_port_pairs() {
        assert_eq!(config(&[("KAFKA_BROKERS", "kafka")]).unwrap_err().var, "KAFKA_BROKERS");
        assert_eq!(
            config(&[("KAFKA_BROKERS", "a:1, b:2")]).unwrap().kafka,
            KafkaSource::Brokers(vec!["a:1".into(), "b:2".into()])
        );
    }

    #[test]
    fn empty_endpoints_mean_discover_or_default() {
        let c = config(&[("REDIS_URL", ""), ("KAFKA_BROKERS", " "), ("KAFKA_SECURITY", "")]).unwrap();
        assert_eq!(c.redis, RedisSource::Url("redis://127.0.0.1:6379".into()));
        assert_eq!(c.kafka, KafkaSource::Brokers(vec!["127.0.0.1:9092".into()]));
        assert_eq!(c.kafka_security, KafkaSecurity::Plaintext);
    }

    #[test]
    fn aws_resource_names_are_used_when_endpoints_are_unset() {
        let c = config(&[
            ("REDIS_URL", ""),
            ("ELASTICACHE_REPLICATION_GROUP_ID", "devconnect-redis"),
            ("ELASTICACHE_SERVERLESS_CACHE_NAME", ""),
            ("KAFKA_BROKERS", ""),
            (
                "MSK_CLUSTER_ARN",
                "arn:aws:kafka:eu-west-1:123456789012:cluster/dc/abc-1",
            ),
            ("KAFKA_SECURITY", "IAM"),
            ("REDIS_AUTH_TOKEN", "t0ken"),
        ])
        .unwrap();
        assert_eq!(c.redis, RedisSource::ReplicationGroup("devconnect-redis".into()));
        assert_eq!(
            c.kafka,
            KafkaSource::MskCluster("arn:aws:kafka:eu-west-1:123456789012:cluster/dc/abc-1".into())
        );
        assert_eq!(c.kafka_security, KafkaSecurity::Iam);
        assert_eq!(c.redis_auth_token.as_deref(), Some("t0ken"));
        let serverless = config(&[("ELASTICACHE_SERVERLESS_CACHE_NAME", "dc-cache")]).unwrap();
        assert_eq!(serverless.redis, RedisSource::ServerlessCache("dc-cache".into()));
    }

    #[test]
    fn explicit_endpoints_win_over_aws_resource_names() {
        let c = config(&[
            ("REDIS_URL", "redis://cache:6379"),
            ("ELASTICACHE_REPLICATION_GROUP_ID", "devconnect-redis"),
            ("KAFKA_BROKERS", "b-1:9098"),
            (
                "MSK_CLUSTER_ARN",
                "arn:aws:kafka:eu-west-1:123456789012:cluster/dc/abc-1",
            ),
        ])
        .unwrap();
        assert_eq!(c.redis, RedisSource::Url("redis://cache:6379".into()));
        assert_eq!(c.kafka, KafkaSource::Brokers(vec!["b-1:9098".into()]));
    }

    #[test]
    fn in_lambda_a_missing_redis_names_redis_url() {
        let err = config(&[("AWS_LAMBDA_FUNCTION_NAME", "auth"), ("KAFKA_BROKERS", "b:9092")]).unwrap_err();
        assert_eq!(err.var, "REDIS_URL");
        assert!(err.to_string().contains("ELASTICACHE_REPLICATION_GROUP_ID"));
    }

    #[test]
    fn in_lambda_missing_brokers_name_kafka_brokers() {
        let err = config(&[("AWS_LAMBDA_FUNCTION_NAME", "auth"), ("REDIS_URL", "rediss://c:6379")]).unwrap_err();
        assert_eq!(err.var, "KAFKA_BROKERS");
        assert!(err.to_string().contains("MSK_CLUSTER_ARN"));
    }

    #[test]
    fn a_bad_kafka_security_names_its_variable() {
        let err = config(&[("KAFKA_SECURITY", "sasl_ssl")]).unwrap_err();
        assert_eq!(err.var, "KAFKA_SECURITY");
    }

    #[test]
    fn an_msk_cluster_that_is_not_an_arn_is_rejected() {
        assert_eq!(
            config(&[("MSK_CLUSTER_ARN", "my-cluster")]).unwrap_err().var,
            "MSK_CLUSTER_ARN"
        );
    }

    #[test]
    fn two_elasticache_names_are_ambiguous() {
        let err = config(&[
            ("ELASTICACHE_REPLICATION_GROUP_ID", "a"),
            ("ELASTICACHE_SERVERLESS_CACHE_NAME", "b"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "ELASTICACHE_SERVERLESS_CACHE_NAME");
    }

    #[test]
    fn debug_output_hides_the_redis_url_and_auth_token() {
        let c = config(&[
            ("REDIS_URL", "rediss://:secret-token@host:6379"),
            ("REDIS_AUTH_TOKEN", "other-secret"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("secret-token"));
        assert!(!printed.contains("other-secret"));
    }
}
