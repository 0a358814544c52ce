//! The AsyncAPI 3.0 document of the events and of the realtime WebSocket API
//! (`docs/asyncapi.json`), and one JSON Schema per payload (`docs/events/*.schema.json`),
//! generated from the types in [`crate::payloads`], [`crate::events`] and [`crate::frames`].
//!
//! Nothing here is written by hand that the types already say: channels are the topics
//! ([`Topic::ALL`]), each event type is a message on the channel of its topic, sent by
//! the functions allowed to emit it, and its payload is the [`Envelope`] whose `data` is
//! that type's struct. The contract tests compare the committed files with [`files`], so
//! a payload change without the regenerated documents fails CI; regenerate with
//! `UPDATE_CONTRACT=1 cargo test -p devconnect-tests --test contract`.

use schemars::{generate::SchemaSettings, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::{
    consumer::DeadLetter,
    events::{Envelope, EventType, Topic, ENVELOPE_VERSION},
    frames::{ClientFrame, ServerFrame},
    payloads::Event,
};

/// Where the AsyncAPI document lives, relative to the repository root.
pub const DOCUMENT_PATH: &str = "docs/asyncapi.json";
/// Where the per-payload JSON Schemas live, relative to the repository root.
pub const SCHEMAS_DIR: &str = "docs/events";
/// Kafka partitions per topic (the local stack's and the template's default).
const PARTITIONS: u32 = 3;
/// The AsyncAPI Kafka bindings version used.
const KAFKA_BINDINGS: &str = "0.5.0";

/// Every generated file: (path relative to the repository root, contents).
pub fn files() -> Vec<(String, String)> {
    let mut out = vec![(DOCUMENT_PATH.to_string(), pretty(&document()))];
    for (name, schema) in payload_schemas() {
        out.push((format!("{SCHEMAS_DIR}/{name}.schema.json"), pretty(&schema)));
    }
    out
}

/// The standalone JSON Schema (draft-07) of each event type's `data`, named by the event
/// type (`USER_SIGNUP`), plus `envelope` (the envelope, any `data`) and `dead-letter`.
pub fn payload_schemas() -> Vec<(String, Value)> {
    let root = |schema: Schema| schema.to_value();
    let mut out: Vec<(String, Value)> = Event::root_schemas()
        .into_iter()
        .map(|(event_type, schema)| (event_type.as_str(), root(schema)))
        .collect();
    out.push(("envelope".into(), root(standalone::<Envelope>())));
    out.push(("dead-letter".into(), root(standalone::<DeadLetter>())));
    out
}

/// The schema of `T` on its own, as a draft-07 root with its own definitions.
pub(crate) fn standalone<T: JsonSchema>() -> Schema {
    SchemaSettings::draft07().into_generator().into_root_schema_for::<T>()
}

/// The AsyncAPI 3.0 document.
pub fn document() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft07().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    }));
    let envelope = generator.subschema_for::<Envelope>();
    let dead_letter = generator.subschema_for::<DeadLetter>();
    let client_frame = generator.subschema_for::<ClientFrame>();
    let server_frame = generator.subschema_for::<ServerFrame>();
    let payloads = Event::schemas(&mut generator);

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for topic in Topic::ALL {
        let name = topic.default_name();
        let mut channel_messages = Map::new();
        for (event_type, data) in payloads.iter().filter(|(t, _)| t.topic() == topic) {
            let id = event_type.as_str();
            messages.insert(id.clone(), event_message(*event_type, &envelope, data));
            channel_messages.insert(id.clone(), reference(&format!("#/components/messages/{id}")));
        }
        if topic == Topic::DeadLetter {
            messages.insert("DEAD_LETTER".into(), dead_letter_message(&dead_letter));
            channel_messages.insert("DEAD_LETTER".into(), reference("#/components/messages/DEAD_LETTER"));
        }
        let refs: Vec<Value> = channel_messages
            .keys()
            .map(|id| reference(&format!("#/channels/{name}/messages/{id}")))
            .collect();
        channels.insert(
            name.into(),
            json!({
                "address": name,
                "title": name,
                "description": format!("Kafka topic `{name}` (name overridable by `{}`).", topic.env_var()),
                "servers": [reference("#/servers/msk")],
                "messages": channel_messages,
                "bindings": {"kafka": {"topic": name, "partitions": PARTITIONS, "bindingVersion": KAFKA_BINDINGS}},
            }),
        );
        operations.insert(
            format!("produce.{name}"),
            json!({
                "action": "send",
                "title": format!("Produce to {name}"),
                "channel": reference(&format!("#/channels/{name}")),
                "messages": refs,
            }),
        );
    }

    messages.insert(
        "CLIENT_FRAME".into(),
        json!({
            "name": "ClientFrame",
            "title": "A frame the client sends (`action`)",
            "summary": "Sent on the socket; `ping` is answered with `pong`, anything else with an `error` frame.",
            "contentType": "application/json",
            "payload": client_frame,
        }),
    );
    messages.insert(
        "SERVER_FRAME".into(),
        json!({
            "name": "ServerFrame",
            "title": "A frame the server pushes (`type`)",
            "summary": "Pushed to a user's sockets: messages, notifications, presence of connections, typing, pong, errors.",
            "contentType": "application/json",
            "payload": server_frame,
        }),
    );
    channels.insert(
        "realtime".into(),
        json!({
            "address": "/",
            "title": "Realtime WebSocket",
            "description": "API Gateway WebSocket API. Connect with a single-use ticket \
                (`?ticket=` from POST /realtime/ticket) or the session token as the subprotocol \
                `[\"devconnect\", token]`; a token in the URL is refused. Limits: 128 KB per message, \
                32 KB per frame, 10 min idle, 2 h per connection.",
            "servers": [reference("#/servers/realtime")],
            "messages": {
                "clientFrame": reference("#/components/messages/CLIENT_FRAME"),
                "serverFrame": reference("#/components/messages/SERVER_FRAME"),
            },
        }),
    );
    operations.insert(
        "realtime.receive".into(),
        json!({
            "action": "receive",
            "title": "Frames from clients",
            "channel": reference("#/channels/realtime"),
            "messages": [reference("#/channels/realtime/messages/clientFrame")],
            "reply": {
                "channel": reference("#/channels/realtime"),
                "messages": [reference("#/channels/realtime/messages/serverFrame")],
            },
        }),
    );
    operations.insert(
        "realtime.send".into(),
        json!({
            "action": "send",
            "title": "Frames pushed to clients",
            "channel": reference("#/channels/realtime"),
            "messages": [reference("#/channels/realtime/messages/serverFrame")],
        }),
    );

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "DevConnect events and realtime API",
            "version": format!("{ENVELOPE_VERSION}.0.0"),
            "description": "Domain events on Amazon MSK (one topic per domain; the record key is the \
                acting user's id, so one user's events stay ordered; consumers dedupe by `eventId`) \
                and the realtime WebSocket API. Generated from the Rust types (`devconnect::asyncapi`); \
                do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "msk": {
                "host": "{bootstrapBrokers}",
                "protocol": "kafka-secure",
                "description": "Amazon MSK with IAM auth (SASL OAUTHBEARER); locally, tansu without auth.",
                "variables": {"bootstrapBrokers": {"description": "GetBootstrapBrokers(MSK_CLUSTER_ARN), or KAFKA_BROKERS."}},
            },
            "realtime": {
                "host": "{apiId}.execute-api.{region}.amazonaws.com",
                "pathname": "/{stage}",
                "protocol": "wss",
                "description": "The WebSocket API; locally, the local gateway's WebSocket port.",
                "variables": {"apiId": {}, "region": {}, "stage": {}},
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": generator.take_definitions(true),
            "messages": messages,
        },
    })
}

