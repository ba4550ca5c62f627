//! One swtpm vTPM per VM: a state directory that is the VM's alone (mode
//! 0700, owned by the VM's swtpm uid when the runtime confines VMs),
//! encrypted at rest with a per-VM AES-256 key the platform keeps sealed
//! under its master key, and an EK certificate issued by the platform's
//! vTPM CA and written into the vTPM's NV at creation (where a verifier
//! reads it).
//!
//! swtpm is never reachable by anyone but the platform and the VM's QEMU:
//! it gets every channel as a descriptor of a socket pair (no TCP port, no
//! socket path), its state directory as a descriptor (`dir=/proc/self/fd/N`:
//! no search permission on the home is needed), and its key through a
//! pipe the runtime fills (`--key fd=N`): the key is never in a file in
//! the clear.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use rustix::fs::{AtFlags, Mode, OFlags};
use trustlaunch_seal::MasterKey;
use trustlaunch_tpm::ca::{EkCertRequest, VtpmCa};
use trustlaunch_tpm::ek::ek_public_key;
use trustlaunch_tpm::ekcert::{TpmIdentity, TpmSpecification, UnixTime};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm_client::{KeyAlg, SwtpmControl, Tpm};
use zeroize::Zeroizing;

use crate::confine::Identity;
use crate::platform::{PlatformError, SealedFile};
use crate::process::{self, Marker};

