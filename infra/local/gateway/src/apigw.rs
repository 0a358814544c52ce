//! HTTP <-> API Gateway HTTP API (payload format 2.0) events.
//!
//! The request is built as the event API Gateway sends to Lambda and turned into a
//! `lambda_http` request by `lambda_http`'s own conversion, so handlers see the same
//! request context, path parameters and cookies locally as deployed. The gateway builds
//! the event as the typed struct `lambda_http` deserializes the JSON into (the same
//! values, without writing and re-parsing JSON on every request); [`event`] is that
//! event as JSON, and [`request`] parses JSON events (`events/*.json`) as in AWS.

use std::{collections::HashMap, sync::LazyLock};

use aws_lambda_events::{
    apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext, ApiGatewayV2httpRequestContextHttpDescription},
    query_map::QueryMap,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::format::{Item, StrftimeItems};
use lambda_http::{
    http::{
        header::{COOKIE, USER_AGENT},
        HeaderMap, HeaderName, HeaderValue, Method,
    },
    request::LambdaRequest,
    Body, Request, Response,
};
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};

/// An incoming HTTP request, already matched to a route.
#[derive(Debug)]
pub struct HttpCall<'a> {
    /// The matched route key, e.g. `GET /users/{userId}`.
    pub route_key: String,
    /// Request method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: &'a str,
    /// Headers as (name, value) ([`typed_event_received`] takes the received ones instead).
    pub headers: Vec<(String, String)>,
    /// Extracted path parameters.
    pub path_params: Vec<(String, String)>,
    /// Body bytes.
    pub body: &'a [u8],
    /// Caller address.
    pub source_ip: String,
}

/// The fields of `aws_lambda_events`' struct that API Gateway's 2.0 payload does not have
/// (they belong to Custom Authorizer v1 payloads and REST stages), left out of [`event`]'s JSON.
const NOT_IN_PAYLOAD_V2: [&str; 7] = [
    "type",
    "methodArn",
    "httpMethod",
    "identitySource",
    "authorizationToken",
    "resource",
    "stageVariables",
];

/// The API Gateway v2 event for `call`, as `lambda_http` reads it from API Gateway's JSON:
/// lower-case header names, repeated headers joined with `,` (cookies go to `cookies`),
/// query parameters likewise, percent-decoded path parameters, a non-UTF-8 body base64.
/// `Err` for a header HTTP cannot carry (where parsing the JSON would fail too).
pub fn typed_event(call: &HttpCall<'_>) -> anyhow::Result<ApiGatewayV2httpRequest> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(call.headers.len());
    let mut cookies = Vec::new();
    for (name, value) in &call.headers {
        let name = name.to_ascii_lowercase();
        if name == "cookie" {
            cookies.extend(value.split(';').map(|c| c.trim().to_string()));
            continue;
        }
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, prev)) => {
                prev.push(',');
                prev.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    // In name order, as the JSON object (a sorted map) hands them to the deserializer.
    merged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut headers = HeaderMap::with_capacity(merged.len());
    for (name, value) in merged {
        headers.insert(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(&value)?);
    }
    let user_agent = headers_value(&call.headers, "user-agent");
    Ok(build(call, headers, cookies, user_agent))
}

/// [`typed_event`] for a request that came over HTTP, whose headers are `received` (the
/// call's own `headers` are not read): names are lower case and values valid already,
/// so each header moves over as it is (a shared buffer, not a copy), and only repeated
/// ones are joined. The same event as [`typed_event`] of those headers as text.
pub fn typed_event_received(call: &HttpCall<'_>, received: &HeaderMap) -> ApiGatewayV2httpRequest {
    let mut names: Vec<&HeaderName> = received.keys().filter(|n| **n != COOKIE).collect();
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut headers = HeaderMap::with_capacity(names.len());
    for name in names {
        let mut values = received.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        let value = match values.next() {
            None => first.clone(),
            Some(second) => {
                let mut joined = first.as_bytes().to_vec();
                for value in std::iter::once(second).chain(values) {
                    joined.push(b',');
                    joined.extend_from_slice(value.as_bytes());
                }
                // Joined valid values with a comma are valid.
                HeaderValue::from_bytes(&joined).unwrap_or_else(|_| first.clone())
            }
        };
        headers.insert(name.clone(), value);
    }
    let cookies = received
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(';')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let user_agent = received
        .get(USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    build(call, headers, cookies, user_agent)
}

/// `requestContext.time`'s format (`28/Nov/2026:15:32:45 +0000`), parsed once.
static TIME_FORMAT: LazyLock<Vec<Item<'static>>> =
    LazyLock::new(|| StrftimeItems::new("%d/%b/%Y:%H:%M:%S %z").parse().unwrap_or_default());

/// `requestContext.time` of `now`: formatted once per second per thread (it has no
/// finer unit), not on every request.
fn request_time(now: &chrono::DateTime<chrono::Utc>) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    LAST.with_borrow_mut(|(second, text)| {
        if *second != now.timestamp() {
            *second = now.timestamp();
            *text = now.format_with_items(TIME_FORMAT.iter()).to_string();
        }
        text.clone()
    })
}