/// One event type as an AsyncAPI message: the envelope with this type's `data`.
fn event_message(event_type: EventType, envelope: &Schema, data: &Schema) -> Value {
    let id = event_type.as_str();
    json!({
        "name": id,
        "title": id,
        "summary": format!("Produced by {} to `{}`.", event_type.allowed_sources().join(", "), event_type.topic().default_name()),
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "eventType": {"const": id, "description": "Kafka header: the event type (UTF-8)."},
                "eventId": {"type": "string", "format": "uuid", "description": "Kafka header: the envelope's eventId."},
            },
        },
        "payload": {
            "allOf": [
                envelope,
                {
                    "type": "object",
                    "properties": {
                        "eventType": {"const": id},
                        "source": {"enum": event_type.allowed_sources()},
                        "data": data,
                    },
                },
            ],
        },
        "bindings": {"kafka": {"key": key_schema(), "bindingVersion": KAFKA_BINDINGS}},
    })
}

/// What a consumer sends to dead-letter-events.
fn dead_letter_message(dead_letter: &Schema) -> Value {
    json!({
        "name": "DEAD_LETTER",
        "title": "A record a consumer could not process",
        "summary": "Produced by any consumer; the original value is kept (base64), cut past 192 KiB.",
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {"consumer": {"type": "string", "description": "Kafka header: the consumer's name."}},
        },
        "payload": dead_letter,
        "bindings": {"kafka": {
            "key": {"type": "string", "description": "`<topic>-<partition>-<offset>` of the original record."},
            "bindingVersion": KAFKA_BINDINGS,
        }},
    })
}

/// The record key of every event: the acting user's id.
fn key_schema() -> Value {
    json!({"type": "string", "format": "uuid", "description": "The acting user's id (the envelope's `key`)."})
}

fn reference(to: &str) -> Value {
    json!({ "$ref": to })
}

/// Stable, reviewable JSON: two-space indent and a final newline.
fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_a_message_on_its_topics_channel() {
        let doc = document();
        let channel = &doc["channels"]["message-events"]["messages"];
        assert!(channel.get("MESSAGE_SENT").is_some(), "{channel}");
        assert!(channel.get("USER_SIGNUP").is_none());
        assert_eq!(
            doc["components"]["messages"]["MESSAGE_SENT"]["payload"]["allOf"][1]["properties"]["data"]["$ref"],
            "#/components/schemas/MessageSent"
        );
    }

    #[test]
    fn every_reference_in_the_document_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not local"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| collect_refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
