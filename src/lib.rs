//! The lockkeeper sidecar: holds one etcd lock on behalf of a pod and publishes the truth about
//! it (HTTP readiness and events, Prometheus metrics, Kubernetes conditions and labels), or runs
//! a command only while the lock is held (`lockkeeper exec`).
//!
//! It uses the lock library, the `lockkeeper` crate, through its public API like any other
//! caller. These modules are the `lockkeeper` binary's (src/main.rs); they are a library too so
//! that the integration tests in tests/ can drive them directly.
#![deny(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod exec;
pub mod history;
pub mod http;
pub mod kubernetes;
pub mod metrics;
pub mod sidecar;
pub mod signals;
pub mod status;
pub mod telemetry;
pub mod wait;
