//! Typed configuration, read from environment variables once per container.
//!
//! Every variable has a default that suits the local stack, so `cargo test` and
//! `./infra/local/run` need no setup; in AWS the SAM template sets them. A value
//! that is present but wrong fails init with a message naming the variable.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable's name.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
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
    /// Derived metrics.
    pub analytics_events: String,
    /// Records a consumer could not process.
    pub dead_letter_events: String,
}

impl Topics {
    /// Every topic, in a stable order (used to create them locally).
    pub fn all(&self) -> [&str; 6] {
        [
            &self.user_events,
            &self.connection_events,
            &self.message_events,
            &self.notification_events,
            &self.analytics_events,
            &self.dead_letter_events,
        ]
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
    /// `REDIS_URL`: redis:// or rediss:// (TLS, ElastiCache in transit encryption).
    pub redis_url: String,
    /// `REDIS_TIMEOUT_MS`: bound on connecting and on each command, so a dead Redis gives a 503, not a hang.
    pub redis_timeout: Duration,
    /// `KAFKA_BROKERS`: comma-separated host:port bootstrap list.
    pub kafka_brokers: Vec<String>,
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
}

impl fmt::Debug for Config {
    // The Redis URL may carry an AUTH token, so it is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &"<redacted>")
            .field("kafka_brokers", &self.kafka_brokers)
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
        let redis_url = env.string("REDIS_URL", "redis://127.0.0.1:6379")?;
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            return Err(ConfigError {
                var: "REDIS_URL",
                reason: "must start with redis:// or rediss://".into(),
            });
        }
        let brokers = env.string("KAFKA_BROKERS", "127.0.0.1:9092")?;
        let kafka_brokers: Vec<String> = brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(String::from)
            .collect();
        if kafka_brokers.is_empty() || kafka_brokers.iter().any(|b| !b.contains(':')) {
            return Err(ConfigError {
                var: "KAFKA_BROKERS",
                reason: "expected host:port[,host:port...]".into(),
            });
        }
        Ok(Self {
            redis_url,
            redis_timeout: env.millis("REDIS_TIMEOUT_MS", 1_000)?,
            kafka_brokers,
            produce_timeout: env.millis("KAFKA_PRODUCE_TIMEOUT_MS", 1_500)?,
            topics: Topics {
                user_events: env.string("TOPIC_USER_EVENTS", "user-events")?,
                connection_events: env.string("TOPIC_CONNECTION_EVENTS", "connection-events")?,
                message_events: env.string("TOPIC_MESSAGE_EVENTS", "message-events")?,
                notification_events: env.string("TOPIC_NOTIFICATION_EVENTS", "notification-events")?,
                analytics_events: env.string("TOPIC_ANALYTICS_EVENTS", "analytics-events")?,
                dead_letter_events: env.string("TOPIC_DEAD_LETTER_EVENTS", "dead-letter-events")?,
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
        })
    }
}

struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
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
        assert_eq!(c.kafka_brokers, vec!["127.0.0.1:9092"]);
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
            config(&[("KAFKA_BROKERS", "a:1, b:2")]).unwrap().kafka_brokers,
            vec!["a:1", "b:2"]
        );
    }

    #[test]
    fn debug_output_hides_the_redis_url() {
        let c = config(&[("REDIS_URL", "rediss://:secret-token@host:6379")]).unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
