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
