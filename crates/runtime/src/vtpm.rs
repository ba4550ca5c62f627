//! One swtpm vTPM per VM: a state directory that is the VM's alone (mode
//! 0700), encrypted at rest with a per-VM AES-256 key the platform holds
//! (swtpm `--key`), and an EK certificate issued by the platform's vTPM CA
//! and written into the vTPM's NV at creation (where a verifier reads it).

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trustlaunch_tpm::ca::{EkCertRequest, VtpmCa};
use trustlaunch_tpm::ek::ek_public_key;
use trustlaunch_tpm::ekcert::{TpmIdentity, TpmSpecification, UnixTime};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm_client::{KeyAlg, Tpm};

/// Why a vTPM could not be created or started.
#[derive(Debug, thiserror::Error)]
pub enum VtpmError {
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// swtpm could not be started or did not listen.
    #[error("swtpm: {0} (install swtpm)")]
    Swtpm(String),
    /// A TPM command failed.
    #[error("vTPM: {0}")]
    Tpm(#[from] trustlaunch_tpm_client::Error),
    /// The EK could not be certified.
    #[error("EK certificate: {0}")]
    Cert(String),
    /// The state directory already holds a vTPM.
    #[error("{0} already holds a vTPM")]
    Exists(PathBuf),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VtpmError + 'a {
    move |source| VtpmError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// A VM's vTPM on disk: `state` (swtpm's directory, 0700) and the key
/// file (0600; kept by the platform, outside the state directory).
#[derive(Clone, Debug)]
pub struct VtpmPaths {
    /// swtpm's state directory.
    pub state: PathBuf,
    /// The 32-byte AES-256 key, binary.
    pub key: PathBuf,
}

/// What creation produced: the EK certificate (DER) now in NV.
#[derive(Clone, Debug)]
pub struct VtpmIdentity {
    /// The EK certificate, DER, as written to NV index 0x01c00002.
    pub ek_certificate: Vec<u8>,
    /// The EK's TPMT_PUBLIC.
    pub ek_public: Vec<u8>,
}

impl VtpmPaths {
    fn key_arg(&self) -> String {
        format!("file={},format=binary,mode=aes-256-cbc", self.key.display())
    }

    /// swtpm for a running VM, daemonised: control on a unix socket for
    /// QEMU (`--terminate`: it exits when QEMU closes it), state encrypted
    /// with the VM's key, its pid in `pid_file`. Returns once the control
    /// socket exists, with the pid.
    pub fn spawn_daemon(
        &self,
        ctrl_socket: &Path,
        pid_file: &Path,
        log: &Path,
    ) -> Result<i32, VtpmError> {
        let out = Command::new("swtpm")
            .args(["socket", "--tpm2", "--terminate", "--daemon"])
            .arg("--tpmstate")
            .arg(format!("dir={},mode=0600", self.state.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl_socket.display()))
            .arg("--key")
            .arg(self.key_arg())
            .arg("--pid")
            .arg(format!("file={}", pid_file.display()))
            .arg("--log")
            .arg(format!("file={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| VtpmError::Swtpm(format!("starting: {e}")))?;
        if !out.status.success() {
            return Err(VtpmError::Swtpm(format!(
                "exited ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let t0 = Instant::now();
        loop {
            let pid = fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            if let (Some(pid), true) = (pid, ctrl_socket.exists()) {
                return Ok(pid);
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(VtpmError::Swtpm(
                    "no control socket and pid file within 10 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// swtpm on loopback TCP for the platform's own commands (creation,
    /// checks); killed when the returned guard drops.
    pub fn spawn_tcp(&self) -> Result<TcpSwtpm, VtpmError> {
        let (port, ctrl) = (free_port()?, free_port()?);
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init"])
            .arg("--tpmstate")
            .arg(format!("dir={},mode=0600", self.state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .arg("--key")
            .arg(self.key_arg())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| VtpmError::Swtpm(format!("starting: {e}")))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let t0 = Instant::now();
        loop {
            // Ready once the port listens. Not probed by connecting: swtpm
            // listens with a backlog of 1 and serves one connection at a
            // time, so a probe connection still queued makes the client's
            // next SYN be dropped and retried a second later.
            if listening(port) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(VtpmError::Swtpm(format!(
                    "exited ({status}): {}",
                    err.trim()
                )));
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VtpmError::Swtpm("did not listen within 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(TcpSwtpm { child, addr })
    }
}

/// A swtpm on loopback TCP, killed on drop (swtpm saves its state on every
/// change, so killing loses nothing).
pub struct TcpSwtpm {
    child: Child,
    addr: SocketAddr,
}

impl TcpSwtpm {
    /// A client for its command port.
    pub fn client(&self) -> Result<Tpm, VtpmError> {
        Ok(Tpm::connect_swtpm(self.addr, Duration::from_secs(30))?)
    }
}

impl Drop for TcpSwtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether 127.0.0.1:`port` is in LISTEN state (`/proc/net/tcp`).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let mut f = l.split_whitespace();
            let (local, state) = (f.nth(1), f.nth(1));
            local == Some(want.as_str()) && state == Some("0A")
        })
    })
}

fn free_port() -> Result<u16, VtpmError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| VtpmError::Swtpm(format!("no free loopback port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| VtpmError::Swtpm(format!("no free loopback port: {e}")))
}

/// Creates a VM's vTPM: the state directory (0700), a fresh AES-256 key
/// (0600), a manufactured TPM with an RSA-2048 EK (template L-1) whose
/// certificate `ca` issues and that is written to NV.
pub fn create(
    paths: &VtpmPaths,
    ca: &VtpmCa,
    now: UnixTime,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<VtpmIdentity, VtpmError> {
    if paths.state.join("tpm2-00.permall").exists() {
        return Err(VtpmError::Exists(paths.state.clone()));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.state)
        .map_err(io("creating", &paths.state))?;
    fs::set_permissions(&paths.state, fs::Permissions::from_mode(0o700))
        .map_err(io("chmod 0700", &paths.state))?;
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&paths.key)
        .map_err(io("creating key", &paths.key))?;
    f.write_all(&key).map_err(io("writing key", &paths.key))?;
    drop(f);
    // A half-made vTPM is useless and would block a retry: remove it.
    manufacture(paths, ca, now, rng).inspect_err(|_| {
        let _ = destroy(paths);
    })
}

/// Starts the new vTPM, creates and certifies its EK, writes the
/// certificate to NV.
fn manufacture(
    paths: &VtpmPaths,
    ca: &VtpmCa,
    now: UnixTime,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<VtpmIdentity, VtpmError> {
    let swtpm = paths.spawn_tcp()?;
    let mut tpm = swtpm.client()?;
    tpm.startup_clear()?;
    let ek = tpm.create_ek(KeyAlg::Rsa2048)?;
    let ek_pub = Public::from_bytes(&ek.public).map_err(|e| VtpmError::Cert(e.to_string()))?;
    let request = EkCertRequest {
        ek: ek_public_key(&ek_pub)
            .ok_or_else(|| VtpmError::Cert("the EK is not an RSA or ECC key".into()))?,
        tpm: TpmIdentity {
            manufacturer: "id:00001014".into(),
            model: "swtpm".into(),
            version: "id:20191023".into(),
        },
        spec: TpmSpecification {
            family: "2.0".into(),
            level: 0,
            revision: 164,
        },
        not_before: UnixTime::from_secs(now.as_secs().saturating_sub(60)),
        not_after: None,
        policies: Vec::new(),
    };
    let cert = ca
        .issue_ek_cert(&request, rng)
        .map_err(|e| VtpmError::Cert(e.to_string()))?;
    tpm.provision_ek_certificate(KeyAlg::Rsa2048, cert.der(), true)?;
    Ok(VtpmIdentity {
        ek_certificate: cert.der().to_vec(),
        ek_public: ek.public,
    })
}

/// Destroys a VM's vTPM: its state and its key.
pub fn destroy(paths: &VtpmPaths) -> Result<(), VtpmError> {
    if paths.state.exists() {
        fs::remove_dir_all(&paths.state).map_err(io("removing", &paths.state))?;
    }
    if paths.key.exists() {
        fs::remove_file(&paths.key).map_err(io("removing", &paths.key))?;
    }
    Ok(())
}
