//! The email and SMS senders: what a recipient gets, exactly once, and what happens when
//! the provider throttles, fails or refuses. SES and SNS are the moto double (real SDK
//! calls over HTTP); throttling, which moto cannot do, is a fake channel in-process.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{
    delivery::{Channel as ChannelName, Delivery},
    events::EventType,
    producer::OutgoingRecord,
};
use devconnect_senders::{
    aws,
    email::{Sender, SesEmail},
    sms::SnsSms,
    Channel, ProviderId, SendError,
};
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    servers::MotoServer,
    Stack,
};
use serde_json::{json, Value};

const USER: &str = "0190c3a4-0000-7000-8000-00000000000a";
const FROM: &str = "no-reply@devconnect.test";
const UNSUBSCRIBE: &str = "http://127.0.0.1/unsubscribe?token=signed-token";

fn email_to(address: &str, notification_id: &str) -> Delivery {
    Delivery {
        notification_id: notification_id.into(),
        channel: ChannelName::Email,
        user_id: USER.into(),
        kind: "CONNECTION_REQUEST".into(),
        address: address.into(),
        subject: "Ada wants to connect".into(),
        text: "Ada Lovelace sent you a connection request.".into(),
        unsubscribe_url: Some(UNSUBSCRIBE.into()),
    }
}

fn sms_to(number: &str, notification_id: &str) -> Delivery {
    Delivery {
        notification_id: notification_id.into(),
        channel: ChannelName::Sms,
        user_id: USER.into(),
        kind: "CONNECTION_REQUEST".into(),
        address: number.into(),
        subject: String::new(),
        text: "DevConnect: Ada Lovelace sent you a connection request.".into(),
        unsubscribe_url: None,
    }
}

/// The record the channels router produces for `delivery`.
fn requested(delivery: &Delivery) -> Vec<u8> {
    let event_type = match delivery.channel {
        ChannelName::Email => EventType::EmailRequested,
        ChannelName::Sms => EventType::SmsRequested,
    };
    bytes(&envelope(event_type, USER, serde_json::to_value(delivery).unwrap()))
}

fn email_batch(deliveries: &[&Delivery]) -> KafkaEvent {
    batch(
        "email-events",
        &deliveries.iter().map(|d| requested(d)).collect::<Vec<_>>(),
    )
}

/// SES on moto, sending as [`FROM`], whose identity exists (so moto accepts it).
async fn ses(moto: &MotoServer) -> SesEmail {
    let ses = ses_unverified(moto);
    ses.client()
        .create_email_identity()
        .email_identity(FROM)
        .send()
        .await
        .expect("CreateEmailIdentity on moto");
    ses
}

fn ses_unverified(moto: &MotoServer) -> SesEmail {
    SesEmail::new(
        &aws::local(&moto.url()),
        Sender {
            from: FROM.into(),
            identity_arn: None,
        },
    )
}

/// What moto holds: SES messages and SNS SMS, as its data endpoint lists them.
async fn moto_data(moto: &MotoServer) -> Value {
    reqwest::get(format!("{}/moto-api/data.json", moto.url()))
        .await
        .expect("moto data")
        .json()
        .await
        .expect("moto data JSON")
}

async fn emails_at_ses(moto: &MotoServer, to: &str) -> Vec<Value> {
    let data = moto_data(moto).await;
    data["ses"]["Message"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["destinations"]["ToAddresses"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(to)))
        })
        .cloned()
        .collect()
}

