//! What every process wrapper of the test kit (sidecars, `exec`, etcd members) needs: signals
//! by pid, the kernel's view of a process's state, and a clean environment for a child.

use std::env;
use std::fs;
use std::process::Command;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Sends `sig` to `pid`.
pub fn send_signal(pid: u32, sig: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::Error::EINVAL)?;
    kill(Pid::from_raw(pid), sig)
}

/// The state letter from /proc/PID/stat (`R`, `S`, `T` for stopped, `Z`...), `None` once the
/// process is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; the state follows it.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Removes from `cmd` every inherited environment variable whose name starts with `prefix`.
pub fn remove_env_with_prefix(cmd: &mut Command, prefix: &str) {
    for (key, _) in env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with(prefix)) {
            cmd.env_remove(key);
        }
    }
}
