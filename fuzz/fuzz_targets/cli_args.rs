#![no_main]
//! Fuzzes `lockkeeper run` arguments (NUL-separated): clap, then resolve and validate
//! (fuzz/harness.rs).

#[path = "../harness.rs"]
#[allow(dead_code)] // each target uses one of the harness functions
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::cli_args(data));