/// Why a vTPM could not be created or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The sealed key could not be read or written.
    #[error(transparent)]
    Key(#[from] PlatformError),
    /// swtpm could not be started or did not answer.
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

/// How long a TPM or control command may take (RSA-2048 key generation in
/// swtpm takes seconds on a busy host).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A VM's vTPM on disk: `state` (swtpm's directory, 0700) and its key
/// (sealed, 0600; kept by the platform, outside the state directory).
#[derive(Clone, Debug)]
pub struct VtpmPaths {
    /// swtpm's state directory.
    pub state: PathBuf,
    /// The 32-byte AES-256 key, sealed for `vtpm/<vm>`.
    pub key: SealedFile,
}

/// What creation produced: the EK certificate (DER) now in NV.
#[derive(Clone, Debug)]
pub struct VtpmIdentity {
    /// The EK certificate, DER, as written to NV index 0x01c00002.
    pub ek_certificate: Vec<u8>,
    /// The EK's TPMT_PUBLIC.
    pub ek_public: Vec<u8>,
}

/// A raw 32-byte key an older version wrote in the clear.
fn legacy_raw_key(bytes: &[u8]) -> bool {
    bytes.len() == 32
}

impl VtpmPaths {
    /// The state key, opened (a key left in the clear by an older version
    /// is sealed in place).
    pub fn load_key(&self, master: &MasterKey) -> Result<Zeroizing<Vec<u8>>, VtpmError> {
        let key = self.key.read(master, legacy_raw_key)?;
        if key.len() != 32 {
            return Err(VtpmError::Key(PlatformError::BadKey {
                path: self.key.path.clone(),
                reason: format!("a vTPM key is 32 bytes, this one {}", key.len()),
            }));
        }
        Ok(key)
    }

    /// Hands the state directory to `owner` (swtpm's uid): the directory
    /// and the regular files in it that root owns (a vTPM made before VMs
    /// were confined). Symlinks are not followed, hard links not touched.
    pub fn give_to(&self, owner: Option<Identity>) -> Result<(), VtpmError> {
        let Some(owner) = owner else {
            return Ok(());
        };
        let (uid, gid) = (
            rustix::process::Uid::from_raw(owner.uid),
            rustix::process::Gid::from_raw(owner.gid),
        );
        let dir = open_dir(&self.state)?;
        let chown_err = |what: &'static str, e: rustix::io::Errno| {
            io(what, &self.state)(std::io::Error::from(e))
        };
        rustix::fs::fchown(&dir, Some(uid), Some(gid)).map_err(|e| chown_err("chown", e))?;
        for entry in fs::read_dir(&self.state).map_err(io("listing", &self.state))? {
            let entry = entry.map_err(io("listing", &self.state))?;
            let name = entry.file_name();
            let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| chown_err("stat", e))?;
            let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
            if regular && st.st_uid == 0 && st.st_nlink == 1 {
                rustix::fs::chownat(&dir, &name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| chown_err("chown", e))?;
            }
        }
        Ok(())
    }

    /// The descriptors every swtpm of this vTPM gets: the state directory
    /// (child fd `state_fd`) and a pipe holding the key (child fd
    /// `key_fd`), and the matching arguments.
    fn state_and_key(
        &self,
        master: &MasterKey,
        state_fd: i32,
        key_fd: i32,
    ) -> Result<(Vec<FdMapping>, Vec<String>), VtpmError> {
        let dir = open_dir(&self.state)?;
        let reader = key_pipe(&self.load_key(master)?)?;
        Ok((
            vec![
                FdMapping {
                    parent_fd: dir,
                    child_fd: state_fd,
                },
                FdMapping {
                    parent_fd: reader,
                    child_fd: key_fd,
                },
            ],
            vec![
                "--tpmstate".into(),
                format!("dir=/proc/self/fd/{state_fd},mode=0600"),
                "--key".into(),
                format!("fd={key_fd},format=binary,mode=aes-256-cbc"),
            ],
        ))
    }

    /// Starts swtpm for a running VM, as `owner`: its control channel is
    /// `ctrl` (one end of a socket pair whose other end goes to QEMU;
    /// `--terminate`: swtpm exits when QEMU closes it), its log `log`.
    /// The child is returned for the caller to record and reap.
    pub fn spawn_for_vm(
        &self,
        master: &MasterKey,
        ctrl: OwnedFd,
        log: &Path,
        marker: &Marker,
        owner: Option<Identity>,
    ) -> Result<Child, VtpmError> {
        let (mut fds, args) = self.state_and_key(master, 4, 5)?;
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .map_err(io("opening", log))?;
        let stderr = log_file.try_clone().map_err(io("opening", log))?;
        fds.push(FdMapping {
            parent_fd: ctrl,
            child_fd: 3,
        });
        fds.push(FdMapping {
            parent_fd: log_file.into(),
            child_fd: 6,
        });
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--terminate"])
            .args(["--ctrl", "type=unixio,clientfd=3"])
            .args(args)
            .args(["--log", "fd=6"]);
        process::prepare(&mut cmd, marker, owner);
        cmd.stdout(Stdio::null()).stderr(stderr);
        cmd.fd_mappings(fds)
            .map_err(|e| VtpmError::Swtpm(e.to_string()))?;
        let child = cmd
            .spawn()
            .map_err(|e| VtpmError::Swtpm(format!("starting: {e}")))?;
        Ok(child)
    }

    /// swtpm for the platform's own commands (creation, checks), as
    /// `owner`, its control channel a socket pair and its command channel
    /// one connection made before swtpm starts: nobody else can reach it. Ready once
    /// it answered the control channel's capability handshake; stopped
    /// (state saved) by [`PrivateSwtpm::shutdown`], killed on drop.
    pub fn serve_private(
        &self,
        master: &MasterKey,
        marker: &Marker,
        owner: Option<Identity>,
    ) -> Result<PrivateSwtpm, VtpmError> {
        let pair = || {
            UnixStream::pair().map_err(|e| VtpmError::Swtpm(format!("making a socket pair: {e}")))
        };
        // The command channel: swtpm serves a listening socket (it reads
        // commands only from connections it accepts). The socket is bound
        // in the VM's directory (0700), connected to at once, and unlinked
        // before swtpm starts: swtpm accepts the one connection already
        // queued, and there is no path left for anyone else.
        let sock = self.state.with_file_name(".swtpm-cmd.sock");
        let _ = fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).map_err(io("binding", &sock))?;
        let connected = UnixStream::connect(&sock);
        fs::remove_file(&sock).map_err(io("removing", &sock))?;
        let data = connected.map_err(io("connecting", &sock))?;
        let data_theirs = OwnedFd::from(listener);
        let (ctrl, ctrl_theirs) = pair()?;
        let (mut fds, args) = self.state_and_key(master, 5, 6)?;
        fds.push(FdMapping {
            parent_fd: data_theirs,
            child_fd: 3,
        });
        fds.push(FdMapping {
            parent_fd: ctrl_theirs.into(),
            child_fd: 4,
        });
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--flags", "not-need-init"])
            .args(["--server", "type=unixio,fd=3"])
            .args(["--ctrl", "type=unixio,clientfd=4"])
            .args(args);
        process::prepare(&mut cmd, marker, owner);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.fd_mappings(fds)
            .map_err(|e| VtpmError::Swtpm(e.to_string()))?;
        let child = cmd
            .spawn()
            .map_err(|e| VtpmError::Swtpm(format!("starting: {e}")))?;
        // The child's ends are closed here, with the command: swtpm's exit
        // is then seen as the end of both channels.
        drop(cmd);
        let control = SwtpmControl::new(ctrl, Duration::from_secs(10))
            .map_err(|e| VtpmError::Swtpm(e.to_string()))?;
        let mut swtpm = PrivateSwtpm {
            child,
            data,
            control,
        };
        if let Err(e) = swtpm.control.capabilities() {
            return Err(VtpmError::Swtpm(swtpm.exit_reason(&e.to_string())));
        }
        Ok(swtpm)
    }
}

