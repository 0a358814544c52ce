//! Contracts: the published API documents match the code, and clients that trust them
//! are not surprised. One test binary, one module per document.

mod asyncapi;
mod openapi;
