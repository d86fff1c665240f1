//! safety-gate: a Kubernetes admission webhook that stops the changes that
//! take clusters down, explains each refusal, and leaves an audit trail.
//!
//! Data flows one way: HTTP/CLI → [`admission`] (decode, encode) → [`policy`]
//! (pure engine) → decision. [`cluster`] supplies the state policies read.

#![forbid(unsafe_code)]

pub mod admission;
pub mod cli;
pub mod cluster;
pub mod deploy;
pub mod documents;
pub mod playground;
pub mod policy;
pub mod server;
