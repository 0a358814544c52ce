//! `./infra/local/run --no-triggers` (`LOCAL_MSK_TRIGGERS=off`): the gateway binary serves
//! the HTTP API without the emulated MSK event source mappings, and says so.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use devconnect_tests::{servers::free_port, Stack};
use local_gateway::{default_template_path, template::Template};
use serde_json::json;

use crate::check::GATEWAY;

/// A `local-gateway serve` process; killed when dropped.
struct Served {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(stack: &Stack, port: u16, triggers: &str) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(GATEWAY)
            .arg("serve")
            .env("PORT", port.to_string())
            .env("REDIS_URL", stack.redis.url())
            .env("KAFKA_BROKERS", stack.broker.address())
            .env("COOKIE_SECURE", "false")
            .env("LOCAL_MSK_TRIGGERS", triggers)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("local-gateway starts");
        Self { child, log }
    }

    fn output(&self) -> String {
        let mut text = String::new();
        let _ = self.log.reopen().and_then(|mut f| f.read_to_string(&mut text));
        text
    }
}

#[tokio::test]
async fn with_triggers_off_the_gateway_says_so_and_no_consumer_reads_the_events() {
    let stack = Stack::start().await;
    let port = free_port();
    let served = Served::start(&stack, port, "off");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served.output().contains("listening on") {
        assert!(
            Instant::now() < deadline,
            "not serving within 30 s:\n{}",
            served.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.output().contains("MSK triggers off"), "{}", served.output());

    let signup = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/auth/signup"))
        .json(&json!({"email": "no-triggers@example.com", "password": "correct horse battery", "firstName": "No", "lastName": "Triggers"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the HTTP API answers");
    assert_eq!(signup.status(), 201);
    // With triggers on, every mapping commits its starting offsets within milliseconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = stack.events("user-events").await;
    assert!(
        events.iter().any(|e| e.raw["eventType"] == "USER_SIGNUP"),
        "the event still reaches the broker"
    );
    let template = Template::load(&default_template_path()).expect("template.yaml");
    for source in &template.msk_sources {
        let committed: bool = redis::cmd("EXISTS")
            .arg(devconnect::keys::local_offsets(&source.group))
            .query_async(&mut stack.state.store.conn())
            .await
            .expect("EXISTS");
        assert!(
            !committed,
            "{} read {} with triggers off",
            source.function, source.topic
        );
    }
}

#[test]
fn an_unknown_triggers_value_stops_the_gateway_naming_the_variable() {
    let output = Command::new(GATEWAY)
        .arg("serve")
        .env("LOCAL_MSK_TRIGGERS", "sometimes")
        .env("PORT", free_port().to_string())
        .output()
        .expect("local-gateway runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("LOCAL_MSK_TRIGGERS"), "{stderr}");
}
