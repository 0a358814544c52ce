//! template.yaml, the handlers and events/ must agree: the gateway serves what the template
//! declares, and every sample event invokes its function successfully.

use std::collections::BTreeSet;

use devconnect_tests::Stack;
use local_gateway::{apigw, default_template_path, functions, template::Template};

fn template() -> Template {
    Template::load(&default_template_path()).expect("template.yaml")
}

#[test]
fn every_template_route_has_a_handler_and_every_handler_route_is_in_the_template() {
    let declared: BTreeSet<(String, String)> = template()
        .routes
        .iter()
        .map(|r| (r.function.clone(), r.route_key()))
        .collect();
    let served: BTreeSet<(String, String)> = functions::HTTP_FUNCTIONS
        .iter()
        .flat_map(|(f, routes)| routes.iter().map(move |r| (f.to_string(), r.to_string())))
        .collect();
    assert_eq!(declared, served);
}

#[test]
fn every_msk_triggered_function_in_the_template_is_hosted() {
    let declared: BTreeSet<String> = template().msk_sources.iter().map(|s| s.function.clone()).collect();
    let hosted: BTreeSet<String> = functions::CONSUMER_FUNCTIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(declared, hosted);
}

#[test]
fn every_scheduled_function_in_the_template_is_hosted() {
    let declared: BTreeSet<String> = template().schedules.iter().map(|s| s.function.clone()).collect();
    let hosted: BTreeSet<String> = functions::SCHEDULED_FUNCTIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(declared, hosted);
}

#[tokio::test]
async fn every_sample_event_invokes_its_function_without_a_server_error() {
    let stack = Stack::start().await;
    let hosted = functions::Functions::new(&stack.state, &stack.base_url);
    let template = template();
    let root = default_template_path().parent().unwrap().join("events");
    let mut invoked = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if event["eventSource"] == "aws:kafka" {
                // events/<dir>/msk-*.json feeds the consumer named after its folder.
                let dir = path
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_lowercase();
                let function = template
                    .msk_sources
                    .iter()
                    .map(|s| s.function.clone())
                    .find(|f| f.to_lowercase().starts_with(&dir))
                    .unwrap_or_else(|| panic!("{path:?}: no consumer for {dir}"));
                let report = hosted
                    .invoke_consumer(&function, serde_json::from_value(event.clone()).unwrap())
                    .await
                    .unwrap();
                assert!(report["received"].as_u64().unwrap() > 0, "{path:?}: {report}");
            } else if event["requestContext"].get("connectionId").is_some() {
                let response = hosted
                    .invoke_websocket(serde_json::from_value(event.clone()).unwrap())
                    .await;
                // A sample token is not a live session: $connect answers 401; the rest 200.
                assert!(
                    [200, 401].contains(&response.status_code),
                    "{path:?} -> {}",
                    response.status_code
                );
            } else if let Some(route_key) = event["routeKey"].as_str() {
                let route = template
                    .routes
                    .iter()
                    .find(|r| r.route_key() == route_key)
                    .unwrap_or_else(|| panic!("{path:?}: no route {route_key}"));
                let response = hosted
                    .invoke_http(&route.function, apigw::request(&event).unwrap())
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                assert!(status < 500, "{path:?} -> {status}: {:?}", response.body());
                let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap_or_default();
                if status >= 400 {
                    assert!(
                        body["error"]["code"].is_string(),
                        "{path:?}: error without the error shape"
                    );
                }
            } else {
                let schedule = template
                    .schedules
                    .iter()
                    .find(|s| event["resources"].to_string().contains(&s.function))
                    .unwrap_or_else(|| panic!("{path:?}: no scheduled function"));
                hosted.invoke_scheduled(&schedule.function).await.unwrap();
            }
            invoked += 1;
        }
    }
    assert!(invoked >= 25, "only {invoked} samples found under {root:?}");
}

