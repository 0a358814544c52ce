//! HTTP <-> API Gateway HTTP API (payload format 2.0) events.
//!
//! The request is built as the JSON API Gateway sends to Lambda and parsed by
//! `lambda_http` exactly as in AWS, so handlers see the same request context,
//! path parameters and cookies locally as deployed.

use base64::{engine::general_purpose::STANDARD, Engine};
use lambda_http::{Body, Request, Response};
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
    /// Headers as (name, value).
    pub headers: Vec<(String, String)>,
    /// Extracted path parameters.
    pub path_params: Vec<(String, String)>,
    /// Body bytes.
    pub body: &'a [u8],
    /// Caller address.
    pub source_ip: String,
}

/// The API Gateway v2 event JSON for `call`.
pub fn event(call: &HttpCall<'_>) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &call.headers {
        let name = name.to_ascii_lowercase();
        if name == "cookie" {
            cookies.extend(value.split(';').map(|c| Value::String(c.trim().to_string())));
            continue;
        }
        let merged = match headers.get(&name).and_then(Value::as_str) {
            Some(prev) => format!("{prev},{value}"),
            None => value.clone(),
        };
        headers.insert(name, Value::String(merged));
    }
    let mut query = Map::new();
    for (k, v) in form_urlencoded::parse(call.query.as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        let merged = match query.get(&k).and_then(Value::as_str) {
            Some(prev) => format!("{prev},{v}"),
            None => v,
        };
        query.insert(k, Value::String(merged));
    }
    let path_params: Map<String, Value> = call
        .path_params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(percent_decode_str(v).decode_utf8_lossy().into_owned()),
            )
        })
        .collect();
    let (body, is_base64) = match std::str::from_utf8(call.body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (STANDARD.encode(call.body), true),
    };
    let now = chrono::Utc::now();
    let mut event = json!({
        "version": "2.0",
        "routeKey": call.route_key,
        "rawPath": call.path,
        "rawQueryString": call.query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": call.method,
                "path": call.path,
                "protocol": "HTTP/1.1",
                "sourceIp": call.source_ip,
                "userAgent": headers_value(&call.headers, "user-agent"),
            },
            "requestId": uuid::Uuid::now_v7().to_string(),
            "routeKey": call.route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": is_base64,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !path_params.is_empty() {
        event["pathParameters"] = Value::Object(path_params);
    }
    if !call.body.is_empty() {
        event["body"] = Value::String(body);
    }
    event
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
