//! The test harness: real servers on free ports, the real handlers in-process.
//!
//! Like mini-redis's tests and zero-to-production's `spawn_app`: every test gets
//! its own `redis-server` and `tansu` broker (never the machine's shared Redis),
//! the application state built against them, and the local gateway on port 0.
//! Binaries come from `$REDIS_SERVER_BIN` / `$TANSU_BIN` (set by ./infra/local/test),
//! else from PATH, else from ~/.cache/devconnect/bin.

pub mod kafka;
pub mod round_trips;
pub mod runtime_api;
pub mod servers;
pub mod social;
pub mod socket;
pub mod stack;

pub use stack::{Client, Stack};
