//! The machine and the versions of everything measured, and their table in the report.

use std::fmt::Write as _;

use crate::results::Results;
use crate::Config;

fn cmd_line(prog: &str, args: &[&str], env: &[(&str, &str)]) -> Option<String> {
    let out = std::process::Command::new(prog)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())?
        .to_owned();
    Some(line)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine and the versions of everything measured, as (what, value) pairs.
pub async fn machine_info(cfg: &Config) -> Vec<(String, String)> {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".into());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let etcdctl = cfg.etcdctl.display().to_string();
    let python = cfg.python.display().to_string();
    let py_versions = cmd_line(
        &python,
        &[
            "-c",
            "import importlib.metadata as m, sys; print(' '.join('%s %s' % (p, m.version(p)) for p in ['etcd3', 'grpcio', 'protobuf', 'tenacity']), '/ Python', sys.version.split()[0])",
        ],
        &[],
    )
    .unwrap_or_else(|| "unknown".into());
    let git = cmd_line("git", &["describe", "--always", "--dirty"], &[]).unwrap_or_default();
    let mut v = vec![
        (
            "CPU".to_owned(),
            format!("{model}, {cpus} logical CPUs available"),
        ),
        (
            "Memory".to_owned(),
            format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0),
        ),
        ("OS / kernel".to_owned(), format!("{os} / Linux {kernel}")),
        ("Load average at start".to_owned(), loadavg()),
        (
            "etcd".to_owned(),
            cmd_line("etcd", &["--version"], &[]).unwrap_or_else(|| "unknown".into()),
        ),
        (
            "etcdctl".to_owned(),
            cmd_line(&etcdctl, &["version"], &[("ETCDCTL_API", "3")])
                .unwrap_or_else(|| "unknown".into()),
        ),
        ("python-etcd3".to_owned(), py_versions),
        (
            "lockkeeper".to_owned(),
            format!(
                "{} (git {git}), release profile; etcd-client 0.21",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        (
            "Rust".to_owned(),
            cmd_line("rustc", &["--version"], &[]).unwrap_or_else(|| "unknown".into()),
        ),
    ];
    if !cfg.cluster_note.is_empty() {
        v.push(("Cluster".to_owned(), cfg.cluster_note.clone()));
    }
    v
}

/// "Machine and versions": what `machine_info` found, the etcd leader and the load at the end.
pub(super) fn section(o: &mut String, machine: &[(String, String)], res: &Results) {
    let _ = writeln!(o, "## Machine and versions\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    for (k, v) in machine {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(
        o,
        "| etcd leader | member {} of 3 (python-etcd3 talks to one member: the member is rotated over the runs) |",
        res.leader.map_or("?".into(), |l| l.to_string())
    );
    let _ = writeln!(o, "| Load average at end | {} |\n", loadavg());
}
