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
    request::{LambdaRequest, RequestContext},
    Body, Request, RequestExt, Response,
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
    /// Headers as received (names lower case, a repeated header once per value).
    pub headers: HeaderMap,
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
/// lower-case header names in name order, repeated headers joined with `,` (cookies go to
/// `cookies`), query parameters likewise, percent-decoded path parameters, a non-UTF-8 body
/// base64. Each header value moves over as it is (a shared buffer, not a copy); only
/// repeated ones are joined.
pub fn typed_event(call: &HttpCall<'_>) -> ApiGatewayV2httpRequest {
    let received = &call.headers;
    // In name order, as the JSON object (a sorted map) hands them to the deserializer.
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

/// The API Gateway v2 event JSON for `call` ([`typed_event`] as API Gateway writes it).
pub fn event(call: &HttpCall<'_>) -> Value {
    to_json(&typed_event(call))
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
///
/// `lambda_http` writes the URI as `https://{host}{path}` through a URL parser (and reads
/// an environment variable) on every request: a tenth of the gateway's own CPU on a GET.
/// When the parser would give the text back unchanged ([`plain_uri`]: a plain host, a
/// path without dot segments or characters it escapes, no `X-Forwarded-Proto`), the same
/// request is put together here; anything else goes through `lambda_http`.
pub fn into_request(event: ApiGatewayV2httpRequest) -> Request {
    match plain_uri(&event) {
        Some(uri) => direct_request(event, uri),
        None => LambdaRequest::ApiGatewayV2(event).into(),
    }
}

/// The request `lambda_http` makes of `event`, given its URI.
fn direct_request(event: ApiGatewayV2httpRequest, uri: lambda_http::http::Uri) -> Request {
    let raw_query = event.raw_query_string.unwrap_or_default();
    let query: QueryMap = raw_query.parse().unwrap_or_default();
    let mut headers = event.headers;
    if let Some(cookies) = event.cookies {
        if let Ok(value) = HeaderValue::from_str(&cookies.join("; ")) {
            headers.insert(COOKIE, value);
        }
    }
    let body = event
        .body
        .as_deref()
        .map_or_else(Body::default, |b| Body::from_maybe_encoded(event.is_base64_encoded, b));
    let method = event.request_context.http.method.clone();
    let mut request = Request::new(body);
    *request.uri_mut() = uri;
    *request.method_mut() = method;
    *request.headers_mut() = headers;
    request
        .with_raw_http_path(event.raw_path.unwrap_or_default())
        .with_query_string_parameters(query)
        .with_path_parameters(QueryMap::from(event.path_parameters))
        .with_stage_variables(QueryMap::from(event.stage_variables))
        .with_request_context(RequestContext::ApiGatewayV2(event.request_context))
}

/// `https://{host}{raw path}[?{query}]`, when that is exactly the URI `lambda_http` would
/// make of `event`; `None` where its URL parser could change the text.
fn plain_uri(event: &ApiGatewayV2httpRequest) -> Option<lambda_http::http::Uri> {
    if event.headers.contains_key("x-forwarded-proto") || event.request_context.stage.as_deref() != Some("$default") {
        return None;
    }
    let host = event.headers.get(lambda_http::http::header::HOST)?.to_str().ok()?;
    let path = event.raw_path.as_deref()?;
    if !plain_host(host) || !plain_path(path) {
        return None;
    }
    // Without the raw query lambda_http reads `queryStringParameters`; so does its path.
    let query = event.raw_query_string.as_deref()?;
    let mut uri = String::with_capacity(8 + host.len() + path.len() + 1 + query.len());
    uri.push_str("https://");
    uri.push_str(host);
    uri.push_str(path);
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(query);
    }
    uri.parse().ok()
}

/// A lower-case DNS name whose last label has a letter, or a dotted quad without leading
/// zeros, with an optional port that is not 443 (the URL parser drops https's default
/// port and rewrites other numeric hosts).
fn plain_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0') && p != "443"
    });
    let labels: Vec<&str> = name.split('.').collect();
    // `xn--` labels are punycode, which the parser checks.
    let dns = labels.iter().all(|l| {
        !l.is_empty()
            && !l.starts_with("xn--")
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) && labels.last().is_some_and(|l| l.bytes().any(|b| b.is_ascii_lowercase()));
    let quad = labels.len() == 4
        && labels.iter().all(|l| {
            (1..=3).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_digit())
                && (l.len() == 1 || !l.starts_with('0'))
                && l.parse::<u16>().is_ok_and(|n| n <= 255)
        });
    port_ok && (dns || quad)
}

