//! The DevConnect shared library: everything two or more functions need.
//!
//! Module map, from the outside in:
//! - [`config`]: typed configuration from environment variables, read once per container.
//! - [`discovery`]: Redis and Kafka endpoints looked up from AWS resource names, once, at init.
//! - [`state`]: [`state::AppState`], the clients a handler needs, built once in `main`.
//! - [`api`]: API Gateway v2 request helpers and the single JSON response shape.
//! - [`openapi`]: the OpenAPI 3.1 document's shared parts (error shape, auth, rate-limit headers).
//! - [`error`]: [`error::AppError`], the one error type, mapped to HTTP in one place.
//! - [`session`]: bearer tokens, and authentication + rate limit in one Redis round trip.
//! - [`rate_limit`]: tiered fixed-window limits and their headers.
//! - [`user`]: the user record, its validation rules and its Redis persistence.
//! - [`clock`]: "now", the RFC 3339 wire format and UTC day keys, in one place.
//! - [`keys`]: every Redis key name, so hash-slot rules are checked in one file.
//! - [`script`]: Lua scripts that check every precondition before their first write.
//! - [`store`]: the Redis connection (multiplexed, auto-reconnecting, bounded timeouts).
//! - [`events`]: event types, topics and the JSON envelope.
//! - [`frames`]: the realtime WebSocket frames, in and out.
//! - [`asyncapi`]: `docs/asyncapi.json` and the payload JSON Schemas, generated from the types.
//! - [`payloads`]: one struct per event type's `data`, used by producers and consumers alike.
//! - [`kafka_connection`]: brokers plus TLS/SASL per `KAFKA_SECURITY`, the one way to build a Kafka client.
//! - [`msk_iam`]: MSK IAM tokens (SigV4-signed, cached) for SASL OAUTHBEARER.
//! - [`tls`]: the process's rustls crypto provider and root certificates.
//! - [`producer`]: the Kafka producer (pure Rust, key-hash partitioning).
//! - [`consumer`]: decoding MSK batches, poison records and dead letters; the Kafka bootstraps' runtime loop.
//! - [`bootstrap`]: the HTTP and scheduled bootstraps' runtime loops, compiled once.
//! - [`outbox`]: events that could not be produced are parked in Redis and relayed later.
//! - [`publisher`]: produce-or-park, the only way handlers emit events.
//! - [`projection`]: which generation of the notifications/analytics keys readers use.
//! - [`rebuild`]: replaying a projection from the topics into a new generation, then switching.
//! - [`metrics`]: metric names (shared by the code, the alarms and the local endpoint) and
//!   [`metrics::Metrics`], the handle that records them: EMF to stdout in Lambda, in memory locally.
//! - [`telemetry`]: JSON structured logs.
#![warn(missing_docs)]

pub mod api;
pub mod asyncapi;
pub mod aws_http;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod delivery;
pub mod discovery;
pub mod error;
pub mod events;
pub mod frames;
pub mod kafka_connection;
pub mod keys;
pub mod metrics;
pub mod msk_iam;
pub mod openapi;
pub mod outbox;
pub mod payloads;
pub mod presence;
pub mod producer;
pub mod projection;
pub mod publisher;
pub mod rate_limit;
pub mod rebuild;
pub mod script;
pub mod session;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod user;

pub use error::AppError;
pub use state::AppState;