async fn sms_at_sns(moto: &MotoServer) -> Vec<Value> {
    moto_data(moto).await["sns"]["SMS"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn consume(stack: &Stack, channel: &dyn Channel, kind: ChannelName, event: KafkaEvent) -> Value {
    serde_json::to_value(devconnect_senders::consume(&stack.state, channel, kind, event).await).unwrap()
}

async fn dead_letters(stack: &Stack, consumer: &str) -> Vec<Value> {
    for _ in 0..100 {
        let found: Vec<Value> = stack
            .dead_letters()
            .await
            .into_iter()
            .filter(|d| d["consumer"] == consumer)
            .collect();
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Vec::new()
}

/// A provider that answers from a script (then accepts), counting calls.
struct Scripted {
    answers: Mutex<Vec<SendError>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(answers: Vec<SendError>) -> Self {
        Self {
            answers: Mutex::new(answers),
            calls: AtomicUsize::new(0),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Channel for Scripted {
    async fn send(&self, _: &Delivery) -> Result<ProviderId, SendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap();
        match answers.is_empty() {
            true => Ok(ProviderId("fake-1".into())),
            false => Err(answers.remove(0)),
        }
    }
}

#[tokio::test]
async fn an_email_requested_on_the_broker_shows_up_once_in_the_local_outbox_with_its_unsubscribe_link() {
    let stack = Stack::start_full(&[]).await;
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000e1");
    stack
        .state
        .producer
        .send(OutgoingRecord {
            topic: "email-events".into(),
            key: USER.into(),
            value: requested(&delivery),
            headers: Default::default(),
        })
        .await
        .expect("produce EMAIL_REQUESTED");

    let client = stack.client();
    let mut mail = Value::Null;
    for _ in 0..200 {
        mail = client.get("/_local/outbox/mail").await.body;
        if mail.as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mail = mail.as_array().cloned().unwrap_or_default();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0]["to"], "grace@example.com");
    assert_eq!(mail[0]["subject"], "Ada wants to connect");
    assert_eq!(mail[0]["unsubscribeUrl"], UNSUBSCRIBE);
    assert!(mail[0]["text"].as_str().unwrap().contains(UNSUBSCRIBE), "{}", mail[0]);
    assert_eq!(mail[0]["listUnsubscribe"], format!("<{UNSUBSCRIBE}>"));
    assert_eq!(client.get("/_local/outbox/sms").await.body, json!([]));
}

#[tokio::test]
async fn an_email_reaches_ses_with_the_unsubscribe_link_in_its_text() {
    let (stack, moto) = (Stack::start().await, MotoServer::start().await.expect("moto"));
    let ses = ses(&moto).await;
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000e2");

    let outcome = consume(&stack, &ses, ChannelName::Email, email_batch(&[&delivery])).await;

    assert_eq!(
        (outcome["applied"].as_u64(), outcome["batchItemFailures"].clone()),
        (Some(1), json!([]))
    );
    let sent = emails_at_ses(&moto, "grace@example.com").await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0]["source"].as_str(), sent[0]["subject"].as_str()),
        (Some(FROM), Some("Ada wants to connect"))
    );
    let body = sent[0]["body"].as_str().unwrap();
    assert!(body.starts_with(&delivery.text) && body.contains(UNSUBSCRIBE), "{body}");
}

#[tokio::test]
async fn the_same_email_requested_delivered_twice_sends_one_email() {
    let (stack, moto) = (Stack::start().await, MotoServer::start().await.expect("moto"));
    let ses = ses(&moto).await;
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000e3");

    let first = consume(&stack, &ses, ChannelName::Email, email_batch(&[&delivery])).await;
    // Redelivered by the event source, and produced twice into one batch.
    let again = consume(&stack, &ses, ChannelName::Email, email_batch(&[&delivery, &delivery])).await;

    assert_eq!(first["applied"], 1);
    assert_eq!(
        (again["applied"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(emails_at_ses(&moto, "grace@example.com").await.len(), 1);
}

#[tokio::test]
async fn a_throttled_provider_is_retried_with_backoff_and_the_email_is_sent_once() {
    let stack = Stack::start().await;
    let throttling = Scripted::new(vec![
        SendError::Throttled("TooManyRequestsException".into()),
        SendError::Throttled("TooManyRequestsException".into()),
    ]);
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000e4");

    let outcome = consume(&stack, &throttling, ChannelName::Email, email_batch(&[&delivery])).await;

    assert_eq!(
        (outcome["applied"].as_u64(), outcome["batchItemFailures"].clone()),
        (Some(1), json!([]))
    );
    assert_eq!(
        throttling.calls(),
        3,
        "two throttled calls, then the one that was accepted"
    );
    let again = consume(&stack, &throttling, ChannelName::Email, email_batch(&[&delivery])).await;
    assert_eq!((again["duplicates"].as_u64(), throttling.calls()), (Some(1), 3));
}

#[tokio::test]
async fn a_provider_throttling_past_the_deadline_gives_up_in_time() {
    let stack = Stack::start().await;
    let always = Scripted::new(vec![SendError::Throttled("TooManyRequestsException".into()); 1000]);
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000e5");
    let started = tokio::time::Instant::now();

    let result = devconnect_senders::send(&stack.state, &always, &delivery, started + Duration::from_millis(700)).await;

    assert!(matches!(result, Err(SendError::Throttled(_))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(always.calls() >= 3, "backed off and retried: {} calls", always.calls());
}

#[tokio::test]
async fn a_provider_outage_hands_the_record_back_and_the_retry_sends_it_once() {
    let stack = Stack::start().await;
    let down = Scripted::new(vec![SendError::Transient(
        "dispatch failure: connection refused".into(),
    )]);
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000e6");
    let after = email_to("linus@example.com", "0190c3a4-0000-7000-8000-0000000000e7");

    let first = consume(&stack, &down, ChannelName::Email, email_batch(&[&delivery, &after])).await;
    let retry = consume(&stack, &down, ChannelName::Email, email_batch(&[&delivery, &after])).await;

    assert_eq!(
        first["batchItemFailures"],
        json!([{"itemIdentifier": {"partition": "email-events-0", "offset": 0}}]),
        "{first}"
    );
    assert_eq!(
        (first["applied"].as_u64(), down.calls()),
        (Some(0), 3),
        "the record after it waited"
    );
    assert_eq!(
        (retry["applied"].as_u64(), retry["batchItemFailures"].clone()),
        (Some(2), json!([]))
    );
}

#[tokio::test]
async fn an_email_the_provider_rejects_is_dead_lettered_with_its_reason() {
    let (stack, moto) = (Stack::start().await, MotoServer::start().await.expect("moto"));
    // No identity for FROM: SES refuses the message (MessageRejected), for good.
    let ses = ses_unverified(&moto);
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000e8");

    let outcome = consume(&stack, &ses, ChannelName::Email, email_batch(&[&delivery])).await;

    assert_eq!(
        (outcome["deadLettered"].as_u64(), outcome["batchItemFailures"].clone()),
        (Some(1), json!([]))
    );
    let dead = dead_letters(&stack, "email-sender").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("MessageRejected") && reason.contains("not verified"),
        "{reason}"
    );
    assert!(emails_at_ses(&moto, "grace@example.com").await.is_empty());
}

#[tokio::test]
async fn a_delivery_whose_marker_is_not_a_string_is_dead_lettered_naming_it_without_a_provider_call() {
    let stack = Stack::start().await;
    let provider = Scripted::new(Vec::new());
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000ea");
    let marker = devconnect::keys::delivery(&delivery.notification_id, "email");
    let _: () = stack.command(&["HSET", &marker, "not", "a string"]).await;

    let outcome = consume(&stack, &provider, ChannelName::Email, email_batch(&[&delivery])).await;

    assert_eq!(
        (outcome["deadLettered"].as_u64(), provider.calls()),
        (Some(1), 0),
        "{outcome}"
    );
    let reason = dead_letters(&stack, "email-sender").await[0]["reason"].to_string();
    assert!(reason.contains("WRONGTYPE") && reason.contains(&marker), "{reason}");
    let kind: String = stack.command(&["TYPE", &marker]).await;
    assert_eq!(kind, "hash", "the broken marker is left as it was");
}

#[tokio::test]
async fn a_delivery_to_a_malformed_address_is_dead_lettered_without_a_provider_call() {
    let stack = Stack::start().await;
    let provider = Scripted::new(Vec::new());
    let delivery = email_to("not-an-address", "0190c3a4-0000-7000-8000-0000000000e9");

    let outcome = consume(&stack, &provider, ChannelName::Email, email_batch(&[&delivery])).await;

    assert_eq!((outcome["deadLettered"].as_u64(), provider.calls()), (Some(1), 0));
    let dead = dead_letters(&stack, "email-sender").await;
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("not an email address"),
        "{dead:?}"
    );
}

#[tokio::test]
async fn an_sms_goes_to_the_phone_number() {
    let (stack, moto) = (Stack::start().await, MotoServer::start().await.expect("moto"));
    let sns = SnsSms::new(&aws::local(&moto.url()));
    let delivery = sms_to("+15555550100", "0190c3a4-0000-7000-8000-0000000000f1");

    let outcome = consume(
        &stack,
        &sns,
        ChannelName::Sms,
        batch("sms-events", &[requested(&delivery)]),
    )
    .await;

    assert_eq!(
        (outcome["applied"].as_u64(), outcome["batchItemFailures"].clone()),
        (Some(1), json!([]))
    );
    let sms = sms_at_sns(&moto).await;
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert_eq!(
        (sms[0]["phone_number"].as_str(), sms[0]["message"].as_str()),
        (Some("+15555550100"), Some(delivery.text.as_str()))
    );
}

#[tokio::test]
async fn an_email_requested_on_the_sms_sender_is_dead_lettered_and_not_texted() {
    let stack = Stack::start().await;
    let provider = Arc::new(Scripted::new(Vec::new()));
    let delivery = email_to("grace@example.com", "0190c3a4-0000-7000-8000-0000000000f2");

    let outcome = consume(&stack, &provider, ChannelName::Sms, email_batch(&[&delivery])).await;

    assert_eq!((outcome["deadLettered"].as_u64(), provider.calls()), (Some(1), 0));
}

/// Issue 13's story end to end on the local stack: request → notifications consumer →
/// channels router → email-events → email sender → what Bob would find in his inbox.
#[tokio::test]
async fn a_request_to_a_user_with_email_on_and_sms_off_delivers_exactly_one_email_and_no_sms() {
    use crate::router::{set_preferences, verify_phone};

    let stack = Stack::start_full(&[]).await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    // Bob has a verified phone, so only his choice keeps the SMS away.
    verify_phone(&stack, &b.client, &b.id, "+33612345678").await;
    set_preferences(
        &b.client,
        json!({"kinds": {"CONNECTION_REQUEST": {"email": true, "sms": false}}}),
    )
    .await;

    assert_eq!(a.send_request("interested", &b.id).await.status, 201);

    let client = stack.client();
    let of_kind = |list: &Value, kind: &str| -> Vec<Value> {
        let all = list.as_array().cloned().unwrap_or_default();
        all.into_iter()
            .filter(|m| m["kind"] == kind && m["userId"] == b.id.as_str())
            .collect()
    };
    for _ in 0..300 {
        if !of_kind(&client.get("/_local/outbox/mail").await.body, "CONNECTION_REQUEST").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The router decides email and SMS in one step; give an SMS the same time to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let emails = of_kind(&client.get("/_local/outbox/mail").await.body, "CONNECTION_REQUEST");
    let texts = client.get("/_local/outbox/sms").await.body;
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0]["to"], "bob@example.com");
    let link = emails[0]["unsubscribeUrl"].as_str().expect("an unsubscribe link");
    assert!(emails[0]["text"].as_str().unwrap().contains(link), "{}", emails[0]);
    assert!(of_kind(&texts, "CONNECTION_REQUEST").is_empty(), "{texts}");
    assert_eq!(
        of_kind(&texts, "PHONE_VERIFICATION").len(),
        1,
        "the SMS sender was running: {texts}"
    );
}
