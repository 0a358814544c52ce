//! The local stack as a developer meets it (issue 15): AWS's service limits answered the
//! way API Gateway and Lambda answer them, the template check's exit status, and
//! `./infra/local/run --watch`'s restart logic. One binary, one module per concern.

mod check;
mod http_limits;
mod support;
mod triggers;
mod watch;
mod websocket_limits;
