//! Processes the runtime leaves running (QEMU, swtpm): how they are
//! started (detached, under their own ids, with only the descriptors they
//! are given), pid files, liveness checked against a marker (a pid file
//! can outlive its process and the pid be reused), signals.
//!
//! The runtime starts each process as its own child, in a process group
//! of its own (a terminal's Ctrl-C does not reach it), with a clean
//! environment holding only `PATH` and the marker `TRUSTLAUNCH_VM=<VM
//! directory>`, and writes its pid file itself. A thread reaps the child
//! when it exits; a runtime that exits first leaves it to init, and any
//! later runtime finds it by its pid file and marker. QEMU cannot
//! daemonise itself: its seccomp sandbox (`spawn=deny`) forbids the fork.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};

use crate::confine::{process_uids, Identity};

/// The environment variable that marks a VM's processes.
pub const MARKER_VAR: &str = "TRUSTLAUNCH_VM";

/// What identifies a VM's process: `TRUSTLAUNCH_VM=<VM directory>` in its
/// environment and, when it is confined, the uid it runs as. (A process an
/// earlier version started, with the VM directory on its command line and
/// no uid required, is found too.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The VM directory.
    pub dir: String,
    /// The uid the process must run as (confined VMs).
    pub uid: Option<u32>,
}

impl Marker {
    /// The environment entry, `TRUSTLAUNCH_VM=<dir>`.
    pub fn entry(&self) -> String {
        format!("{MARKER_VAR}={}", self.dir)
    }
}

/// A process named by a pid file and carrying its VM's marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// Its pid.
    pub pid: i32,
}

/// Reads a pid file: `None` if missing, not a regular file, or not a
/// positive number (bounded; a FIFO or symlink in its place is not read).
pub fn read_pid_file(path: &Path) -> Option<i32> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let mut s = String::new();
    fs::File::open(path)
        .ok()?
        .take(32)
        .read_to_string(&mut s)
        .ok()?;
    let pid: i32 = s.trim().parse().ok()?;
    (pid > 1).then_some(pid)
}

/// Writes a pid file (0600).
pub fn write_pid_file(path: &Path, pid: u32) -> Result<(), crate::platform::PlatformError> {
    crate::platform::write_file(path, format!("{pid}\n").as_bytes(), 0o600)
}

/// The process behind `pid_file`, if it is alive, not a zombie, and
/// carries `marker`.
pub fn find(pid_file: &Path, marker: &Marker) -> Option<Tracked> {
    let pid = read_pid_file(pid_file)?;
    is_ours(pid, marker).then_some(Tracked { pid })
}

/// `pid` is alive, not a zombie, carries `marker` in its environment and,
/// if the marker names one, runs as its uid.
pub fn is_ours(pid: i32, marker: &Marker) -> bool {
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
    if let Some(uid) = marker.uid {
        let uids = process_uids(Path::new(&format!("/proc/{pid}/status")));
        if uids.first() != Some(&uid) {
            return false;
        }
    }
    if marker.dir.is_empty() {
        return false;
    }
    let entry = marker.entry();
    if read_bounded(&format!("/proc/{pid}/environ"))
        .split(|b| *b == 0)
        .any(|e| e == entry.as_bytes())
    {
        return true;
    }
    // A VM an earlier version started (QEMU daemonised as root, swtpm
    // likewise) was marked by its directory on the command line: it is
    // re-adopted, stopped or cleaned up like any other. A confined VM's
    // processes are always found by their environment and uid.
    let dir = marker.dir.as_bytes();
    marker.uid.is_none()
        && read_bounded(&format!("/proc/{pid}/cmdline"))
            .windows(dir.len())
            .any(|w| w == dir)
}

/// Up to 256 KiB of a `/proc` file (empty if unreadable).
fn read_bounded(path: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(256 << 10).read_to_end(&mut buf);
    }
    buf
}

/// Prepares `cmd` to run as a VM's process: a clean environment (`PATH`
/// and the marker), stdin from `/dev/null`, its own process group, and,
/// when given, another identity (exec'd directly as that uid and gid: as
/// root, `std` drops the supplementary groups too).
pub fn prepare(cmd: &mut Command, marker: &Marker, identity: Option<Identity>) {
    use std::os::unix::process::CommandExt;
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env(MARKER_VAR, &marker.dir);
    cmd.stdin(Stdio::null()).process_group(0);
    if let Some(id) = identity {
        cmd.gid(id.gid).uid(id.uid);
    }
}

/// Reaps `child` when it exits, from a thread of its own.
pub fn reap_in_background(mut child: Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// Sends `signal`; a process already gone is not an error.
pub fn signal(pid: i32, signal: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = kill_process(p, signal);
    }
}

/// Waits until `pid` is no longer ours (exited, or a zombie of someone
/// else), up to `limit`.
pub fn wait_gone(pid: i32, marker: &Marker, limit: Duration) -> bool {
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
pub fn terminate(pid: i32, marker: &Marker, grace: Duration) -> bool {
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
        let marker = Marker {
            dir: dir.path().join("vm").display().to_string(),
            uid: None,
        };
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        prepare(&mut cmd, &marker, None);
        let mut child = cmd.spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let pid_file = dir.path().join("p.pid");
        fs::write(&pid_file, format!("{pid}\n")).unwrap();
        // Between fork and exec the child still has this test's command
        // line: wait for the exec.
        let t0 = std::time::Instant::now();
        while find(&pid_file, &marker).is_none() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(find(&pid_file, &marker), Some(Tracked { pid }));
        let other = Marker {
            dir: "/not/this/vm".into(),
            uid: None,
        };
        assert_eq!(find(&pid_file, &other), None);
        // The right marker but another uid: not ours.
        let wrong_uid = Marker {
            uid: Some(rustix::process::getuid().as_raw().wrapping_add(1)),
            ..marker.clone()
        };
        assert_eq!(find(&pid_file, &wrong_uid), None);
        // A process an earlier version started, marked by the VM directory
        // on its command line only: found while no uid is required.
        let mut legacy = std::process::Command::new("sh")
            .args(["-c", "sleep 30", &marker.dir])
            .spawn()
            .unwrap();
        let legacy_pid = i32::try_from(legacy.id()).unwrap();
        let t0 = std::time::Instant::now();
        while !is_ours(legacy_pid, &marker) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(is_ours(legacy_pid, &marker));
        let confined = Marker {
            uid: Some(rustix::process::getuid().as_raw()),
            ..marker.clone()
        };
        assert!(!is_ours(legacy_pid, &confined));
        assert!(
            is_ours(pid, &confined),
            "the environment marker and the uid"
        );
        let _ = legacy.kill();
        let _ = legacy.wait();
        // Reap in the background so the zombie does not linger.
        let reaper = std::thread::spawn(move || child.wait());
        assert!(terminate(pid, &marker, Duration::from_secs(5)));
        reaper.join().unwrap().unwrap();
        assert_eq!(find(&pid_file, &marker), None);
        fs::write(&pid_file, "garbage").unwrap();
        assert_eq!(read_pid_file(&pid_file), None);
        fs::write(&pid_file, "1").unwrap();
        assert_eq!(read_pid_file(&pid_file), None);
    }
}
