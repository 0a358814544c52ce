//! Reads the parts of the SAM template the local stack emulates.

use std::{path::Path, time::Duration};

use anyhow::{bail, Context};
use serde_yaml::Value;

/// One `HttpApi` event of a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// The function's LogicalId, e.g. `AuthFunction`.
    pub function: String,
    /// Upper-case HTTP method (`ANY` matches all).
    pub method: String,
    /// Path template, e.g. `/users/{userId}`.
    pub path: String,
}

impl HttpRoute {
    /// API Gateway's route key, e.g. `GET /users/{userId}`.
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Matches a concrete path, returning the extracted path parameters.
    pub fn match_path(&self, path: &str) -> Option<Vec<(String, String)>> {
        let pattern: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let actual: Vec<&str> = path.trim_matches('/').split('/').collect();
        if pattern.len() != actual.len() {
            return None;
        }
        let mut params = Vec::new();
        for (p, a) in pattern.iter().zip(&actual) {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if a.is_empty() {
                    return None;
                }
                params.push((name.to_string(), a.to_string()));
            } else if p != a {
                return None;
            }
        }
        Some(params)
    }
}

/// One `Schedule` event of a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFunction {
    /// The function's LogicalId.
    pub function: String,
    /// The period of its `rate(...)` expression.
    pub every: Duration,
}

/// One `MSK` event of a function: an event source mapping for one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MskSource {
    /// The function's LogicalId.
    pub function: String,
    /// The topic it consumes.
    pub topic: String,
    /// Its consumer group (offsets are kept per group and topic).
    pub group: String,
    /// Most records per invocation.
    pub batch_size: usize,
    /// `LATEST` or `TRIM_HORIZON`, for a group with no stored offsets.
    pub starting_position: String,
}

/// What the gateway serves.
#[derive(Clone, Debug, Default)]
pub struct Template {
    /// Every HttpApi route.
    pub routes: Vec<HttpRoute>,
    /// Every rate-scheduled function.
    pub schedules: Vec<ScheduledFunction>,
    /// Every MSK event source, one per topic.
    pub msk_sources: Vec<MskSource>,
}

impl Template {
    /// Loads and parses a template file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// Parses template YAML (CloudFormation tags such as `!Ref` are accepted and ignored).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let doc: Value = serde_yaml::from_str(text).context("template.yaml is not YAML")?;
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .context("template has no Resources")?;
        let mut template = Self::default();
        for (id, resource) in resources {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let function = id.as_str().context("resource id is not a string")?.to_string();
            let Some(events) = resource
                .get("Properties")
                .and_then(|p| p.get("Events"))
                .and_then(Value::as_mapping)
            else {
                continue;
            };
            for event in events.values() {
                let props = event.get("Properties");
                let field = |name: &str| {
                    props
                        .and_then(|p| p.get(name))
                        .and_then(Value::as_str)
                        .map(String::from)
                };
                match event.get("Type").and_then(Value::as_str) {
                    Some("HttpApi") => template.routes.push(HttpRoute {
                        function: function.clone(),
                        method: field("Method").context("HttpApi event without Method")?.to_uppercase(),
                        path: field("Path").context("HttpApi event without Path")?,
                    }),
                    Some("Schedule") => {
                        let schedule = field("Schedule").context("Schedule event without Schedule")?;
                        template.schedules.push(ScheduledFunction {
                            function: function.clone(),
                            every: parse_rate(&schedule)?,
                        });
                    }
                    Some("MSK") => {
                        let topics = props
                            .and_then(|p| p.get("Topics"))
                            .and_then(Value::as_sequence)
                            .context("MSK event without Topics")?;
                        for topic in topics.iter().filter_map(Value::as_str) {
                            template.msk_sources.push(MskSource {
                                function: function.clone(),
                                topic: topic.to_string(),
                                group: field("ConsumerGroupId").unwrap_or_else(|| function.clone()),
                                batch_size: props
                                    .and_then(|p| p.get("BatchSize"))
                                    .and_then(Value::as_u64)
                                    .map_or(100, |n| n as usize),
                                starting_position: field("StartingPosition").unwrap_or_else(|| "LATEST".into()),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(template)
    }
}

/// Parses `rate(5 minutes)`; cron expressions are not emulated.
fn parse_rate(expr: &str) -> anyhow::Result<Duration> {
    let inner = expr
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'))
        .context("only rate(...) is emulated")?;
    let (n, unit) = inner.trim().split_once(' ').context("rate needs a value and a unit")?;
    let n: u64 = n.parse().context("rate value is not a number")?;
    let secs = match unit.trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        other => bail!("unknown rate unit {other}"),
    };
    Ok(Duration::from_secs(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
Resources:
  Api: { Type: AWS::Serverless::HttpApi }
  UserFn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Get:
          Type: HttpApi
          Properties: { ApiId: !Ref Api, Method: get, Path: "/users/{userId}" }
        Tick:
          Type: Schedule
          Properties: { Schedule: rate(2 minutes) }
        Stream:
          Type: MSK
          Properties: { Stream: !Ref Cluster, Topics: [user-events], StartingPosition: TRIM_HORIZON, ConsumerGroupId: g1, BatchSize: 7 }
"#;

    #[test]
    fn http_api_events_become_routes_and_cloudformation_tags_are_tolerated() {
        let t = Template::parse(SAMPLE).unwrap();
        assert_eq!(
            t.routes,
            vec![HttpRoute {
                function: "UserFn".into(),
                method: "GET".into(),
                path: "/users/{userId}".into()
            }]
        );
        assert_eq!(t.schedules[0].every, Duration::from_secs(120));
    }

    #[test]
    fn msk_events_become_event_sources() {
        let t = Template::parse(SAMPLE).unwrap();
        assert_eq!(
            t.msk_sources,
            vec![MskSource {
                function: "UserFn".into(),
                topic: "user-events".into(),
                group: "g1".into(),
                batch_size: 7,
                starting_position: "TRIM_HORIZON".into()
            }]
        );
    }

    #[test]
    fn path_templates_extract_parameters() {
        let t = Template::parse(SAMPLE).unwrap();
        assert_eq!(
            t.routes[0].match_path("/users/abc"),
            Some(vec![("userId".into(), "abc".into())])
        );
        assert_eq!(t.routes[0].match_path("/users/"), None);
        assert_eq!(t.routes[0].match_path("/users/a/b"), None);
    }
}
