//! A real swtpm for tests (feature `swtpm-harness`).
//!
//! [`Swtpm::start`] runs `swtpm socket --tpm2` on two free consecutive
//! 127.0.0.1 ports (command port P, control port P+1, as tpm2-tss's
//! `swtpm` TCTI expects)
//! with a fresh state directory, already started (`startup-clear`), and
//! kills it on drop. A fresh state has endorsement, owner and platform
//! hierarchies with empty authorization and random primary seeds, which is
//! all CreatePrimary, NV and quotes need; no `swtpm_setup` is run.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::client::Tpm;
use crate::error::Error;
use crate::transport::TcpTransport;

/// Why a simulator could not be started.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The `swtpm` binary is not on `PATH`.
    #[error("swtpm is not installed (not on PATH): install it with `apt-get install -y swtpm swtpm-tools tpm2-tools`")]
    NotInstalled,
    /// A filesystem or process error.
    #[error("swtpm harness: {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
    /// swtpm exited or never listened.
    #[error("swtpm did not start after {attempts} attempts: {log}")]
    DidNotStart {
        /// Attempts made (each with fresh ports).
        attempts: usize,
        /// swtpm's output from the last attempt.
        log: String,
    },
}

/// A running swtpm, killed (and its state directory removed) on drop.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    state: tempfile::TempDir,
    port: u16,
    ctrl_port: u16,
}

const ATTEMPTS: usize = 5;
static START_LOCK: Mutex<()> = Mutex::new(());
const READY_TIMEOUT: Duration = Duration::from_secs(10);

fn io_err(context: &'static str) -> impl Fn(io::Error) -> HarnessError {
    move |source| HarnessError::Io { context, source }
}

/// Two free consecutive ports: tpm2-tss's `swtpm` TCTI expects the control
/// port right after the command port.
fn free_ports() -> io::Result<(u16, u16)> {
    let mut last = None;
    for _ in 0..32 {
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = a.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        // Hold both listeners until both ports are known to be free.
        match TcpListener::bind((Ipv4Addr::LOCALHOST, next)) {
            Ok(_b) => return Ok((port, next)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free consecutive ports")))
}

/// Whether the `swtpm` binary can be run.
pub fn swtpm_installed() -> bool {
    Command::new("swtpm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Spawns `swtpm socket` on `state` and the two ports, its output
/// appended to `state/swtpm.log`.
fn spawn(state: &Path, port: u16, ctrl_port: u16) -> Result<Child, HarnessError> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(state.join("swtpm.log"))
        .map_err(io_err("creating the log file"))?;
    let err = out.try_clone().map_err(io_err("creating the log file"))?;
    Command::new("swtpm")
        .arg("socket")
        .arg("--tpm2")
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => HarnessError::NotInstalled,
            _ => HarnessError::Io {
                context: "spawning swtpm",
                source,
            },
        })
}

impl Swtpm {
    /// Starts swtpm with a fresh state directory on free loopback ports.
    pub fn start() -> Result<Self, HarnessError> {
        if !swtpm_installed() {
            return Err(HarnessError::NotInstalled);
        }
        // Tests start simulators from parallel threads: choosing ports and
        // waiting until swtpm holds them is done one at a time, so two
        // instances in this process never pick overlapping ports.
        let _guard = START_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut log = String::new();
        for _ in 0..ATTEMPTS {
            let state = tempfile::Builder::new()
                .prefix("swtpm-state-")
                .tempdir()
                .map_err(io_err("creating the state directory"))?;
            let (port, ctrl_port) = free_ports().map_err(io_err("finding free ports"))?;
            let log_path = state.path().join("swtpm.log");
            let child = spawn(state.path(), port, ctrl_port)?;
            let mut swtpm = Swtpm {
                child,
                state,
                port,
                ctrl_port,
            };
            if swtpm.wait_ready()? {
                return Ok(swtpm);
            }
            log = std::fs::read_to_string(&log_path).unwrap_or_default();
            // Dropping `swtpm` kills it; retry with new ports.
        }
        Err(HarnessError::DidNotStart {
            attempts: ATTEMPTS,
            log,
        })
    }

    /// Power-cycles the simulator with its state kept, as a VM reboot
    /// does: kills swtpm, starts it again on the same state directory
    /// (new free ports; take a new [`Swtpm::client`]) with `startup-clear`.
    /// Persistent objects and NV indices survive; PCRs and transient
    /// objects do not.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _guard = START_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let log_path = self.state.path().join("swtpm.log");
        for _ in 0..ATTEMPTS {
            let (port, ctrl_port) = free_ports().map_err(io_err("finding free ports"))?;
            self.child = spawn(self.state.path(), port, ctrl_port)?;
            self.port = port;
            self.ctrl_port = ctrl_port;
            if self.wait_ready()? {
                return Ok(());
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        Err(HarnessError::DidNotStart {
            attempts: ATTEMPTS,
            log: std::fs::read_to_string(&log_path).unwrap_or_default(),
        })
    }

    /// Waits until both ports accept connections, then proves the command
    /// port is this swtpm's by a real command (`TPM2_GetRandom`) and that
    /// the process is still alive.
    fn wait_ready(&mut self) -> Result<bool, HarnessError> {
        let started = Instant::now();
        let ctrl = SocketAddr::from((Ipv4Addr::LOCALHOST, self.ctrl_port));
        while started.elapsed() < READY_TIMEOUT {
            if !self.alive()? {
                return Ok(false);
            }
            let listening = |addr: &SocketAddr| {
                TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
            };
            if listening(&self.addr()) && listening(&ctrl) {
                let answered = TcpTransport::connect(self.addr(), READY_TIMEOUT)
                    .map(Tpm::new)
                    .ok()
                    .and_then(|mut tpm| tpm.get_random(8).ok())
                    .is_some();
                return Ok(answered && self.alive()?);
            }
            sleep(Duration::from_millis(20));
        }
        Ok(false)
    }

    fn alive(&mut self) -> Result<bool, HarnessError> {
        Ok(self
            .child
            .try_wait()
            .map_err(io_err("polling swtpm"))?
            .is_none())
    }

    /// The swtpm process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command port's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The command port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control port.
    pub fn ctrl_port(&self) -> u16 {
        self.ctrl_port
    }

    /// The state directory (removed on drop).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// A path inside the state directory, for test scratch files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.state.path().join(name)
    }

    /// The tpm2-tools TCTI string, for `TPM2TOOLS_TCTI` or `-T`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A client on the command port.
    pub fn client(&self) -> Result<Tpm, Error> {
        Tpm::connect_swtpm(self.addr(), TcpTransport::DEFAULT_TIMEOUT)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // The process may already have exited; nothing useful to do on error.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_installed_says_what_to_install() {
        let msg = HarnessError::NotInstalled.to_string();
        assert!(msg.contains("swtpm is not installed"), "{msg}");
        assert!(msg.contains("apt-get install"), "{msg}");
    }

    #[test]
    fn free_ports_are_consecutive() {
        let (a, b) = free_ports().unwrap();
        assert_eq!(b, a + 1);
    }
}
