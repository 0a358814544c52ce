//! Projections of the topics: what the analytics consumer derives from them (milestones,
//! daily summaries), and rebuilding the consumers' Redis state from the topics. One test
//! binary, one module per concern.

mod derived;
mod rebuild;
