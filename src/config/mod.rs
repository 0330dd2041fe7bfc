//! The sidecar's configuration: the YAML file schema ([`FileConfig`]), the resolved and
//! validated [`Config`], and [`load`], which merges defaults < YAML file < environment < flags.
//!
//! Every invalid setting is reported before anything starts, as one [`ConfigError`] naming the
//! field (`invalid configuration: lock.ttl: must be at least 2s (got 1s)`); the process then
//! exits with [`ConfigError::EXIT_CODE`]. Nothing here panics on user input.
//!
//! The module is split by job, and everything public is re-exported here:
//! - `values`: the resolved [`Config`] and the types its settings are made of;
//! - `file`: the YAML file schema and its error messages;
//! - `overrides`: what flags and environment variables gave ([`Overrides`]);
//! - `resolve`: precedence, [`load`] and [`load_exec`];
//! - `checks`: the validators, one per setting.
//!
//! **Dependency direction: the command line knows the configuration, never the reverse.**
//! `crate::cli` defines the clap parser and converts what it parsed into the plain
//! [`Overrides`] / [`ExecOverrides`] defined here (`From<&LockArgs>`, `From<&ExecArgs>`); it
//! also teaches clap the value types it borrows from here ([`LogFormat`], [`KubeMode`]) and
//! uses [`parse_duration`]. This module imports nothing from `cli` and nothing from clap, so the
//! configuration can be built and tested without a command line (the fuzz targets and tests
//! can pass either the parsed arguments or a hand-made [`Overrides`]).

mod checks;
mod file;
mod overrides;
mod resolve;
mod values;

pub use file::{
    EtcdSection, ExecSection, FileConfig, KubernetesSection, LockSection, LogSection,
    ShutdownSection,
};
pub use overrides::{ExecOverrides, Overrides};
pub use resolve::{load, load_exec, system_env};
pub use values::{
    parse_duration, Config, ConfigError, KubeConfig, KubeMode, LogFormat, Secret,
    DEFAULT_CONDITION_TYPE, DEFAULT_LISTEN,
};