/// A pipe holding `key`, its write end closed: the read end, for swtpm's
/// `--key fd=N` (the key never touches a file).
fn key_pipe(key: &[u8]) -> Result<OwnedFd, VtpmError> {
    let (reader, writer) =
        rustix::pipe::pipe().map_err(|e| VtpmError::Swtpm(format!("making the key pipe: {e}")))?;
    // 32 bytes fit in any pipe's buffer: the write does not block.
    let mut writer = fs::File::from(writer);
    writer
        .write_all(key)
        .map_err(|e| VtpmError::Swtpm(format!("writing the key pipe: {e}")))?;
    drop(writer);
    Ok(reader)
}

fn open_dir(path: &Path) -> Result<OwnedFd, VtpmError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("opening", path)(e.into()))
}

/// A swtpm only the platform can talk to (see
/// [`VtpmPaths::serve_private`]).
pub struct PrivateSwtpm {
    child: Child,
    data: UnixStream,
    control: SwtpmControl,
}

impl PrivateSwtpm {
    /// swtpm's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A TPM client on its command channel (a new handle on the one
    /// connection: use one client at a time).
    pub fn client(&self) -> Result<Tpm, VtpmError> {
        let stream = self
            .data
            .try_clone()
            .map_err(|e| VtpmError::Swtpm(format!("command channel: {e}")))?;
        Ok(Tpm::over_unix(stream, COMMAND_TIMEOUT)?)
    }

    /// Asks swtpm to save its state and exit, and waits for it.
    pub fn shutdown(mut self) -> Result<(), VtpmError> {
        self.control
            .shutdown()
            .map_err(|e| VtpmError::Swtpm(e.to_string()))?;
        let t0 = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if t0.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return Err(VtpmError::Swtpm("did not exit after CMD_SHUTDOWN".into())),
            }
        }
    }

    /// Why swtpm stopped answering: its exit status and error output if it
    /// exited, else `what`.
    fn exit_reason(&mut self, what: &str) -> String {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(e) = self.child.stderr.take() {
                    let _ = e.take(64 << 10).read_to_string(&mut err);
                }
                return format!("exited ({status}): {}", err.trim());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        format!("no answer on the control channel: {what}")
    }
}

impl Drop for PrivateSwtpm {
    fn drop(&mut self) {
        // swtpm saves its state on every change: killing loses nothing.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Creates a VM's vTPM: the state directory (0700, owned by `owner`), a
/// fresh AES-256 key (sealed under `master`), a manufactured TPM with an
/// RSA-2048 EK (template L-1) whose certificate `ca` issues and that is
/// written to NV. swtpm runs as `owner` and is reached only over socket
/// pairs.
pub fn create(
    paths: &VtpmPaths,
    master: &MasterKey,
    marker: &Marker,
    owner: Option<Identity>,
    ca: &VtpmCa,
    now: UnixTime,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<VtpmIdentity, VtpmError> {
    if paths.state.join("tpm2-00.permall").exists() {
        return Err(VtpmError::Exists(paths.state.clone()));
    }
    if paths.key.exists() {
        return Err(VtpmError::Exists(paths.key.path.clone()));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.state)
        .map_err(io("creating", &paths.state))?;
    fs::set_permissions(&paths.state, fs::Permissions::from_mode(0o700))
        .map_err(io("chmod 0700", &paths.state))?;
    let made = (|| {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        paths.key.write(master, key.as_ref(), rng)?;
        paths.give_to(owner)?;
        let swtpm = paths.serve_private(master, marker, owner)?;
        let identity = manufacture(&swtpm, ca, now, rng)?;
        swtpm.shutdown()?;
        Ok(identity)
    })();
    // A half-made vTPM is useless and would block a retry: remove it.
    made.inspect_err(|_| {
        let _ = destroy(paths);
    })
}

/// Starts the new vTPM, creates and certifies its EK, writes the
/// certificate to NV.
fn manufacture(
    swtpm: &PrivateSwtpm,
    ca: &VtpmCa,
    now: UnixTime,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<VtpmIdentity, VtpmError> {
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
        fs::remove_file(&paths.key.path).map_err(io("removing", &paths.key.path))?;
    }
    Ok(())
}
