//! The HTTP API's and Lambda's quotas, answered the way AWS answers them: API Gateway's
//! own `{"message": ...}` bodies, not the product's error shape (which only a function
//! that ran can produce).

use std::time::{Duration, Instant};

use devconnect_tests::Stack;
use local_gateway::server::{self, MAX_LAMBDA_REQUEST, MAX_LAMBDA_RESPONSE};
use serde_json::Value;

use crate::support::{template_with, LocalGateway};

/// Status, headers and body text of one request.
async fn send(
    base_url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .request(method.parse().expect("method"), format!("{base_url}{path}"))
        .timeout(Duration::from_secs(30))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

/// A JSON signup body of about `bytes` bytes.
fn signup_of_size(bytes: usize) -> Vec<u8> {
    format!(
        r#"{{"email":"big@example.com","password":"correct horse battery","firstName":"A","lastName":"B","about":"{}"}}"#,
        "x".repeat(bytes)
    )
    .into_bytes()
}

#[tokio::test]
async fn a_body_over_lambdas_6_mb_quota_gets_api_gateways_413_without_reaching_the_function() {
    let stack = Stack::start().await;
    let (status, _, body) = send(
        &stack.base_url,
        "POST",
        "/auth/signup",
        &[("content-type", "application/json")],
        signup_of_size(MAX_LAMBDA_REQUEST + 1024),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body, r#"{"message":"Request Entity Too Large"}"#);
}

#[tokio::test]
async fn a_body_under_lambdas_quota_reaches_the_function_which_refuses_it_in_the_product_shape() {
    let stack = Stack::start().await;
    let (status, _, body) = send(
        &stack.base_url,
        "POST",
        "/auth/signup",
        &[("content-type", "application/json")],
        signup_of_size(5 * 1024 * 1024),
    )
    .await;
    assert_eq!(status, 413);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
}

#[tokio::test]
async fn a_function_response_over_lambdas_6_mb_quota_becomes_api_gateways_502() {
    let over = lambda_http::Response::new(lambda_http::Body::Text("x".repeat(MAX_LAMBDA_RESPONSE)));
    let answer = server::lambda_response("AuthFunction", over);
    assert_eq!(answer.status(), 502);
    let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .expect("body");
    assert_eq!(&bytes[..], br#"{"message":"Internal Server Error"}"#);

    let under = lambda_http::Response::new(lambda_http::Body::Text("x".repeat(MAX_LAMBDA_RESPONSE - 1024)));
    assert_eq!(server::lambda_response("AuthFunction", under).status(), 200);
}

#[tokio::test]
async fn a_handler_past_its_template_timeout_gets_500_internal_server_error() {
    // Redis answers nothing while paused and the handler's own Redis deadline is longer
    // than the function's, so only Lambda's timeout can end the request.
    let stack = Stack::start_with(&[("REDIS_TIMEOUT_MS", "20000")]).await;
    let template = template_with(&[(
        "    MemorySize: 256\n    Timeout: 10\n",
        "    MemorySize: 256\n    Timeout: 1\n",
    )]);
    let gateway = LocalGateway::start(&stack, &template, |_| {}).await;
    stack.redis.pause().expect("pause redis");
    let started = Instant::now();
    let (status, _, body) = send(&gateway.base_url, "GET", "/users/someone", &[], Vec::new()).await;
    let took = started.elapsed();
    stack.redis.resume().expect("resume redis");
    assert_eq!(status, 500);
    assert_eq!(body, r#"{"message":"Internal Server Error"}"#);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}; the template says 1 s"
    );
}

#[tokio::test]
async fn api_gateway_gives_up_at_its_integration_timeout_with_503_service_unavailable() {
    let stack = Stack::start_with(&[("REDIS_TIMEOUT_MS", "20000")]).await;
    // AWS: 30 s, shorter than the functions' 10 s template timeout only here.
    let gateway = LocalGateway::start(&stack, &template_with(&[]), |g| {
        g.functions.set_integration_timeout(Duration::from_millis(500));
    })
    .await;
    stack.redis.pause().expect("pause redis");
    let started = Instant::now();
    let (status, _, body) = send(&gateway.base_url, "GET", "/users/someone", &[], Vec::new()).await;
    let took = started.elapsed();
    stack.redis.resume().expect("resume redis");
    assert_eq!(status, 503);
    assert_eq!(body, r#"{"message":"Service Unavailable"}"#);
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

#[tokio::test]
async fn a_cors_preflight_is_answered_by_the_gateway_with_the_templates_configuration() {
    let stack = Stack::start().await;
    let (status, headers, body) = send(
        &stack.base_url,
        "OPTIONS",
        "/profile",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "authorization,content-type"),
        ],
        Vec::new(),
    )
    .await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(status, 204);
    assert_eq!(body, "");
    assert_eq!(header("access-control-allow-origin"), "*");
    assert!(header("access-control-allow-methods").contains("PATCH"), "{headers:?}");
    assert!(
        header("access-control-allow-headers").contains("authorization"),
        "{headers:?}"
    );
    assert_eq!(header("access-control-max-age"), "600");
}

#[tokio::test]
async fn requests_past_the_templates_throttling_burst_get_429_too_many_requests() {
    let stack = Stack::start().await;
    let template = template_with(&[
        (
            "    Default: 500\n    MinValue: 1\n    Description: Steady-state requests per second the HTTP API",
            "    Default: 1\n    MinValue: 1\n    Description: Steady-state requests per second the HTTP API",
        ),
        (
            "    Default: 1000\n    MinValue: 1\n    Description: Burst of requests the HTTP API",
            "    Default: 3\n    MinValue: 1\n    Description: Burst of requests the HTTP API",
        ),
    ]);
    let gateway = LocalGateway::start(&stack, &template, |_| {}).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(send(&gateway.base_url, "GET", "/no-such-route", &[], Vec::new()).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert!(
        statuses[..3].iter().all(|s| *s == 404),
        "the burst of 3 passes: {statuses:?}"
    );
    assert_eq!(statuses[3], 429, "{statuses:?}");
    assert_eq!(answers[3].2, r#"{"message":"Too Many Requests"}"#);
}
