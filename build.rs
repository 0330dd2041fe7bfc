//! Links the `lockkeeper` binary with packed relative relocations (DT_RELR) where the toolchain
//! and C library support them.
//!
//! A position-independent Rust binary carries tens of thousands of relative relocations (every
//! vtable and static pointer). In the classic format they take about half a megabyte, which the
//! dynamic loader reads, and keeps resident, at every start; packed they take a few kilobytes.
//! For a sidecar that runs in every pod of a fleet, that is most of a megabyte of resident memory
//! per pod for nothing.
//!
//! Support needs a GNU-compatible linker that knows `-z pack-relative-relocs` and a glibc that
//! understands the result (2.36 or later). Rather than guess from version numbers, a native
//! build links and runs a one-line C program with the flag; cross builds, musl (the container
//! image's static build) and any failure keep the classic format.

use std::path::PathBuf;
use std::process::Command;

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
        || std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu")
        || std::env::var("HOST") != std::env::var("TARGET")
    {
        return;
    }
    if linker_supports_relr() {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    }
}

/// Links a trivial program with the flag (warnings fatal, so an unknown `-z` option that the
/// linker would merely ignore counts as unsupported) and runs it.
fn linker_supports_relr() -> bool {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let src = out.join("relr_probe.c");
    let exe = out.join("relr_probe");
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let linked = Command::new(cc)
        .args(["-pie", "-fPIE", "-Wl,--fatal-warnings", FLAG, "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success());
    linked && Command::new(&exe).status().is_ok_and(|s| s.success())
}
