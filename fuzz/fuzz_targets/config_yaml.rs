#![no_main]
//! Fuzzes the YAML configuration file: parse, resolve, validate (fuzz/harness.rs).

#[path = "../harness.rs"]
#[allow(dead_code)] // each target uses one of the harness functions
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::config_yaml(data));