#[tokio::test]
async fn the_signup_sample_creates_the_account_it_describes() {
    let stack = Stack::start().await;
    let hosted = functions::Functions::new(&stack.state, &stack.base_url);
    let path = default_template_path()
        .parent()
        .unwrap()
        .join("events/auth/signup.json");
    let event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let response = hosted
        .invoke_http("AuthFunction", apigw::request(&event).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let login = stack
        .client()
        .post(
            "/auth/login",
            serde_json::json!({"email": "ada@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(login.status, 200);
}

// ---------------------------------------------------------------------------------------
// Alarms and dashboard: every metric they name exists.
// ---------------------------------------------------------------------------------------

use local_gateway::template::serde_yaml::{self, Value};

/// AWS metrics the alarms may use besides DevConnect's own, each with the one dimension
/// set it is published under (checked against the AWS documentation):
/// - `AWS/Lambda` `Errors`, `Throttles`: invocation metrics, per function (`FunctionName`)
///   ("Types of metrics for Lambda functions").
/// - `AWS/Lambda` `OffsetLag`: for Amazon MSK and self-managed Kafka event sources, the
///   records between the newest record of a topic and the last one the function's consumer
///   group processed; a performance metric, per function (`FunctionName`).
/// - `AWS/ApiGateway` `5xx`, `Count`, `Latency` for an HTTP API: lower-case `5xx` (REST
///   APIs say `5XXError`), per API and stage (`ApiId`, `Stage`) ("Monitor CloudWatch
///   metrics for HTTP APIs in API Gateway").
const AWS_METRICS: &[(&str, &str, &[&str])] = &[
    ("AWS/Lambda", "Errors", &["FunctionName"]),
    ("AWS/Lambda", "Throttles", &["FunctionName"]),
    ("AWS/Lambda", "OffsetLag", &["FunctionName"]),
    ("AWS/ApiGateway", "5xx", &["ApiId", "Stage"]),
    ("AWS/ApiGateway", "Count", &["ApiId", "Stage"]),
    ("AWS/ApiGateway", "Latency", &["ApiId", "Stage"]),
];

/// The dimension sets DevConnect's metrics are published under (shared/src/metrics.rs):
/// every metric per function; request metrics also per route and status class.
fn devconnect_dimension_sets() -> Vec<BTreeSet<&'static str>> {
    use devconnect::metrics::{FUNCTION, ROUTE, STATUS_CLASS};
    vec![
        BTreeSet::from([FUNCTION]),
        BTreeSet::from([FUNCTION, ROUTE]),
        BTreeSet::from([FUNCTION, ROUTE, STATUS_CLASS]),
    ]
}

fn raw_template() -> Value {
    let text = std::fs::read_to_string(default_template_path()).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// `!<tag> <string>` -> the string, e.g. `!Ref AuthFunction` -> `AuthFunction`.
fn tagged<'a>(value: &'a Value, tag: &str) -> Option<&'a str> {
    match value {
        Value::Tagged(t) if t.tag == tag => t.value.as_str(),
        _ => None,
    }
}

fn resources_of_type<'a>(doc: &'a Value, kind: &str) -> Vec<(String, &'a Value)> {
    doc["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(id, r)| (id.as_str().unwrap().to_string(), r))
        .collect()
}

/// Checks one metric an alarm names; `Err` says what is wrong.
fn check_metric(doc: &Value, namespace: &str, name: &str, dimensions: &[(String, &Value)]) -> Result<(), String> {
    let binaries: BTreeSet<String> = resources_of_type(doc, "AWS::Serverless::Function")
        .iter()
        .filter_map(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"].as_str().map(String::from))
        .collect();
    let functions: BTreeSet<String> = resources_of_type(doc, "AWS::Serverless::Function")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let names: BTreeSet<&str> = dimensions.iter().map(|(n, _)| n.as_str()).collect();
    if namespace == devconnect::metrics::NAMESPACE {
        if !devconnect::metrics::ALL.contains(&name) {
            return Err(format!("{name} is not in devconnect::metrics::ALL"));
        }
        if !devconnect_dimension_sets().contains(&names) {
            return Err(format!(
                "{name}: dimensions {names:?} are not a set DevConnect publishes"
            ));
        }
    } else {
        let (_, _, expected) = AWS_METRICS
            .iter()
            .find(|(ns, n, _)| *ns == namespace && *n == name)
            .ok_or_else(|| format!("{namespace} {name} is not in the allow-list of AWS metrics"))?;
        if names != expected.iter().copied().collect() {
            return Err(format!(
                "{namespace} {name}: dimensions {names:?}, AWS publishes {expected:?}"
            ));
        }
    }
    for (dimension, value) in dimensions {
        let ok = match dimension.as_str() {
            "Function" => value.as_str().is_some_and(|b| binaries.contains(b)),
            "FunctionName" => tagged(value, "Ref").is_some_and(|f| functions.contains(f)),
            "ApiId" => tagged(value, "Ref")
                .is_some_and(|api| doc["Resources"][api]["Type"].as_str() == Some("AWS::Serverless::HttpApi")),
            // SAM deploys an HttpApi without StageName to the `$default` stage.
            "Stage" => value.as_str() == Some("$default"),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{name}: dimension {dimension} = {value:?} names nothing in the template"
            ));
        }
    }
    Ok(())
}

fn dimensions_of(metric: &Value) -> Vec<(String, &Value)> {
    metric["Dimensions"]
        .as_sequence()
        .map(|ds| {
            ds.iter()
                .map(|d| (d["Name"].as_str().unwrap().to_string(), &d["Value"]))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_alarm_names_an_existing_metric_with_dimensions_that_exist() {
    let doc = raw_template();
    let alarms = resources_of_type(&doc, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 30, "only {} alarms", alarms.len());
    let mut problems = Vec::new();
    let mut alarmed = BTreeSet::new();
    for (id, alarm) in &alarms {
        let props = &alarm["Properties"];
        let mut metrics = Vec::new();
        if let Some(name) = props["MetricName"].as_str() {
            metrics.push((
                props["Namespace"].as_str().unwrap_or_default(),
                name,
                dimensions_of(props),
            ));
        } else {
            let queries = props["Metrics"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{id}: neither MetricName nor Metrics"));
            let ids: Vec<&str> = queries.iter().map(|q| q["Id"].as_str().unwrap()).collect();
            assert_eq!(
                queries
                    .iter()
                    .filter(|q| q["ReturnData"].as_bool() != Some(false))
                    .count(),
                1,
                "{id}: exactly one query returns data"
            );
            for query in queries {
                if let Some(expression) = query["Expression"].as_str() {
                    // Every identifier in the expression is a function or another query's Id.
                    for word in expression.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
                        let is_function = ["IF", "FILL", "SUM", "MAX", "MIN", "AVG"].contains(&word);
                        if !word.is_empty() && !word.chars().all(|c| c.is_ascii_digit()) && !is_function {
                            assert!(ids.contains(&word), "{id}: expression names unknown query {word}");
                        }
                    }
                } else {
                    let metric = &query["MetricStat"]["Metric"];
                    metrics.push((
                        metric["Namespace"].as_str().unwrap_or_default(),
                        metric["MetricName"]
                            .as_str()
                            .unwrap_or_else(|| panic!("{id}: query without a metric")),
                        dimensions_of(metric),
                    ));
                }
            }
        }
        assert!(!metrics.is_empty(), "{id}: no metric");
        for (namespace, name, dimensions) in metrics {
            if let Err(e) = check_metric(&doc, namespace, name, &dimensions) {
                problems.push(format!("{id}: {e}"));
            }
            alarmed.insert(name.to_string());
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // What issue 11 asks to be alarmed on.
    for name in [
        "Errors",
        "Throttles",
        "5xx",
        "Latency",
        "OffsetLag",
        "RecordsDeadLettered",
        "EventsQuarantined",
        "OutboxBacklog",
        "FramesFailed",
    ] {
        assert!(alarmed.contains(name), "no alarm on {name}");
    }
}

#[test]
fn every_function_has_its_alarms_and_log_group_and_the_dashboard_shows_every_alarm() {
    let doc = raw_template();
    let alarms = resources_of_type(&doc, "AWS::CloudWatch::Alarm");
    for (function, f) in resources_of_type(&doc, "AWS::Serverless::Function") {
        for metric in ["Errors", "Throttles"] {
            assert!(
                alarms
                    .iter()
                    .any(|(_, a)| a["Properties"]["MetricName"].as_str() == Some(metric)
                        && dimensions_of(&a["Properties"])
                            .iter()
                            .any(|(_, v)| tagged(v, "Ref") == Some(function.as_str()))),
                "{function}: no {metric} alarm"
            );
        }
        let group = tagged(&f["Properties"]["LoggingConfig"]["LogGroup"], "Ref")
            .unwrap_or_else(|| panic!("{function}: no LoggingConfig.LogGroup"));
        let group = &doc["Resources"][group];
        assert_eq!(group["Type"].as_str(), Some("AWS::Logs::LogGroup"), "{function}");
        assert_eq!(
            tagged(&group["Properties"]["RetentionInDays"], "Ref"),
            Some("LogRetentionInDays")
        );
    }

    let dashboards = resources_of_type(&doc, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1, "one dashboard");
    let body = tagged(&dashboards[0].1["Properties"]["DashboardBody"], "Sub").expect("DashboardBody: !Sub");
    // Resolve ${...} the way CloudFormation would (numbers for the thresholds).
    let mut resolved = String::new();
    let mut rest = body;
    let mut referenced = BTreeSet::new();
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').unwrap();
        let name = &rest[start + 2..end];
        referenced.insert(name.trim_end_matches(".Arn").to_string());
        resolved.push_str(&rest[..start]);
        resolved.push_str(if name.contains("Threshold") { "1" } else { "x" });
        rest = &rest[end + 1..];
    }
    resolved.push_str(rest);
    let body: serde_json::Value = serde_json::from_str(&resolved).expect("dashboard body is JSON");
    for (id, _) in &alarms {
        assert!(referenced.contains(id), "dashboard does not show {id}");
    }
    for name in &referenced {
        let known = doc["Resources"].get(name.as_str()).is_some()
            || doc["Parameters"].get(name.as_str()).is_some()
            || name.starts_with("AWS::");
        assert!(known, "dashboard refers to unknown {name}");
    }
    // Every DevConnect metric on the dashboard exists.
    for widget in body["widgets"].as_array().unwrap() {
        for line in widget["properties"]["metrics"].as_array().into_iter().flatten() {
            let line = line.as_array().unwrap();
            if line.first().and_then(|v| v.as_str()) == Some(devconnect::metrics::NAMESPACE) {
                let name = line[1].as_str().unwrap();
                assert!(devconnect::metrics::ALL.contains(&name), "dashboard metric {name}");
            }
        }
    }
}

/// Issue 15, item 5: loud gaps and Lambda's timeout, as a user would meet them.
mod loud_gaps {
    use std::{collections::BTreeMap, time::Duration};

    use devconnect_tests::Stack;
    use local_gateway::{default_template_path, template::Template};

    #[test]
    fn an_unsupported_property_in_a_copy_of_the_template_is_refused_by_name() {
        let text = std::fs::read_to_string(default_template_path()).expect("template.yaml");
        let copy = text.replacen(
            "      CorsConfiguration:\n",
            "      Auth: { EnableIamAuthorizer: true }\n      CorsConfiguration:\n",
            1,
        );
        let error = format!("{:#}", Template::parse(&copy).expect_err("Auth must be refused"));
        assert!(error.contains("HttpApi.Auth"), "{error}");
        let ignored = ["HttpApi.Auth".to_string()].into_iter().collect();
        Template::parse_ignoring(&copy, &ignored).expect("opted out by name");
    }

    #[tokio::test]
    async fn a_handler_past_its_timeout_gets_api_gateways_500_and_a_schedule_an_error() {
        let stack = Stack::start().await;
        let mut functions = stack.gateway.functions.clone();
        functions.set_timeouts(BTreeMap::from([
            ("AuthFunction".to_string(), Duration::from_millis(300)),
            ("OutboxRelayFunction".to_string(), Duration::from_millis(300)),
        ]));
        stack.redis.pause().expect("pause redis");
        let call = local_gateway::apigw::HttpCall {
            route_key: "GET /users/{userId}".into(),
            method: "GET",
            path: "/users/someone",
            query: "",
            headers: Default::default(),
            path_params: vec![("userId".into(), "someone".into())],
            body: b"",
            source_ip: "127.0.0.1".into(),
        };
        let request = local_gateway::apigw::request(&local_gateway::apigw::event(&call)).expect("event");
        let started = std::time::Instant::now();
        let response = functions.invoke_http("AuthFunction", request).await.expect("hosted");
        let scheduled = functions.invoke_scheduled("OutboxRelayFunction").await;
        stack.redis.resume().expect("resume redis");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(response.status(), 500);
        let body = match response.body() {
            lambda_http::Body::Text(t) => t.clone(),
            _ => String::new(),
        };
        assert_eq!(body, r#"{"message":"Internal Server Error"}"#);
        let error = scheduled.expect_err("past its timeout").to_string();
        assert!(error.contains("Task timed out"), "{error}");
    }
}