/// A path of unreserved characters, sub-delimiters, `:`, `@`, `/` and `%XX` escapes (no
/// `%2E`), without `.` or `..` segments: what the URL parser leaves as it is.
fn plain_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    let chars_ok = bytes.iter().enumerate().all(|(i, &b)| match b {
        b'%' => {
            let hex = bytes.get(i + 1..i + 3);
            hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit) && !h.eq_ignore_ascii_case(b"2e"))
        }
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => true,
        _ => b"-._~!$&'()*+,;=:@/".contains(&b),
    });
    chars_ok && path.starts_with('/') && path.split('/').all(|segment| segment != "." && segment != "..")
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

    /// Headers as HTTP receives them: lower-case names, one entry per value.
    fn received(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn users_call() -> HttpCall<'static> {
        HttpCall {
            route_key: "GET /users/{userId}".into(),
            method: "GET",
            path: "/users/u%201",
            query: "a=1&a=2&b=x",
            headers: received(&[
                ("Host", "localhost:3000"),
                ("X-Trace", "a"),
                ("user-agent", "bench/1"),
                ("cookie", "session=abc; theme=dark"),
                ("x-trace", "b"),
                ("Cookie", "other=1"),
                ("accept", "application/json"),
            ]),
            path_params: vec![("userId".into(), "u%201".into())],
            body: b"{}",
            source_ip: "10.0.0.1".into(),
        }
    }

    #[test]
    fn repeated_headers_are_joined_and_cookies_listed_as_api_gateway_sends_them() {
        let event = typed_event(&users_call());
        assert_eq!(event.headers["x-trace"], "a,b");
        assert_eq!(
            event.cookies.as_deref(),
            Some(&["session=abc".to_string(), "theme=dark".into(), "other=1".into()][..])
        );
        let names: Vec<&str> = event.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "host", "user-agent", "x-trace"], "in name order");
        assert_eq!(event.request_context.http.user_agent.as_deref(), Some("bench/1"));
        assert_eq!(event.path_parameters["userId"], "u 1", "percent-decoded");
    }

    #[test]
    fn the_typed_event_reads_back_from_its_json_unchanged() {
        let event = typed_event(&users_call());
        let parsed: ApiGatewayV2httpRequest = serde_json::from_value(to_json(&event)).unwrap();
        assert_eq!(comparable(&parsed), comparable(&event));
        assert_eq!(parsed.headers, event.headers);
    }

    /// What a handler can read of a request, to compare two conversions.
    fn seen(req: &Request) -> (String, String, HeaderMap, Vec<u8>, String, Value, Value, Value, Value) {
        let context = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(c)) => serde_json::to_value(c).unwrap(),
            _ => Value::Null,
        };
        (
            req.method().to_string(),
            req.uri().to_string(),
            req.headers().clone(),
            req.body().as_ref().to_vec(),
            req.raw_http_path().to_string(),
            serde_json::to_value(req.query_string_parameters()).unwrap(),
            serde_json::to_value(req.path_parameters()).unwrap(),
            serde_json::to_value(req.stage_variables()).unwrap(),
            context,
        )
    }

    #[test]
    fn the_direct_request_is_the_one_lambda_http_makes() {
        let cases: [(&str, &str, &str, &[u8]); 5] = [
            ("localhost:3000", "/users/0190c3a4-0000-7000-8000-00000000000a", "", b""),
            ("127.0.0.1:41234", "/presence", "userIds=a,b&userIds=c&x=%20y+z", b""),
            ("api.example.com", "/a/b%2Fc/~x!$&'()*+,;=:@-_.z", "q", b"{\"x\":1}"),
            ("127.0.0.1", "/p", "", &[0xff, 0xfe, 0x00]),
            ("localhost:3000", "/users/u%201", "a=1", b"text"),
        ];
        for (host, path, query, body) in cases {
            let call = HttpCall {
                route_key: "ANY /{proxy+}".into(),
                method: "POST",
                path,
                query,
                headers: received(&[
                    ("Host", host),
                    ("cookie", "a=1; b=2"),
                    ("x-multi", "1"),
                    ("X-Multi", "2"),
                ]),
                path_params: vec![("proxy".into(), path.trim_start_matches('/').into())],
                body,
                source_ip: "10.0.0.1".into(),
            };
            let event = typed_event(&call);
            assert!(plain_uri(&event).is_some(), "{host}{path}");
            let by_lambda_http: Request = LambdaRequest::ApiGatewayV2(event.clone()).into();
            assert_eq!(
                seen(&into_request(event)),
                seen(&by_lambda_http),
                "{host}{path}?{query}"
            );
        }
    }

    #[test]
    fn what_the_url_parser_would_rewrite_goes_through_lambda_http() {
        for host in [
            "LOCALHOST",
            "127.1",
            "0x7f.0.0.1",
            "127.000.0.1",
            "h.example:443",
            "h:0080",
            "xn--zz",
            "a.123",
            "",
            "h:",
        ] {
            assert!(!plain_host(host), "{host}");
        }
        for host in [
            "localhost",
            "localhost:3000",
            "127.0.0.1:8080",
            "api.example.com",
            "a-b.c1",
        ] {
            assert!(plain_host(host), "{host}");
        }
        for path in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/%2e%2E/x",
            "/a%2",
            "/a b",
            "/{x}",
            "/a|b",
            "/a\\b",
            "a",
            "/\"q",
        ] {
            assert!(!plain_path(path), "{path}");
        }
        // One of them all the way: the parser removes the dot segment, and so does the request.
        let call = HttpCall {
            route_key: "GET /a/{b}".into(),
            method: "GET",
            path: "/a/./b",
            query: "",
            headers: received(&[("host", "localhost:3000")]),
            path_params: Vec::new(),
            body: b"",
            source_ip: "10.0.0.1".into(),
        };
        assert_eq!(into_request(typed_event(&call)).uri().path(), "/a/b");
    }

    #[test]
    fn an_event_without_a_raw_query_string_keeps_its_query_parameters() {
        let call = HttpCall {
            route_key: "GET /presence".into(),
            method: "GET",
            path: "/presence",
            query: "",
            headers: received(&[("host", "localhost:3000")]),
            path_params: Vec::new(),
            body: b"",
            source_ip: "10.0.0.1".into(),
        };
        let mut event = typed_event(&call);
        event.raw_query_string = None;
        event.query_string_parameters = "userIds=a,b".parse().unwrap();
        let by_lambda_http: Request = LambdaRequest::ApiGatewayV2(event.clone()).into();
        let request = into_request(event);
        assert_eq!(request.query_string_parameters().first("userIds"), Some("a,b"));
        assert_eq!(seen(&request), seen(&by_lambda_http));
    }
}
