//! Processes the runtime leaves running (QEMU, swtpm): pid files, liveness
//! checked against the process's command line (a pid file can outlive its
//! process and the pid be reused), signals.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};

/// A process named by a pid file, identified by a marker in its command
/// line (the VM's run directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// Its pid.
    pub pid: i32,
}

/// Reads a pid file: `None` if missing or not a positive number.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    let s = fs::read_to_string(path).ok()?;
    let pid: i32 = s.trim().parse().ok()?;
    (pid > 1).then_some(pid)
}

/// The process behind `pid_file`, if it is alive, not a zombie, and its
/// command line contains `marker`.
pub fn find(pid_file: &Path, marker: &str) -> Option<Tracked> {
    let pid = read_pid_file(pid_file)?;
    is_ours(pid, marker).then_some(Tracked { pid })
}

/// `pid` is alive, not a zombie, and its command line contains `marker`.
pub fn is_ours(pid: i32, marker: &str) -> bool {
    let Some(p) = Pid::from_raw(pid) else {
        return false;
    };
    if test_kill_process(p).is_err() {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3, after the parenthesised command name.
    let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
    if state.is_none_or(|s| s.starts_with('Z') || s.starts_with('X')) {
        return false;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let marker = marker.as_bytes();
    !marker.is_empty() && cmdline.windows(marker.len()).any(|w| w == marker)
}

/// Sends `signal`; a process already gone is not an error.
pub fn signal(pid: i32, signal: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = kill_process(p, signal);
    }
}

/// Waits until `pid` is no longer ours (exited, or a zombie of someone
/// else), up to `limit`.
pub fn wait_gone(pid: i32, marker: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if !is_ours(pid, marker) {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// SIGTERM, then SIGKILL after `grace`; waits for it to go.
pub fn terminate(pid: i32, marker: &str, grace: Duration) -> bool {
    if !is_ours(pid, marker) {
        return true;
    }
    signal(pid, Signal::TERM);
    if wait_gone(pid, marker, grace) {
        return true;
    }
    signal(pid, Signal::KILL);
    wait_gone(pid, marker, Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_and_terminates_a_real_process() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker-arg");
        let marker = marker.to_str().unwrap();
        // `sleep` ignores its extra argument only as a number: use sh -c.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30", marker])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let pid_file = dir.path().join("p.pid");
        fs::write(&pid_file, format!("{pid}\n")).unwrap();
        // Between fork and exec the child still has this test's command
        // line: wait for the exec.
        let t0 = std::time::Instant::now();
        while find(&pid_file, marker).is_none() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(find(&pid_file, marker), Some(Tracked { pid }));
        assert_eq!(find(&pid_file, "/not/this/vm"), None);
        // Reap in the background so the zombie does not linger.
        let reaper = std::thread::spawn(move || child.wait());
        assert!(terminate(pid, marker, Duration::from_secs(5)));
        reaper.join().unwrap().unwrap();
        assert_eq!(find(&pid_file, marker), None);
        fs::write(&pid_file, "garbage").unwrap();
        assert_eq!(read_pid_file(&pid_file), None);
        fs::write(&pid_file, "1").unwrap();
        assert_eq!(read_pid_file(&pid_file), None);
    }
}
