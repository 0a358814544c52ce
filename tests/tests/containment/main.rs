//! Failure containment: every failure stays bounded, visible and local to the record
//! that caused it. One test binary (each links the AWS SDK), one module per concern.

mod consumers;
mod emulator;
mod hangs;
mod outbox;
mod wrong_type;