/// The event for `call` with its headers already merged.
fn build(call: &HttpCall<'_>, headers: HeaderMap, cookies: Vec<String>, user_agent: String) -> ApiGatewayV2httpRequest {
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(call.query.as_bytes()) {
        query.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    let path_parameters = call
        .path_params
        .iter()
        .map(|(k, v)| (k.clone(), percent_decode_str(v).decode_utf8_lossy().into_owned()))
        .collect();
    let (body, is_base64_encoded) = match std::str::from_utf8(call.body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (STANDARD.encode(call.body), true),
    };
    let now = chrono::Utc::now();
    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = Method::from_bytes(call.method.as_bytes()).unwrap_or_default();
    http.path = Some(call.path.to_string());
    http.protocol = Some("HTTP/1.1".into());
    http.source_ip = Some(call.source_ip.clone());
    http.user_agent = Some(user_agent);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some(call.route_key.clone());
    context.account_id = Some("000000000000".into());
    context.stage = Some("$default".into());
    context.request_id = Some(uuid::Uuid::now_v7().to_string());
    context.apiid = Some("local".into());
    context.domain_name = Some("localhost".into());
    context.domain_prefix = Some("localhost".into());
    context.time = Some(request_time(&now));
    context.time_epoch = now.timestamp_millis();
    context.http = http;
    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some(call.route_key.clone());
    event.raw_path = Some(call.path.to_string());
    event.raw_query_string = Some(call.query.to_string());
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    event.headers = headers;
    event.query_string_parameters = QueryMap::from(query);
    event.path_parameters = path_parameters;
    event.request_context = context;
    event.body = (!call.body.is_empty()).then_some(body);
    event.is_base64_encoded = is_base64_encoded;
    event
}

/// The API Gateway v2 event JSON for `call` ([`typed_event`] as API Gateway writes it);
/// `null` for a call whose headers HTTP cannot carry, which [`request`] refuses.
pub fn event(call: &HttpCall<'_>) -> Value {
    typed_event(call).map_or(Value::Null, |event| to_json(&event))
}

/// A typed event as the JSON API Gateway sends (what Lambda's payload quota measures).
pub fn to_json(event: &ApiGatewayV2httpRequest) -> Value {
    let Ok(Value::Object(mut json)) = serde_json::to_value(event) else {
        return Value::Null;
    };
    for field in NOT_IN_PAYLOAD_V2 {
        json.remove(field);
    }
    Value::Object(json)
}

/// The handler's request for an event, converted by `lambda_http` as in AWS.
pub fn into_request(event: ApiGatewayV2httpRequest) -> Request {
    LambdaRequest::ApiGatewayV2(event).into()
}

/// Parses an API Gateway event (from [`event`] or an `events/*.json` file) as `lambda_http` does in AWS.
pub fn request(event: &Value) -> anyhow::Result<Request> {
    Ok(lambda_http::request::from_str(&event.to_string())?)
}

/// A handler's response as the JSON API Gateway would log for `sam local invoke`.
pub fn response_json(response: &Response<Body>) -> Value {
    let headers: Map<String, Value> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap_or_default().to_string())))
        .collect();
    let body = match response.body() {
        Body::Empty => Value::Null,
        Body::Text(t) => Value::String(t.clone()),
        Body::Binary(b) => Value::String(STANDARD.encode(b)),
        _ => Value::Null,
    };
    json!({"statusCode": response.status().as_u16(), "headers": headers, "body": body})
}

fn headers_value(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event as JSON without what differs per call (request id, time).
    fn comparable(event: &ApiGatewayV2httpRequest) -> Value {
        let mut json = to_json(event);
        for field in ["requestId", "time", "timeEpoch"] {
            json["requestContext"].as_object_mut().map(|c| c.remove(field));
        }
        json
    }

    #[test]
    fn received_headers_give_the_same_event_as_the_same_headers_as_text() {
        let pairs = [
            ("Host", "localhost:3000"),
            ("X-Trace", "a"),
            ("user-agent", "bench/1"),
            ("cookie", "session=abc; theme=dark"),
            ("x-trace", "b"),
            ("Cookie", "other=1"),
            ("accept", "application/json"),
        ];
        let mut received = HeaderMap::new();
        for (name, value) in pairs {
            received.append(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        let call = HttpCall {
            route_key: "GET /users/{userId}".into(),
            method: "GET",
            path: "/users/u%201",
            query: "a=1&a=2&b=x",
            headers: pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            path_params: vec![("userId".into(), "u%201".into())],
            body: b"{}",
            source_ip: "10.0.0.1".into(),
        };
        let text = typed_event(&call).unwrap();
        let fast = typed_event_received(&call, &received);
        assert_eq!(comparable(&fast), comparable(&text));
        assert_eq!(fast.headers["x-trace"], "a,b");
        assert_eq!(
            fast.cookies.as_deref(),
            Some(&["session=abc".to_string(), "theme=dark".into(), "other=1".into()][..])
        );
        let names: Vec<&str> = fast.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "host", "user-agent", "x-trace"], "in name order");
    }
}
