//! VMs on this host: creation from a [`VmSpec`], lifecycle, supervision
//! and recovery.
//!
//! A VM is a directory (`$HOME/vms/<name>/`) and, while it runs, two
//! detached processes: swtpm (`--terminate`: it exits with QEMU) and QEMU,
//! both started by the runtime in process groups of their own (see
//! [`process`]). A runtime running as root confines them ([`confine`]):
//! each runs under the VM's own ids, without capabilities or
//! supplementary groups, QEMU in its seccomp sandbox; neither can search
//! the platform's directories, so each gets what it uses as descriptors
//! (files, sockets, swtpm's state directory and its key through a pipe).
//! The runtime is any process holding a [`Runtime`] — the CLI, the server
//! — and keeps no state in memory that is not on disk, so a runtime that
//! dies loses nothing: the next one [`Runtime::refresh`]es each VM from
//! its pid files (checked against the marker in the process's environment
//! and its uid), QMP socket and console, re-adopting what runs and
//! cleaning up what does not (orphan swtpm, stale sockets and pid files).
//! The vTPM state lives outside the run directory and is never touched by
//! cleanup.
//!
//! ```text
//! vms/<name>/spec.json       the operator's VmSpec (resize edits it)
//! vms/<name>/state.json      status, reason, boots, vTPM identity
//! vms/<name>/lock            flock: one mutation at a time
//! vms/<name>/OVMF_VARS.fd    this VM's variable store (from its template)
//! vms/<name>/os.qcow2        overlay of the image's disk.raw
//! vms/<name>/ids.json        the ids its QEMU and swtpm run as (confined)
//! vms/<name>/vtpm/           swtpm state (0700, owned by swtpm's uid,
//!                            encrypted; its key sealed in keys/)
//! vms/<name>/console.log     this boot's serial console (previous: .prev)
//! vms/<name>/qemu.log        QEMU's error output; swtpm.log: swtpm's
//! vms/<name>/attestation.json  the last evidence and the runtime's checks
//! vms/<name>/run/            pid files and sockets (qmp, attest)
//! ```
//!
//! Every file is 0600 and every directory 0700, owned by root but for the
//! vTPM state, which is its swtpm's.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use trustlaunch_attestation::baseline::{predict, ImageFacts};
use trustlaunch_attestation::{appraise, Appraisal, Baseline, KeyDatabases, Reference};
use trustlaunch_protocol::Evidence;
use trustlaunch_secureboot::pcr7::predict_pcr7;
use trustlaunch_secureboot::siglist::SignatureDb;
use trustlaunch_secureboot::varstore::{KeyTemplate as DbTemplate, SecureBootVar, VarStore};
use trustlaunch_tpm::credential::MadeCredential;
use trustlaunch_tpm::ekcert::UnixTime;

use crate::accel::{self, AccelDecision, ProbeConfig};
use crate::channel::{Channel, ChannelError, Collected, Received};
use crate::confine::{self, Confinement, IdRegistry, Identity, VmIds};
use crate::console::{self, ConsoleVerdict};
use crate::image_meta::{
    ImageMetadata, KeyTemplate as ImageKeyTemplate, PredictedChain, Sha256Digest,
};
use crate::platform::{self, Home, MasterKey, PlatformError, PlatformKeys, SealedFile, OWNER};
use crate::process::{self, Marker};
use crate::qemu::{Accel, Firmware, Launch, Nic, Passed, QemuConfig};
use crate::qmp::Qmp;
use crate::spec::{check_name, Generation, KeyTemplate, Network, SecurityType, SpecError, VmSpec};
use crate::vtpm::{self, VtpmError, VtpmPaths};

/// Why a VM operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// The spec is refused.
    #[error("invalid VM spec: {0}")]
    Spec(#[from] SpecError),
    /// No such VM.
    #[error("VM {0:?} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("VM {0:?} already exists")]
    Exists(String),
    /// The operation needs another status.
    #[error("VM {name:?} is {status}: {needed}")]
    WrongStatus {
        /// The VM.
        name: String,
        /// Its status.
        status: Status,
        /// What the operation needs.
        needed: &'static str,
    },
    /// Platform files or keys.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The vTPM.
    #[error(transparent)]
    Vtpm(#[from] VtpmError),
    /// The image is unusable.
    #[error("image {path}: {reason}")]
    Image {
        /// The image directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The variable store could not be made.
    #[error("variable store: {0}")]
    Vars(String),
    /// A host tool failed.
    #[error("{tool}: {message}")]
    Tool {
        /// The program.
        tool: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The accelerator probe could not run.
    #[error(transparent)]
    Probe(#[from] accel::ProbeError),
    /// The VM did not start.
    #[error("VM {name:?} failed to start: {reason}")]
    StartFailed {
        /// The VM.
        name: String,
        /// Why.
        reason: String,
    },
    /// The attestation channel.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A unix socket path would be too long (108 bytes).
    #[error("socket path {0} is longer than 107 bytes: use a shorter TRUSTLAUNCH_HOME")]
    SocketPath(PathBuf),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VmError + 'a {
    move |source| {
        VmError::Platform(PlatformError::Io {
            what,
            path: path.to_owned(),
            source,
        })
    }
}

/// A VM's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// QEMU runs.
    Running,
    /// Not running.
    Stopped,
    /// Not running because something went wrong (see the reason).
    Failed,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        })
    }
}

/// How far the current boot got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootPhase {
    /// Firmware (nothing from the guest OS yet).
    Firmware,
    /// The guest's init reported in on the console.
    GuestUp,
    /// The guest agent's evidence arrived and passed the runtime's checks.
    Attested,
}

/// The runtime's record of a VM (`state.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmState {
    /// Status.
    pub status: Status,
    /// Why (failed), or what last happened (stopped).
    pub reason: Option<String>,
    /// The current boot's phase while running.
    pub phase: Option<BootPhase>,
    /// Boots so far.
    pub boots: u64,
    /// Unix time of the last start.
    pub started_at: Option<u64>,
    /// The operator asked for a stop (so QEMU's exit is not a failure).
    pub stop_requested: bool,
    /// Spec changes waiting for the next start (resize).
    pub pending_changes: Vec<String>,
    /// The vTPM's EK (TPMT_PUBLIC, hex), recorded at creation.
    pub ek_public: Option<String>,
    /// The EK certificate (DER, hex) written to the vTPM's NV.
    pub ek_certificate: Option<String>,
    /// The accelerator of the current or last boot.
    pub accel: Option<Accel>,
    /// The loopback port forwarded to the guest's SSH (user-mode
    /// network): `ssh -p PORT root@127.0.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
}

impl VmState {
    fn new() -> Self {
        Self {
            status: Status::Creating,
            reason: None,
            phase: None,
            boots: 0,
            started_at: None,
            stop_requested: false,
            pending_changes: Vec::new(),
            ek_public: None,
            ek_certificate: None,
            accel: None,
            ssh_port: None,
        }
    }
}

/// A VM as `show` and `list` report it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmInfo {
    /// The spec.
    pub spec: VmSpec,
    /// The state.
    pub state: VmState,
    /// QEMU's pid while running.
    pub qemu_pid: Option<i32>,
    /// swtpm's pid while running.
    pub swtpm_pid: Option<i32>,
    /// The VM directory.
    pub dir: PathBuf,
    /// The console log.
    pub console_log: PathBuf,
    /// Who its QEMU and swtpm run as.
    pub confinement: Confinement,
}

/// What the platform knows about a VM for its appraisal ([`Runtime::facts`]).
#[derive(Clone, Debug)]
pub struct VmFacts {
    /// The VM's spec.
    pub spec: VmSpec,
    /// Its status now.
    pub status: Status,
    /// How many times it was started.
    pub boots: u64,
    /// The EK the platform created (TPMT_PUBLIC), if it has a vTPM.
    pub ek_public: Option<Vec<u8>>,
    /// securityType is TrustedLaunch.
    pub trusted_launch: bool,
    /// Its image carries `SecurityType=TrustedLaunchSupported`.
    pub trusted_launch_supported: bool,
    /// `secureBootEnabled`.
    pub secure_boot: bool,
    /// `vTpmEnabled`.
    pub vtpm: bool,
    /// The template's PK, KEK, db, dbx.
    pub template: KeyDatabases,
    /// The baseline predicted from its image, if the image's metadata is
    /// readable.
    pub predicted: Option<Baseline>,
}

/// Firmware files.
#[derive(Clone, Debug)]
pub struct FirmwarePaths {
    /// OVMF built with SMM and Secure Boot.
    pub code_secboot: PathBuf,
    /// Plain OVMF.
    pub code: PathBuf,
    /// An empty variable store (setup mode).
    pub vars: PathBuf,
    /// A store holding Microsoft's KEK and db (the `microsoft` template).
    pub vars_ms: PathBuf,
}

impl Default for FirmwarePaths {
    fn default() -> Self {
        let d = Path::new("/usr/share/OVMF");
        Self {
            code_secboot: d.join("OVMF_CODE_4M.secboot.fd"),
            code: d.join("OVMF_CODE_4M.fd"),
            vars: d.join("OVMF_VARS_4M.fd"),
            vars_ms: d.join("OVMF_VARS_4M.ms.fd"),
        }
    }
}

/// A step of a long operation, for progress output.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    /// The VM.
    pub vm: String,
    /// What is happening (`vtpm`, `varstore`, `overlay`, `swtpm`, `qemu`,
    /// `firmware`, `guest-up`, `evidence`, ...).
    pub step: &'static str,
    /// Detail.
    pub detail: String,
    /// Milliseconds since the operation began.
    pub elapsed_ms: u64,
}

/// The result of waiting for a boot.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BootOutcome {
    /// Evidence arrived and passed the runtime's checks.
    Attested {
        /// What arrived.
        received: Box<Received>,
    },
    /// The guest is up but has no vTPM to attest with.
    GuestUp,
    /// The boot failed (status is now failed).
    Failed {
        /// Why.
        reason: String,
    },
    /// Nothing decisive within the limit (the VM keeps running).
    TimedOut {
        /// The limit, seconds.
        seconds: u64,
    },
}

/// How long a graceful stop waits for the guest to power off before QEMU
/// is told to quit.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);

/// The image's disk inside an image directory.
pub const IMAGE_DISK: &str = "disk.raw";

/// The file the firmware loads from the ESP (UEFI removable-media path).
pub const BOOT_FILE: &str = "EFI/BOOT/BOOTX64.EFI";

/// The boot application named in refusals: the image's first boot
/// component with its signer, else the removable-media path.
fn boot_file(spec: &VmSpec) -> String {
    match ImageMetadata::read(&spec.image) {
        Ok(m) => m.boot_components.first().map_or_else(
            || BOOT_FILE.to_owned(),
            |c| {
                let signer = c
                    .signers
                    .first()
                    .map_or_else(|| "unsigned".to_owned(), |s| format!("signed by {s}"));
                format!("{} ({signer})", c.esp_path)
            },
        ),
        Err(_) => BOOT_FILE.to_owned(),
    }
}

/// The VM runtime of this host.
pub struct Runtime {
    home: Home,
    master: MasterKey,
    keys: PlatformKeys,
    /// Root: every VM's processes run under the VM's own ids.
    confine: bool,
    ids: IdRegistry,
    accel: AccelDecision,
    firmware: FirmwarePaths,
    qemu: PathBuf,
    /// The last nonces this runtime challenged each VM with: a guest
    /// frozen mid-challenge answers them when it runs again, and those
    /// stale answers are skipped, not taken for replies.
    sent: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<Vec<u8>>>>,
}

/// How many earlier nonces per VM are remembered as stale.
const STALE_NONCES: usize = 32;

struct Paths {
    dir: PathBuf,
    run: PathBuf,
}

impl Paths {
    fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    fn vars(&self) -> PathBuf {
        self.dir.join("OVMF_VARS.fd")
    }
    fn os_disk(&self) -> PathBuf {
        self.dir.join("os.qcow2")
    }
    fn data_disk(&self, lun: u32) -> PathBuf {
        self.dir.join(format!("data-{lun}.qcow2"))
    }
    fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    fn attestation(&self) -> PathBuf {
        self.dir.join("attestation.json")
    }
    fn ids(&self) -> PathBuf {
        self.dir.join("ids.json")
    }
    fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    fn swtpm_log(&self) -> PathBuf {
        self.dir.join("swtpm.log")
    }
    fn qemu_pid(&self) -> PathBuf {
        self.run.join("qemu.pid")
    }
    fn swtpm_pid(&self) -> PathBuf {
        self.run.join("swtpm.pid")
    }
    fn qmp(&self) -> PathBuf {
        self.run.join("qmp.sock")
    }
    /// swtpm's control socket an older version made (now a socket pair).
    fn legacy_swtpm_sock(&self) -> PathBuf {
        self.run.join("swtpm.sock")
    }
    fn attest_sock(&self) -> PathBuf {
        self.run.join("attest.sock")
    }
    /// The VM's recorded ids, if it has any.
    fn recorded_ids(&self) -> Option<VmIds> {
        confine::read_ids(&self.ids()).ok().flatten()
    }
    /// What identifies this VM's QEMU and swtpm: the VM directory in their
    /// environment and, when confined, their uids.
    fn markers(&self, confined: bool) -> (Marker, Marker) {
        let dir = self.dir.display().to_string();
        let ids = self.recorded_ids().filter(|_| confined);
        (
            Marker {
                dir: dir.clone(),
                uid: ids.map(|i| i.qemu),
            },
            Marker {
                dir,
                uid: ids.map(|i| i.swtpm),
            },
        )
    }
}

fn to_hex(b: &[u8]) -> String {
    trustlaunch_eventlog::hex::encode(b)
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    trustlaunch_eventlog::hex::decode(s)
}

/// A held `flock` on a VM's lock file; released on drop.
struct Lock(#[allow(dead_code)] fs::File);

fn lock(dir: &Path) -> Result<Lock, VmError> {
    let path = dir.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err("locking", &path)(e.into()))?;
    Ok(Lock(f))
}

impl Runtime {
    /// Opens the runtime on `home`: loads (or makes) the platform's keys
    /// and decides the accelerator (probed once per host boot, cached in
    /// `$HOME/accel.json`; `TRUSTLAUNCH_ACCEL` overrides).
    pub fn open(home: Home) -> Result<Self, VmError> {
        let accel = decide_accel(&home)?;
        Self::open_with_accel(home, accel)
    }

    /// Opens the runtime with a given accelerator decision (no probe).
    pub fn open_with_accel(home: Home, accel: AccelDecision) -> Result<Self, VmError> {
        let master = home.master_key()?;
        let keys = PlatformKeys::load_or_create(&home, &mut OsRng)?;
        let ids = IdRegistry::new(home.root().join("uids"), home.vms());
        Ok(Self {
            home,
            master,
            keys,
            confine: confine::runtime_is_root(),
            ids,
            accel,
            firmware: FirmwarePaths::default(),
            qemu: "qemu-system-x86_64".into(),
            sent: Default::default(),
        })
    }

    /// Whether this runtime confines VMs (it runs as root).
    pub fn confines(&self) -> bool {
        self.confine
    }

    /// The home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The platform's keys.
    pub fn keys(&self) -> &PlatformKeys {
        &self.keys
    }

    /// The accelerator VMs get, and why.
    pub fn accel(&self) -> &AccelDecision {
        &self.accel
    }

    fn paths(&self, name: &str) -> Result<Paths, VmError> {
        check_name(name)?;
        let dir = self.home.vms().join(name);
        let run = dir.join("run");
        // sockaddr_un holds 108 bytes with the NUL.
        let longest = run.join("attest.sock");
        if longest.as_os_str().len() > 107 {
            return Err(VmError::SocketPath(longest));
        }
        Ok(Paths { dir, run })
    }

    fn existing(&self, name: &str) -> Result<Paths, VmError> {
        let p = self.paths(name)?;
        if !p.spec().exists() {
            return Err(VmError::NotFound(name.to_owned()));
        }
        Ok(p)
    }

    fn vtpm_paths(&self, name: &str, p: &Paths) -> VtpmPaths {
        VtpmPaths {
            state: p.dir.join("vtpm"),
            key: SealedFile::new(
                self.home.keys().join(format!("{name}.vtpm.key")),
                format!("vtpm/{name}"),
            ),
        }
    }

    /// The VM's ids, allocated and recorded now if it has none (a VM made
    /// before VMs were confined); `None` when the runtime is not root.
    fn ensure_ids(&self, name: &str, p: &Paths) -> Result<Option<VmIds>, VmError> {
        if !self.confine {
            return Ok(None);
        }
        if let Some(ids) = confine::read_ids(&p.ids())? {
            return Ok(Some(ids));
        }
        let ids = self.ids.allocate(name)?;
        if let Err(e) = confine::write_ids(&p.ids(), &ids) {
            let _ = self.ids.release(&ids);
            return Err(e.into());
        }
        Ok(Some(ids))
    }

    /// Who QEMU and swtpm run as, for `ids`.
    fn identities(&self, ids: Option<VmIds>) -> (Option<Identity>, Option<Identity>) {
        let Some(ids) = ids else {
            return (None, None);
        };
        // With KVM, QEMU's one group is /dev/kvm's when the device is not
        // open to everyone (no supplementary groups; nothing of the
        // platform's is readable by a group).
        let kvm_gid = (self.accel.accel == Accel::Kvm)
            .then(|| fs::metadata("/dev/kvm").ok())
            .flatten()
            .filter(|m| m.mode() & 0o006 != 0o006)
            .map(|m| m.gid());
        (
            Some(Identity {
                uid: ids.qemu,
                gid: kvm_gid.unwrap_or(ids.qemu),
            }),
            Some(Identity {
                uid: ids.swtpm,
                gid: ids.swtpm,
            }),
        )
    }

    fn load_spec(p: &Paths) -> Result<VmSpec, VmError> {
        let bytes = platform::read_small(&p.spec(), 1 << 20)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            VmError::Platform(PlatformError::BadKey {
                path: p.spec(),
                reason: e.to_string(),
            })
        })
    }

    fn load_state(p: &Paths) -> Result<VmState, VmError> {
        let bytes = platform::read_small(&p.state(), 1 << 20)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            VmError::Platform(PlatformError::BadKey {
                path: p.state(),
                reason: e.to_string(),
            })
        })
    }

    fn save_state(p: &Paths, s: &VmState) -> Result<(), VmError> {
        let json = serde_json::to_vec_pretty(s).unwrap_or_default();
        Ok(platform::write_file(&p.state(), &json, 0o600)?)
    }

    fn save_spec(p: &Paths, s: &VmSpec) -> Result<(), VmError> {
        let json = serde_json::to_vec_pretty(s).unwrap_or_default();
        Ok(platform::write_file(&p.spec(), &json, 0o600)?)
    }

    /// What the image must offer the spec (Trusted Launch support) and
    /// what looks wrong but is allowed (key template or db certificate
    /// mismatches the firmware will likely refuse): the warnings.
    fn check_image(&self, spec: &VmSpec) -> Result<Vec<String>, VmError> {
        let disk = spec.image.join(IMAGE_DISK);
        if !disk.is_file() {
            return Err(VmError::Image {
                path: spec.image.clone(),
                reason: format!("no {IMAGE_DISK} (build one with `trustlaunch image build`)"),
            });
        }
        if spec.hyper_v_generation == Generation::V1 {
            return Err(VmError::Image {
                path: spec.image.clone(),
                reason: "V1 (BIOS) VMs are not supported by this runtime yet: its images are Gen2 (GPT + ESP)".into(),
            });
        }
        let meta = ImageMetadata::read(&spec.image).map_err(|e| VmError::Image {
            path: spec.image.clone(),
            reason: e.to_string(),
        })?;
        if meta.generation == crate::image_meta::Generation::V1 {
            return Err(VmError::Image {
                path: spec.image.clone(),
                reason: "the image is a Generation 1 (BIOS) disk and this runtime boots Generation 2 (UEFI) VMs only".into(),
            });
        }
        let mut warnings = Vec::new();
        if spec.security_profile.security_type == SecurityType::TrustedLaunch {
            let supported = meta.features.iter().any(|f| {
                f.name == "SecurityType"
                    && (f.value == "TrustedLaunchSupported"
                        || f.value == "TrustedLaunchAndConfidentialVmSupported")
            });
            if !supported {
                return Err(VmError::Image {
                    path: spec.image.clone(),
                    reason: "the image does not have the feature SecurityType=TrustedLaunchSupported: use securityType Standard or a Trusted Launch image".into(),
                });
            }
        }
        if spec.security_profile.secure_boot() {
            let template_matches = matches!(
                (spec.key_template, meta.key_template),
                (KeyTemplate::Custom, ImageKeyTemplate::Custom)
                    | (KeyTemplate::Microsoft, ImageKeyTemplate::Microsoft)
                    | (KeyTemplate::None, _)
            );
            if !template_matches {
                warnings.push(format!(
                    "the image is made for the {:?} key template, the VM gets {}: the firmware will likely refuse its boot image",
                    meta.key_template, spec.key_template
                ));
            }
            if spec.key_template == KeyTemplate::Custom {
                let ours = Sha256Digest::of(&self.keys.db.cert_der);
                if let Some(c) = meta.db_certificate.as_ref().filter(|c| c.sha256 != ours) {
                    warnings.push(format!(
                        "the image was signed for db certificate {} ({}), not this platform's: the firmware will refuse it",
                        c.subject,
                        to_hex(&c.sha256.0)
                    ));
                }
            }
        }
        Ok(warnings)
    }

    /// Creates a VM: its directory, variable store (from the key
    /// template), OS disk overlay and vTPM (EK certified by the platform's
    /// CA). Does not start it. A failed creation removes what it made.
    pub fn create(
        &self,
        spec: &VmSpec,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<VmInfo, VmError> {
        spec.validate()?;
        let p = self.paths(&spec.name)?;
        let warnings = self.check_image(spec)?;
        let mut step = stepper(&spec.name, progress);
        // Claim the name: create_dir fails if another creation got there.
        fs::create_dir(&p.dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                VmError::Exists(spec.name.clone())
            } else {
                io_err("creating", &p.dir)(e)
            }
        })?;
        fs::set_permissions(&p.dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &p.dir))?;
        let _lock = lock(&p.dir)?;
        for w in warnings {
            step("warning", w);
        }
        let result = self.populate(spec, &p, &mut step);
        if result.is_err() {
            let _ = vtpm::destroy(&self.vtpm_paths(&spec.name, &p));
            if let Some(ids) = p.recorded_ids() {
                let _ = self.ids.release(&ids);
            }
            let _ = fs::remove_dir_all(&p.dir);
        }
        result?;
        step("created", format!("{}", p.dir.display()));
        self.info(&p)
    }

    fn populate(
        &self,
        spec: &VmSpec,
        p: &Paths,
        step: &mut dyn FnMut(&'static str, String),
    ) -> Result<(), VmError> {
        let mut state = VmState::new();
        Self::save_spec(p, spec)?;
        Self::save_state(p, &state)?;
        platform::private_dir(&p.run)?;
        let ids = self.ensure_ids(&spec.name, p)?;
        let vars = self.make_vars(spec)?;
        platform::write_file(&p.vars(), &vars, 0o600)?;
        step(
            "varstore",
            format!(
                "{} template, Secure Boot {}",
                spec.key_template,
                if spec.security_profile.secure_boot() {
                    "on"
                } else {
                    "off"
                }
            ),
        );
        overlay(&spec.image.join(IMAGE_DISK), &p.os_disk())?;
        step(
            "overlay",
            format!("{} on {}", p.os_disk().display(), spec.image.display()),
        );
        make_data_disks(spec, p, step)?;
        if spec.security_profile.vtpm() {
            let (_, swtpm_marker) = p.markers(self.confine);
            let identity = vtpm::create(
                &self.vtpm_paths(&spec.name, p),
                &self.master,
                &swtpm_marker,
                self.identities(ids).1,
                &self.keys.vtpm_ca,
                UnixTime::from_secs(platform::unix_now()),
                &mut OsRng,
            )?;
            state.ek_public = Some(to_hex(&identity.ek_public));
            state.ek_certificate = Some(to_hex(&identity.ek_certificate));
            step(
                "vtpm",
                "EK certificate issued by the platform's vTPM CA, written to NV".into(),
            );
        }
        state.status = Status::Stopped;
        state.reason = Some("created".into());
        Self::save_state(p, &state)
    }

    /// The VM's variable store: its template's keys enrolled into an empty
    /// store and Secure Boot on, or an empty store (SecureBoot = 0).
    fn make_vars(&self, spec: &VmSpec) -> Result<Vec<u8>, VmError> {
        self.template_vars(spec.security_profile.secure_boot(), spec.key_template)
    }

    /// The db and dbx a new VM's varstore gets under each key template
    /// that holds keys (`custom`, `microsoft`), with `extra_dbx` appended
    /// to every dbx (a revocation update not yet applied): what `image
    /// import` evaluates a disk's boot chain against.
    pub fn template_databases(
        &self,
        extra_dbx: Option<&SignatureDb>,
    ) -> Result<Vec<crate::import::TemplateDbs>, VmError> {
        use trustlaunch_secureboot::verify::Database;
        let mut out = Vec::new();
        for (template, image_template) in [
            (KeyTemplate::Custom, ImageKeyTemplate::Custom),
            (KeyTemplate::Microsoft, ImageKeyTemplate::Microsoft),
        ] {
            let store = VarStore::parse(&self.template_vars(true, template)?)
                .map_err(|e| VmError::Vars(e.to_string()))?;
            let db = |v| -> Result<Database, VmError> {
                Ok(store
                    .secure_boot_db(v)
                    .map_err(|e| VmError::Vars(e.to_string()))?
                    .map(|d| Database::from_signature_db(&d))
                    .unwrap_or_default())
            };
            let mut dbx = db(SecureBootVar::Dbx)?;
            if let Some(extra) = extra_dbx {
                for r in Database::from_signature_db(extra).records() {
                    dbx.push(r.kind, r.owner, r.data.clone());
                }
            }
            out.push(crate::import::TemplateDbs {
                template: image_template,
                db: db(SecureBootVar::Db)?,
                dbx,
            });
        }
        Ok(out)
    }

    fn template_vars(&self, secure_boot: bool, template: KeyTemplate) -> Result<Vec<u8>, VmError> {
        let vars_err = |e: String| VmError::Vars(e);
        let base = platform::read_small(&self.firmware.vars, 16 << 20)?;
        let mut store = VarStore::parse(&base).map_err(|e| vars_err(e.to_string()))?;
        if !secure_boot {
            store
                .disable_secure_boot()
                .map_err(|e| vars_err(e.to_string()))?;
            return store.to_bytes().map_err(|e| vars_err(e.to_string()));
        }
        let cert_db = |der: &[u8]| {
            let mut db = SignatureDb::default();
            db.add_x509(OWNER, der.to_vec());
            db
        };
        let keys = match template {
            KeyTemplate::Custom => DbTemplate::custom(
                cert_db(&self.keys.pk.cert_der),
                cert_db(&self.keys.kek.cert_der),
                cert_db(&self.keys.db.cert_der),
                None,
            ),
            KeyTemplate::Microsoft => {
                let ms = platform::read_small(&self.firmware.vars_ms, 16 << 20)?;
                let mut keys = DbTemplate::microsoft(&ms).map_err(|e| vars_err(e.to_string()))?;
                // Microsoft's KEK and db; the PK is the platform's (the
                // platform owns every VM's firmware).
                keys.pk = Some(cert_db(&self.keys.pk.cert_der));
                keys
            }
            KeyTemplate::None => DbTemplate::none(),
        };
        store
            .apply_keys(&keys)
            .map_err(|e| vars_err(e.to_string()))?;
        store
            .enable_secure_boot()
            .map_err(|e| vars_err(e.to_string()))?;
        store.to_bytes().map_err(|e| vars_err(e.to_string()))
    }

    fn qemu_config(
        &self,
        spec: &VmSpec,
        p: &Paths,
        nic: Option<Nic>,
    ) -> Result<QemuConfig, VmError> {
        let firmware = if spec.security_profile.secure_boot() {
            Firmware::UefiSecureBoot {
                code: self.firmware.code_secboot.clone(),
                vars: p.vars(),
            }
        } else {
            Firmware::Uefi {
                code: self.firmware.code.clone(),
                vars: p.vars(),
            }
        };
        let base = spec.image.join(IMAGE_DISK);
        Ok(QemuConfig {
            name: spec.name.clone(),
            accel: self.accel.accel,
            firmware,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            os_disk: p.os_disk(),
            os_base: fs::canonicalize(&base).map_err(io_err("resolving", &base))?,
            data_disks: spec
                .data_disks
                .iter()
                .map(|d| (d.lun, p.data_disk(d.lun)))
                .collect(),
            vtpm: spec.security_profile.vtpm(),
            console_log: p.console(),
            qmp_socket: p.qmp(),
            attestation_socket: Some(p.attest_sock()),
            nic,
            first_boot: spec
                .os_profile
                .as_ref()
                .map(|o| o.first_boot_config())
                .filter(|c| !c.is_empty()),
        })
    }

    /// The NIC of the coming boot: for user-mode networking the recorded
    /// SSH port, or a new free one on 127.0.0.1 if it has none or another
    /// program took it; for a bridge, a tap device (owned by QEMU's uid)
    /// made and attached to the bridge.
    fn prepare_nic(
        &self,
        spec: &VmSpec,
        p: &Paths,
        state: &mut VmState,
        qemu: Option<Identity>,
    ) -> Result<Option<Nic>, VmError> {
        let mac = mac_address(&p.dir);
        match &spec.network {
            Network::None => Ok(None),
            Network::User => {
                let port = match state.ssh_port.filter(|&port| loopback_port_free(port)) {
                    Some(port) => port,
                    None => free_loopback_port()?,
                };
                state.ssh_port = Some(port);
                Ok(Some(Nic::User {
                    mac,
                    ssh_port: port,
                }))
            }
            Network::Bridge { bridge } => {
                let ifname = tap_name(&p.dir);
                make_tap(&ifname, bridge, qemu)?;
                Ok(Some(Nic::Tap { mac, ifname }))
            }
        }
    }

    /// Starts a stopped VM: swtpm, then QEMU, both daemonised. Returns as
    /// soon as QEMU runs; [`Runtime::wait_boot`] follows the boot.
    pub fn start(&self, name: &str, progress: &mut dyn FnMut(Progress)) -> Result<VmInfo, VmError> {
        let p = self.existing(name)?;
        let _lock = lock(&p.dir)?;
        let mut state = self.refresh_locked(&p)?;
        if state.status == Status::Running || state.status == Status::Creating {
            return Err(VmError::WrongStatus {
                name: name.into(),
                status: state.status,
                needed: "start needs a stopped or failed VM",
            });
        }
        let spec = Self::load_spec(&p)?;
        let mut step = stepper(name, progress);
        cleanup_run_dir(&p);
        if p.console().exists() {
            let _ = fs::rename(p.console(), p.dir.join("console.prev.log"));
        }
        let _ = fs::remove_file(p.attestation());
        let ids = self.ensure_ids(name, &p)?;
        let (qemu_id, swtpm_id) = self.identities(ids);
        let (qemu_marker, swtpm_marker) = p.markers(self.confine);
        let nic = self.prepare_nic(&spec, &p, &mut state, qemu_id)?;
        let cfg = self.qemu_config(&spec, &p, nic)?;
        // QEMU and swtpm talk over a socket pair: no path, no port.
        let mut qemu_tpm = None;
        let mut swtpm_pid = None;
        if spec.security_profile.vtpm() {
            let (ours, theirs) = UnixStream::pair().map_err(|e| VmError::Tool {
                tool: "swtpm",
                message: format!("making a socket pair: {e}"),
            })?;
            let vt = self.vtpm_paths(name, &p);
            vt.give_to(swtpm_id)?;
            let child = vt.spawn_for_vm(
                &self.master,
                theirs.into(),
                &p.swtpm_log(),
                &swtpm_marker,
                swtpm_id,
            )?;
            let pid = child.id();
            process::reap_in_background(child);
            process::write_pid_file(&p.swtpm_pid(), pid)?;
            swtpm_pid = Some(pid);
            qemu_tpm = Some(OwnedFd::from(ours));
            step("swtpm", format!("pid {pid}"));
        }
        let mut stop_swtpm = |reason: String| -> Result<VmError, VmError> {
            if let Some(pid) = swtpm_pid {
                process::terminate(
                    i32::try_from(pid).unwrap_or_default(),
                    &swtpm_marker,
                    Duration::from_secs(2),
                );
            }
            cleanup_run_dir(&p);
            state.status = Status::Failed;
            state.reason = Some(format!("QEMU did not start: {reason}"));
            Self::save_state(&p, &state)?;
            Ok(VmError::StartFailed {
                name: name.into(),
                reason,
            })
        };
        let launched = qemu_command(&self.qemu, &cfg.launch(), qemu_tpm).and_then(|mut cmd| {
            process::prepare(&mut cmd, &qemu_marker, qemu_id);
            let log = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p.qemu_log())
                .map_err(io_err("creating", &p.qemu_log()))?;
            cmd.stdout(Stdio::null()).stderr(log);
            cmd.spawn().map_err(|e| VmError::Tool {
                tool: "qemu-system-x86_64",
                message: format!("{e} (install qemu-system-x86)"),
            })
            // The command, and with it the runtime's copies of QEMU's
            // descriptors, is dropped here.
        });
        let mut child = match launched {
            Ok(c) => c,
            Err(e) => return Err(stop_swtpm(e.to_string())?),
        };
        process::write_pid_file(&p.qemu_pid(), child.id())?;
        // Ready once QMP greets: QEMU has set up every device.
        let t0 = Instant::now();
        let ready = loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = read_console(&p.qemu_log());
                break Err(format!("exited ({status}): {}", log.trim()));
            }
            if Qmp::connect(&p.qmp(), Duration::from_secs(2)).is_ok() {
                break Ok(());
            }
            if t0.elapsed() > Duration::from_secs(60) {
                break Err("QMP did not answer within 60 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Err(reason) = ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(stop_swtpm(reason)?);
        }
        process::reap_in_background(child);
        let qemu_pid = process::read_pid_file(&p.qemu_pid()).unwrap_or_default();
        step(
            "qemu",
            format!("pid {qemu_pid}, accel {}", self.accel.accel.name()),
        );
        state.status = Status::Running;
        state.phase = Some(BootPhase::Firmware);
        state.reason = None;
        state.stop_requested = false;
        state.boots = state.boots.saturating_add(1);
        state.started_at = Some(platform::unix_now());
        state.pending_changes.clear();
        state.accel = Some(self.accel.accel);
        Self::save_state(&p, &state)?;
        self.info(&p)
    }

    /// Follows a started VM's boot up to `limit`: watches its console (a
    /// Secure Boot refusal fails the VM as soon as the firmware prints it,
    /// and QEMU is stopped), and, for a VM with a vTPM, challenges its
    /// agent over the attestation channel and checks the evidence.
    pub fn wait_boot(
        &self,
        name: &str,
        limit: Duration,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<BootOutcome, VmError> {
        let p = self.existing(name)?;
        let spec = Self::load_spec(&p)?;
        let state = Self::load_state(&p)?;
        let expected_ek = state.ek_public.as_deref().and_then(from_hex);
        let t0 = Instant::now();
        let mut emit = stepper(name, progress);
        // The challenge goes in at once: QEMU holds it until the agent
        // opens the port.
        let mut session = match (&expected_ek, spec.security_profile.vtpm()) {
            (Some(ek), true) => {
                let mut ch = Channel::connect(&p.attest_sock())?;
                let ek = ek.clone();
                Some(std::thread::spawn(move || {
                    ch.attest(&ek, limit, &mut OsRng, platform::unix_now())
                }))
            }
            _ => None,
        };
        let boot_file = boot_file(&spec);
        let mut seen_firmware = false;
        let mut seen_up = false;
        loop {
            let text = read_console(&p.console());
            match console::judge(&text, &boot_file) {
                ConsoleVerdict::SecureBootDenied { reason, .. } => {
                    emit("denied", reason.clone());
                    self.fail_and_stop(&p, &reason)?;
                    return Ok(BootOutcome::Failed { reason });
                }
                ConsoleVerdict::KernelPanic { line } => {
                    let reason = format!("guest kernel panic: {line}");
                    self.fail_and_stop(&p, &reason)?;
                    return Ok(BootOutcome::Failed { reason });
                }
                ConsoleVerdict::GuestUp { line } if !seen_up => {
                    seen_up = true;
                    emit("guest-up", line);
                    self.set_phase(&p, BootPhase::GuestUp)?;
                    if session.is_none() {
                        return Ok(BootOutcome::GuestUp);
                    }
                }
                ConsoleVerdict::Booting {
                    firmware_started_boot: true,
                } if !seen_firmware => {
                    seen_firmware = true;
                    emit("firmware", "boot option started".into());
                }
                _ => {}
            }
            if session.as_ref().is_some_and(|h| h.is_finished()) {
                let handle = session.take();
                let result = handle
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(ChannelError::Unexpected {
                                expected: "evidence",
                                got: "a panic in the session thread".into(),
                            })
                        })
                    })
                    .unwrap_or_else(|| {
                        Err(ChannelError::Unexpected {
                            expected: "evidence",
                            got: "no session".into(),
                        })
                    });
                match result {
                    Ok(received) => {
                        emit(
                            "evidence",
                            format!(
                                "quote verified, AK activated under the VM's EK ({} bytes of event log)",
                                received.evidence.event_log.0.len()
                            ),
                        );
                        let json = serde_json::to_vec_pretty(&received).unwrap_or_default();
                        platform::write_file(&p.attestation(), &json, 0o600)?;
                        self.set_phase(&p, BootPhase::Attested)?;
                        return Ok(BootOutcome::Attested {
                            received: Box::new(received),
                        });
                    }
                    Err(e) => {
                        // The VM may have been refused or died: the console
                        // and the process say which.
                        let st = self.refresh(name)?;
                        if st.status != Status::Running {
                            let reason = st.reason.unwrap_or_else(|| e.to_string());
                            return Ok(BootOutcome::Failed { reason });
                        }
                        return Err(e.into());
                    }
                }
            }
            if session.is_none() {
                let st = self.refresh(name)?;
                if st.status != Status::Running {
                    return Ok(BootOutcome::Failed {
                        reason: st.reason.unwrap_or_else(|| "stopped".into()),
                    });
                }
            }
            if t0.elapsed() >= limit {
                return Ok(BootOutcome::TimedOut {
                    seconds: limit.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A running VM's paths and the EK the platform created for it, or why
    /// it cannot be attested.
    fn attestable(&self, name: &str) -> Result<(Paths, Vec<u8>), VmError> {
        let p = self.existing(name)?;
        let state = self.refresh(name)?;
        if state.status != Status::Running {
            return Err(VmError::WrongStatus {
                name: name.into(),
                status: state.status,
                needed: "attestation needs a running VM",
            });
        }
        let ek = state
            .ek_public
            .as_deref()
            .and_then(from_hex)
            .ok_or_else(|| VmError::WrongStatus {
                name: name.into(),
                status: state.status,
                needed: "attestation needs a vTPM",
            })?;
        Ok((p, ek))
    }

    /// A new challenge to a running VM's agent (after a runtime restart, or
    /// periodically).
    pub fn attest(&self, name: &str, limit: Duration) -> Result<Received, VmError> {
        let (p, ek) = self.attestable(name)?;
        let mut ch = Channel::connect(&p.attest_sock())?;
        let received = ch.attest(&ek, limit, &mut OsRng, platform::unix_now())?;
        let json = serde_json::to_vec_pretty(&received).unwrap_or_default();
        platform::write_file(&p.attestation(), &json, 0o600)?;
        self.set_phase(&p, BootPhase::Attested)?;
        Ok(received)
    }

    /// A challenge for the attestation service: its `nonce` to a running
    /// VM's agent, then the credential `credential` makes for the AK the
    /// guest names; the evidence and the secret the guest recovered come
    /// back unjudged (see [`Channel::collect`]).
    pub fn challenge(
        &self,
        name: &str,
        nonce: &[u8],
        limit: Duration,
        credential: impl FnOnce(&Evidence) -> Result<MadeCredential, String>,
    ) -> Result<Collected, VmError> {
        let (p, _) = self.attestable(name)?;
        let stale: Vec<Vec<u8>> = {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            let q = sent.entry(name.to_owned()).or_default();
            let earlier = q.iter().cloned().collect();
            q.push_back(nonce.to_vec());
            while q.len() > STALE_NONCES {
                q.pop_front();
            }
            earlier
        };
        let mut ch = Channel::connect(&p.attest_sock())?;
        Ok(ch.collect(nonce, limit, &stale, credential)?)
    }

    /// What the platform knows about a VM for its appraisal: the EK it
    /// created, the Secure Boot setting and the template's databases
    /// (rebuilt from the VM's key template), the baseline predicted from
    /// its image (boot application and UKI digests, the PCR 7 events of
    /// the VM's store), and what the posture rules need.
    pub fn facts(&self, name: &str) -> Result<VmFacts, VmError> {
        let p = self.existing(name)?;
        let spec = Self::load_spec(&p)?;
        let state = Self::load_state(&p)?;
        let ek_public = state.ek_public.as_deref().and_then(from_hex);
        let store =
            VarStore::parse(&self.make_vars(&spec)?).map_err(|e| VmError::Vars(e.to_string()))?;
        let secure_boot = spec.security_profile.secure_boot();
        let meta = ImageMetadata::read(&spec.image).ok();
        let predicted = meta
            .as_ref()
            .map(|m| predicted_baseline(m, &store, secure_boot));
        Ok(VmFacts {
            trusted_launch_supported: meta.as_ref().is_some_and(|m| {
                m.features
                    .contains(&crate::image_meta::trusted_launch_feature())
            }),
            trusted_launch: spec.security_profile.security_type == SecurityType::TrustedLaunch,
            secure_boot,
            vtpm: spec.security_profile.vtpm(),
            template: KeyDatabases::from_store(&store),
            predicted,
            ek_public,
            boots: state.boots,
            status: state.status,
            spec,
        })
    }

    fn set_phase(&self, p: &Paths, phase: BootPhase) -> Result<(), VmError> {
        let _lock = lock(&p.dir)?;
        let mut s = Self::load_state(p)?;
        if s.status == Status::Running && s.phase.is_none_or(|old| old < phase) {
            s.phase = Some(phase);
            Self::save_state(p, &s)?;
        }
        Ok(())
    }

    fn fail_and_stop(&self, p: &Paths, reason: &str) -> Result<(), VmError> {
        let _lock = lock(&p.dir)?;
        self.kill_processes(p);
        let mut s = Self::load_state(p)?;
        s.status = Status::Failed;
        s.phase = None;
        s.reason = Some(reason.to_owned());
        Self::save_state(p, &s)
    }

    /// QMP quit, then SIGKILL; swtpm follows QEMU (or is terminated);
    /// sockets and pid files go.
    fn kill_processes(&self, p: &Paths) {
        let (marker, swtpm_marker) = p.markers(self.confine);
        if let Some(q) = process::find(&p.qemu_pid(), &marker) {
            if let Ok(mut qmp) = Qmp::connect(&p.qmp(), Duration::from_secs(2)) {
                let _ = qmp.execute("quit", None);
            }
            if !process::wait_gone(q.pid, &marker, Duration::from_secs(5)) {
                process::terminate(q.pid, &marker, Duration::from_secs(2));
            }
        }
        if let Some(s) = process::find(&p.swtpm_pid(), &swtpm_marker) {
            // --terminate: swtpm exits once QEMU closes the control channel.
            if !process::wait_gone(s.pid, &swtpm_marker, Duration::from_secs(3)) {
                process::terminate(s.pid, &swtpm_marker, Duration::from_secs(2));
            }
        }
        cleanup_run_dir(p);
    }

    /// Stops a VM: ACPI power button (QMP `system_powerdown`), up to
    /// `grace` for the guest to power off, then QMP `quit`, then SIGKILL.
    pub fn stop(&self, name: &str, grace: Duration) -> Result<VmInfo, VmError> {
        let p = self.existing(name)?;
        let _lock = lock(&p.dir)?;
        let mut state = self.refresh_locked(&p)?;
        if state.status == Status::Running {
            state.stop_requested = true;
            Self::save_state(&p, &state)?;
            let (marker, _) = p.markers(self.confine);
            let mut how = "forced (QMP quit)";
            if let Some(q) = process::find(&p.qemu_pid(), &marker) {
                if let Ok(mut qmp) = Qmp::connect(&p.qmp(), Duration::from_secs(2)) {
                    if qmp.execute("system_powerdown", None).is_ok()
                        && process::wait_gone(q.pid, &marker, grace)
                    {
                        how = "the guest powered off (ACPI power button)";
                    }
                }
            }
            self.kill_processes(&p);
            state.status = Status::Stopped;
            state.phase = None;
            state.reason = Some(format!("stopped by the operator: {how}"));
            Self::save_state(&p, &state)?;
        } else {
            // A failed VM may still have processes (e.g. refused boot).
            self.kill_processes(&p);
        }
        self.info(&p)
    }

    /// Stop (graceful) then start.
    pub fn restart(
        &self,
        name: &str,
        grace: Duration,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<VmInfo, VmError> {
        self.stop(name, grace)?;
        self.start(name, progress)
    }

    /// Replaces the OS disk with a fresh overlay of the image (the vTPM
    /// and the variable store stay). A running VM is stopped first and
    /// started again afterwards.
    pub fn reimage(
        &self,
        name: &str,
        grace: Duration,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<VmInfo, VmError> {
        let p = self.existing(name)?;
        let was_running = self.refresh(name)?.status == Status::Running;
        if was_running {
            self.stop(name, grace)?;
        }
        {
            let _lock = lock(&p.dir)?;
            let spec = Self::load_spec(&p)?;
            let tmp = p.dir.join("os.qcow2.new");
            let _ = fs::remove_file(&tmp);
            overlay(&spec.image.join(IMAGE_DISK), &tmp)?;
            fs::rename(&tmp, p.os_disk()).map_err(io_err("replacing", &p.os_disk()))?;
            progress(Progress {
                vm: name.into(),
                step: "overlay",
                detail: format!("new OS disk on {}", spec.image.display()),
                elapsed_ms: 0,
            });
        }
        if was_running {
            self.start(name, progress)
        } else {
            self.info(&p)
        }
    }

    /// Brings a VM to a new model (same name): size; image (a new OS disk
    /// from it: what was on the old one is lost); security profile (a new
    /// variable store when the firmware's Secure Boot setting, key
    /// template or security type changes; a vTPM made when one is first
    /// enabled, then kept for the VM's life, so turning it off and on
    /// again keeps its EK); data disks (new ones made, dropped ones
    /// deleted, grown ones resized, kept ones keep their data; shrinking
    /// is refused). A running VM is stopped first and started again
    /// afterwards. The same spec again changes nothing.
    pub fn update(
        &self,
        spec: &VmSpec,
        grace: Duration,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<VmInfo, VmError> {
        spec.validate()?;
        let p = self.existing(&spec.name)?;
        let warnings = self.check_image(spec)?;
        let old = Self::load_spec(&p)?;
        if old == *spec {
            return self.info(&p);
        }
        for d in &spec.data_disks {
            if let Some(o) = old.data_disks.iter().find(|o| o.lun == d.lun) {
                if d.disk_size_gb < o.disk_size_gb {
                    return Err(SpecError::DataDisk {
                        lun: d.lun,
                        reason: format!(
                            "shrinking from {} to {} GiB would lose data: not supported",
                            o.disk_size_gb, d.disk_size_gb
                        ),
                    }
                    .into());
                }
            }
        }
        let was_running = self.refresh(&spec.name)?.status == Status::Running;
        if was_running {
            self.stop(&spec.name, grace)?;
        }
        {
            let _lock = lock(&p.dir)?;
            let mut step = stepper(&spec.name, progress);
            for w in warnings {
                step("warning", w);
            }
            let mut state = Self::load_state(&p)?;
            let mut changed = Vec::new();
            if old.image != spec.image {
                let tmp = p.dir.join("os.qcow2.new");
                let _ = fs::remove_file(&tmp);
                overlay(&spec.image.join(IMAGE_DISK), &tmp)?;
                fs::rename(&tmp, p.os_disk()).map_err(io_err("replacing", &p.os_disk()))?;
                step(
                    "overlay",
                    format!("new OS disk on {}", spec.image.display()),
                );
                changed.push("image");
            }
            let firmware_changed = old.security_profile.security_type
                != spec.security_profile.security_type
                || old.security_profile.secure_boot() != spec.security_profile.secure_boot()
                || (spec.security_profile.secure_boot() && old.key_template != spec.key_template);
            if firmware_changed {
                let vars = self.make_vars(spec)?;
                let tmp = p.dir.join("OVMF_VARS.fd.new");
                platform::write_file(&tmp, &vars, 0o600)?;
                fs::rename(&tmp, p.vars()).map_err(io_err("replacing", &p.vars()))?;
                step(
                    "varstore",
                    format!(
                        "new variable store: {} template, Secure Boot {}",
                        spec.key_template,
                        if spec.security_profile.secure_boot() {
                            "on"
                        } else {
                            "off"
                        }
                    ),
                );
                changed.push("security profile");
            }
            let vtpm_paths = self.vtpm_paths(&spec.name, &p);
            if spec.security_profile.vtpm() && !vtpm_paths.state.exists() {
                let ids = self.ensure_ids(&spec.name, &p)?;
                let (_, swtpm_marker) = p.markers(self.confine);
                let identity = vtpm::create(
                    &vtpm_paths,
                    &self.master,
                    &swtpm_marker,
                    self.identities(ids).1,
                    &self.keys.vtpm_ca,
                    UnixTime::from_secs(platform::unix_now()),
                    &mut OsRng,
                )?;
                state.ek_public = Some(to_hex(&identity.ek_public));
                state.ek_certificate = Some(to_hex(&identity.ek_certificate));
                step(
                    "vtpm",
                    "EK certificate issued by the platform's vTPM CA, written to NV".into(),
                );
                changed.push("vTPM");
            }
            for o in &old.data_disks {
                match spec.data_disks.iter().find(|d| d.lun == o.lun) {
                    None => {
                        let path = p.data_disk(o.lun);
                        fs::remove_file(&path).or_else(|e| {
                            if e.kind() == std::io::ErrorKind::NotFound {
                                Ok(())
                            } else {
                                Err(io_err("removing", &path)(e))
                            }
                        })?;
                        step("data disk", format!("LUN {} deleted", o.lun));
                        changed.push("data disks");
                    }
                    Some(d) if d.disk_size_gb > o.disk_size_gb => {
                        qemu_img(&[
                            OsStr::new("resize"),
                            OsStr::new("-q"),
                            p.data_disk(d.lun).as_os_str(),
                            OsStr::new(&format!("{}G", d.disk_size_gb)),
                        ])?;
                        step(
                            "data disk",
                            format!("LUN {} grown to {} GiB", d.lun, d.disk_size_gb),
                        );
                        changed.push("data disks");
                    }
                    Some(_) => {}
                }
            }
            if spec.data_disks.len() > old.data_disks.len()
                || spec
                    .data_disks
                    .iter()
                    .any(|d| !old.data_disks.iter().any(|o| o.lun == d.lun))
            {
                changed.push("data disks");
            }
            make_data_disks(spec, &p, &mut step)?;
            if old.vcpus != spec.vcpus || old.memory_mib != spec.memory_mib {
                changed.push("size");
            }
            changed.dedup();
            Self::save_spec(&p, spec)?;
            state.pending_changes.clear();
            state.reason = Some(format!("updated: {}", changed.join(", ")));
            Self::save_state(&p, &state)?;
        }
        if was_running {
            self.start(&spec.name, progress)
        } else {
            self.info(&p)
        }
    }

    /// Changes vCPUs and/or memory; applied at the next start.
    pub fn resize(
        &self,
        name: &str,
        vcpus: Option<u32>,
        memory_mib: Option<u64>,
    ) -> Result<VmInfo, VmError> {
        let p = self.existing(name)?;
        let _lock = lock(&p.dir)?;
        let mut spec = Self::load_spec(&p)?;
        let mut state = Self::load_state(&p)?;
        if let Some(v) = vcpus {
            spec.vcpus = v;
        }
        if let Some(m) = memory_mib {
            spec.memory_mib = m;
        }
        spec.validate()?;
        Self::save_spec(&p, &spec)?;
        if state.status == Status::Running {
            state.pending_changes = vec![format!(
                "{} vCPUs, {} MiB: applied at the next start",
                spec.vcpus, spec.memory_mib
            )];
            Self::save_state(&p, &state)?;
        }
        self.info(&p)
    }

    /// Deletes a VM: stops it (forced), destroys its vTPM and key, removes
    /// its directory.
    pub fn delete(&self, name: &str) -> Result<(), VmError> {
        let p = self.existing(name)?;
        // Not a VM name (names cannot start with '.'), so `list` skips it.
        let tomb = self.home.vms().join(format!(".{name}.deleting"));
        {
            let _lock = lock(&p.dir)?;
            self.kill_processes(&p);
            vtpm::destroy(&self.vtpm_paths(name, &p))?;
            if let Some(ids) = p.recorded_ids() {
                self.ids.release(&ids)?;
            }
            // Moved out of the way in one step, under the lock: anyone who
            // locks the VM's directory from now on (a boot follower, a
            // status call) finds it gone, instead of re-creating its lock
            // file in a directory being removed ("Directory not empty").
            if tomb.exists() {
                fs::remove_dir_all(&tomb).map_err(io_err("removing", &tomb))?;
            }
            fs::rename(&p.dir, &tomb).map_err(io_err("moving", &p.dir))?;
        }
        fs::remove_dir_all(&tomb).map_err(io_err("removing", &tomb))
    }

    /// Brings a VM's recorded state in line with what runs: re-adopts a
    /// running QEMU, fails a VM whose console shows a refused boot or whose
    /// QEMU died, and removes leftovers (orphan swtpm, stale sockets).
    pub fn refresh(&self, name: &str) -> Result<VmState, VmError> {
        let p = self.existing(name)?;
        let _lock = lock(&p.dir)?;
        self.refresh_locked(&p)
    }

    fn refresh_locked(&self, p: &Paths) -> Result<VmState, VmError> {
        let mut state = Self::load_state(p)?;
        let before = state.clone();
        let (marker, _) = p.markers(self.confine);
        let qemu = process::find(&p.qemu_pid(), &marker);
        match (qemu, state.status) {
            (Some(_), _) => {
                // QEMU runs: whatever the record said (a crash may have
                // come between starting QEMU and writing state), it runs.
                if state.status != Status::Running {
                    state.status = Status::Running;
                    state.reason = Some("re-adopted a running QEMU".into());
                    state.phase.get_or_insert(BootPhase::Firmware);
                }
                if let ConsoleVerdict::SecureBootDenied { reason, .. } =
                    console::judge(&read_console(&p.console()), &boot_file_of(p))
                {
                    self.kill_processes(p);
                    state.status = Status::Failed;
                    state.phase = None;
                    state.reason = Some(reason);
                }
            }
            (None, Status::Running) => {
                let console = read_console(&p.console());
                let (status, reason) = if state.stop_requested {
                    (Status::Stopped, "stopped by the operator".to_owned())
                } else if let ConsoleVerdict::SecureBootDenied { reason, .. } =
                    console::judge(&console, &boot_file_of(p))
                {
                    (Status::Failed, reason)
                } else if console.contains("reboot: Power down") {
                    (Status::Stopped, "the guest powered off".to_owned())
                } else if console.contains("reboot: Restarting system") {
                    (
                        Status::Stopped,
                        "the guest rebooted (the runtime starts VMs again only on request)"
                            .to_owned(),
                    )
                } else {
                    (
                        Status::Failed,
                        "QEMU exited unexpectedly (killed or crashed); the vTPM state is intact"
                            .to_owned(),
                    )
                };
                state.status = status;
                state.reason = Some(reason);
                state.phase = None;
                self.kill_processes(p);
            }
            (None, Status::Creating) => {
                state.status = Status::Failed;
                state.reason = Some("creation was interrupted; delete and create again".into());
                self.kill_processes(p);
            }
            (None, _) => {
                // Stopped or failed: nothing may run.
                self.kill_processes(p);
            }
        }
        if state != before {
            Self::save_state(p, &state)?;
        }
        Ok(state)
    }

    fn info(&self, p: &Paths) -> Result<VmInfo, VmError> {
        let (marker, swtpm_marker) = p.markers(self.confine);
        let confinement = match p.recorded_ids().filter(|_| self.confine) {
            Some(ids) => Confinement::Confined {
                qemu_uid: ids.qemu,
                swtpm_uid: ids.swtpm,
            },
            None if self.confine => Confinement::None {
                reason: "not started since VMs were confined; the next start confines it".into(),
            },
            None => Confinement::None {
                reason: format!(
                    "runtime not root: QEMU and swtpm run as uid {}",
                    rustix::process::getuid().as_raw()
                ),
            },
        };
        Ok(VmInfo {
            spec: Self::load_spec(p)?,
            state: Self::load_state(p)?,
            qemu_pid: process::find(&p.qemu_pid(), &marker).map(|t| t.pid),
            swtpm_pid: process::find(&p.swtpm_pid(), &swtpm_marker).map(|t| t.pid),
            dir: p.dir.clone(),
            console_log: p.console(),
            confinement,
        })
    }

    /// A VM, refreshed.
    pub fn show(&self, name: &str) -> Result<VmInfo, VmError> {
        self.refresh(name)?;
        let p = self.existing(name)?;
        self.info(&p)
    }

    /// Every VM, refreshed (the runtime's recovery after a restart).
    pub fn list(&self) -> Result<Vec<VmInfo>, VmError> {
        let dir = self.home.vms();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err("listing", &dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            match self.show(&n) {
                Ok(i) => out.push(i),
                Err(VmError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The last evidence the runtime received from a VM.
    pub fn last_attestation(&self, name: &str) -> Result<Option<serde_json::Value>, VmError> {
        let p = self.existing(name)?;
        if !p.attestation().exists() {
            return Ok(None);
        }
        let bytes = platform::read_small(&p.attestation(), 64 << 20)?;
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Appraises the VM's last evidence with what the platform knows: the
    /// EK it created, its vTPM CA, the template's Secure Boot databases
    /// (rebuilt from the VM's key template), and a baseline predicted from
    /// the image (boot application and UKI digests, the PCR 7 events of the
    /// VM's store). `None` if no evidence was received yet.
    pub fn appraise(&self, name: &str) -> Result<Option<Appraisal>, VmError> {
        let p = self.existing(name)?;
        let Some(att) = self.last_attestation(name)? else {
            return Ok(None);
        };
        let facts = self.facts(name)?;
        let evidence: Evidence = serde_json::from_value(att["evidence"].clone()).map_err(|e| {
            VmError::Platform(PlatformError::BadKey {
                path: p.attestation(),
                reason: e.to_string(),
            })
        })?;
        let activated = att["checks"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == "ak_activated_under_ek"));
        let ek = facts.ek_public.clone().unwrap_or_default();
        let ca = vec![self.keys.vtpm_ca.certificate().clone()];
        let now = UnixTime::from_secs(platform::unix_now());
        let reference = Reference {
            vm_id: name,
            ek_public: &ek,
            vtpm_ca: &ca,
            nonce: &evidence.nonce.0,
            ak_activated: activated,
            secure_boot_expected: facts.secure_boot,
            template: Some(&facts.template),
            baseline: facts.predicted.as_ref(),
            baseline_required: false,
            now,
            enrollment: None,
        };
        Ok(Some(appraise(&evidence, &reference)))
    }

    /// The path of a VM's console log.
    pub fn console_path(&self, name: &str) -> Result<PathBuf, VmError> {
        Ok(self.existing(name)?.console())
    }
}

/// Progress reporting for one operation: step name, detail, and the
/// milliseconds since the operation began.
fn stepper<'a>(
    vm: &'a str,
    progress: &'a mut dyn FnMut(Progress),
) -> impl FnMut(&'static str, String) + 'a {
    let t0 = Instant::now();
    move |step, detail| {
        progress(Progress {
            vm: vm.to_owned(),
            step,
            detail,
            elapsed_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// The baseline an image predicts: its boot application and UKI sections
/// when it is a single UKI, and the PCR 7 events of the VM's store with the
/// db entry that signed it (custom template), and what an import
/// predicted (shim → grub: PCRs 4, 7, 8 and 9; the Windows Boot Manager:
/// PCR 4 only). What it cannot say (the authorities of a shim chain
/// without an import's prediction, what Windows measures) is left out.
fn predicted_baseline(m: &ImageMetadata, store: &VarStore, secure_boot: bool) -> Baseline {
    let uki = m
        .boot_components
        .first()
        .filter(|c| m.boot_components.len() == 1 && !c.uki_sections.is_empty());
    let apps: Vec<(String, String)> = uki
        .map(|c| vec![(c.esp_path.clone(), to_hex(&c.authenticode_sha256.0))])
        .unwrap_or_default();
    let sections: Vec<(String, String)> = uki
        .map(|c| {
            c.uki_sections
                .iter()
                .map(|s| (s.name.clone(), to_hex(&s.sha256.0)))
                .collect()
        })
        .unwrap_or_default();
    // The authority: the db entry whose certificate signed the image.
    let signer = m.db_certificate.as_ref().and_then(|cert| {
        store
            .secure_boot_db(SecureBootVar::Db)
            .ok()
            .flatten()?
            .entries()
            .find(|(_, e)| Sha256Digest::of(&e.data) == cert.sha256)
            .map(|(_, e)| e.clone())
    });
    let pcr7 = predict_pcr7(store, signer.as_slice());
    let mut b = predict(&ImageFacts {
        image: &m.name,
        boot_applications: &apps,
        uki_sections: &sections,
        pcr7: Some(&pcr7),
    });
    if signer.is_none() || !secure_boot {
        // Without Secure Boot nothing is authorised; a chain the runtime
        // cannot see (shim's vendor certificate) is not predicted.
        b.measurements.authorities = None;
    }
    b.measurements.kernel_release = m.kernel_release.clone();
    if let Some(p) = &m.predicted_boot {
        // An imported chain whose measurements the import predicted.
        let comps = |v: &[crate::image_meta::NamedDigest]| {
            v.iter()
                .map(|c| trustlaunch_attestation::baseline::Component {
                    name: c.name.clone(),
                    sha256: c.sha256.clone(),
                })
                .collect::<Vec<_>>()
        };
        match p.chain {
            PredictedChain::ShimGrub => {
                if secure_boot {
                    b.measurements.boot_applications = Some(comps(&p.boot_applications));
                    b.measurements.authorities = Some(comps(&p.authorities));
                }
                b.measurements.loaded_files = Some(comps(&p.loaded_files));
                b.measurements.kernel_command_lines = Some(p.kernel_command_lines.clone());
            }
            PredictedChain::WindowsBootManager => {
                // PCR 4: the boot manager alone. Whatever else reaches
                // PCR 7 and what Windows loads (PCRs 12-14) is not
                // predicted: the first healthy boot's log says it.
                if secure_boot {
                    b.measurements.boot_applications = Some(comps(&p.boot_applications));
                }
                b.measurements.authorities = None;
            }
        }
    }
    if !secure_boot {
        // Without Secure Boot systemd-stub hands the kernel to the
        // firmware's LoadImage, which measures it as a second application
        // (seen on real boots): the image alone does not say its digest.
        b.measurements.boot_applications = None;
    }
    b
}

fn boot_file_of(p: &Paths) -> String {
    Runtime::load_spec(p).map_or_else(|_| BOOT_FILE.to_owned(), |s| boot_file(&s))
}

fn read_console(path: &Path) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(32 << 20).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A digest of the VM's directory: names stable for the VM and distinct
/// between VMs on the host.
fn dir_digest(dir: &Path) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes()).into()
}

/// A locally administered MAC in QEMU's range, stable for the VM.
fn mac_address(dir: &Path) -> String {
    let h = dir_digest(dir);
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

/// The tap device of the VM whose directory is `dir` (at most 15 bytes).
fn tap_name(dir: &Path) -> String {
    let h = dir_digest(dir);
    format!("tltap{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
}

fn loopback_port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_loopback_port() -> Result<u16, VmError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| VmError::Tool {
            tool: "network",
            message: format!("no free port on 127.0.0.1 for the SSH forward: {e}"),
        })
}

/// Runs `ip ARGS` (package iproute2).
fn ip(args: &[&str]) -> Result<(), VmError> {
    let o = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Tool {
            tool: "ip",
            message: format!("{e} (install iproute2)"),
        })?;
    if o.status.success() {
        Ok(())
    } else {
        Err(VmError::Tool {
            tool: "ip",
            message: format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        })
    }
}

/// Makes tap `ifname` owned by QEMU's ids (so the confined QEMU may open
/// it, and no other uid may) and attaches it to `bridge`, which must
/// exist: the runtime never makes a bridge.
fn make_tap(ifname: &str, bridge: &str, qemu: Option<Identity>) -> Result<(), VmError> {
    if !Path::new("/sys/class/net")
        .join(bridge)
        .join("bridge")
        .is_dir()
    {
        return Err(VmError::Tool {
            tool: "network",
            message: format!(
                "bridge {bridge:?} does not exist on this host (ip link add {bridge} type bridge)"
            ),
        });
    }
    let _ = ip(&["link", "del", ifname]);
    let (uid, gid) = match qemu {
        Some(id) => (id.uid, id.gid),
        None => (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
    };
    let (uid, gid) = (uid.to_string(), gid.to_string());
    ip(&[
        "tuntap", "add", "dev", ifname, "mode", "tap", "user", &uid, "group", &gid,
    ])?;
    let attached = ip(&["link", "set", ifname, "master", bridge])
        .and_then(|()| ip(&["link", "set", ifname, "up"]));
    if attached.is_err() {
        let _ = ip(&["link", "del", ifname]);
    }
    attached
}

fn cleanup_run_dir(p: &Paths) {
    // A bridged VM's tap goes with its QEMU.
    let tap = tap_name(&p.dir);
    if Path::new("/sys/class/net").join(&tap).exists() {
        let _ = ip(&["link", "del", &tap]);
    }
    for f in [
        p.qemu_pid(),
        p.swtpm_pid(),
        p.qmp(),
        p.legacy_swtpm_sock(),
        p.attest_sock(),
    ] {
        let _ = fs::remove_file(f);
    }
}

/// Creates the spec's data disks that do not exist yet (empty qcow2,
/// allocated as written); a disk already there keeps its data.
fn make_data_disks(
    spec: &VmSpec,
    p: &Paths,
    step: &mut dyn FnMut(&'static str, String),
) -> Result<(), VmError> {
    for d in &spec.data_disks {
        let path = p.data_disk(d.lun);
        if path.exists() {
            continue;
        }
        let tmp = p.dir.join(format!("data-{}.qcow2.new", d.lun));
        let _ = fs::remove_file(&tmp);
        qemu_img(&[
            OsStr::new("create"),
            OsStr::new("-q"),
            OsStr::new("-f"),
            OsStr::new("qcow2"),
            tmp.as_os_str(),
            OsStr::new(&format!("{}G", d.disk_size_gb)),
        ])?;
        private_file(&tmp)?;
        fs::rename(&tmp, &path).map_err(io_err("creating", &path))?;
        step(
            "data disk",
            format!(
                "LUN {}: {} GiB at {}",
                d.lun,
                d.disk_size_gb,
                path.display()
            ),
        );
    }
    Ok(())
}

/// Runs `qemu-img` with `args`.
fn qemu_img(args: &[&OsStr]) -> Result<(), VmError> {
    let o = Command::new("qemu-img")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Tool {
            tool: "qemu-img",
            message: format!("{e} (install qemu-utils)"),
        })?;
    if !o.status.success() {
        return Err(VmError::Tool {
            tool: "qemu-img",
            message: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Narrows a file a tool made (with the process's umask) to 0600.
fn private_file(path: &Path) -> Result<(), VmError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err("chmod 0600", path))
}

/// QEMU's command for `launch`: the files it names opened, its listening
/// sockets bound (0600) and listening, and each at its descriptor number
/// in the child (`tpm` is QEMU's end of the socket pair to swtpm). The
/// runtime's copies close when the command is dropped.
pub fn qemu_command(
    program: &Path,
    launch: &Launch,
    tpm: Option<OwnedFd>,
) -> Result<Command, VmError> {
    use command_fds::{CommandFdExt, FdMapping};
    let mut tpm = tpm;
    let mut fds = Vec::with_capacity(launch.fds.len());
    for passed in &launch.fds {
        let fd: OwnedFd = match &passed.what {
            Passed::File { path, write } => fs::OpenOptions::new()
                .read(true)
                .write(*write)
                .open(path)
                .map_err(io_err("opening", path))?
                .into(),
            Passed::NewFile { path } => fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err("creating", path))?
                .into(),
            Passed::Listener { path } => {
                let _ = fs::remove_file(path);
                let l = UnixListener::bind(path).map_err(io_err("binding", path))?;
                private_file(path)?;
                l.into()
            }
            Passed::Tpm => tpm.take().ok_or_else(|| VmError::Tool {
                tool: "qemu-system-x86_64",
                message: "the VM has a vTPM but no swtpm channel was made".into(),
            })?,
        };
        fds.push(FdMapping {
            parent_fd: fd,
            child_fd: passed.fd,
        });
    }
    let mut cmd = Command::new(program);
    cmd.args(&launch.args);
    cmd.fd_mappings(fds).map_err(|e| VmError::Tool {
        tool: "qemu-system-x86_64",
        message: e.to_string(),
    })?;
    Ok(cmd)
}

fn overlay(base: &Path, out: &Path) -> Result<(), VmError> {
    let base = fs::canonicalize(base).map_err(io_err("resolving", base))?;
    overlay_on(&base, out)?;
    private_file(out)
}

fn overlay_on(base: &Path, out: &Path) -> Result<(), VmError> {
    qemu_img(&[
        OsStr::new("create"),
        OsStr::new("-q"),
        OsStr::new("-f"),
        OsStr::new("qcow2"),
        OsStr::new("-F"),
        OsStr::new("raw"),
        OsStr::new("-b"),
        base.as_os_str(),
        out.as_os_str(),
    ])
}

#[derive(Serialize, Deserialize)]
struct AccelCache {
    boot_id: String,
    decision: AccelDecision,
}

fn decide_accel(home: &Home) -> Result<AccelDecision, VmError> {
    if std::env::var_os("TRUSTLAUNCH_ACCEL").is_some_and(|v| !v.is_empty()) {
        return Ok(accel::decide(
            &ProbeConfig::default(),
            &home.root().join("probe"),
        )?);
    }
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cache = home.root().join("accel.json");
    if let Ok(bytes) = platform::read_small(&cache, 64 << 10) {
        if let Ok(c) = serde_json::from_slice::<AccelCache>(&bytes) {
            if c.boot_id == boot_id && !boot_id.is_empty() {
                return Ok(c.decision);
            }
        }
    }
    let scratch = home.root().join("probe");
    platform::private_dir(&scratch)?;
    let decision = accel::decide(&ProbeConfig::default(), &scratch)?;
    let _ = fs::remove_dir_all(&scratch);
    let json = serde_json::to_vec_pretty(&AccelCache {
        boot_id,
        decision: decision.clone(),
    })
    .unwrap_or_default();
    platform::write_file(&cache, &json, 0o600)?;
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_meta::{DiskInfo, NamedDigest, PredictedBoot};

    fn imported(predicted: PredictedBoot) -> ImageMetadata {
        ImageMetadata {
            schema: crate::image_meta::SCHEMA,
            name: "imported".into(),
            kind: "imported".into(),
            generation: crate::image_meta::Generation::V2,
            features: vec![crate::image_meta::trusted_launch_feature()],
            key_template: ImageKeyTemplate::Microsoft,
            db_certificate: None,
            boot_components: Vec::new(),
            esp_files: Vec::new(),
            kernel_release: None,
            kernel_cmdline: None,
            created_at: crate::image_meta::rfc3339(0),
            disk: DiskInfo {
                file: IMAGE_DISK.into(),
                format: "raw".into(),
                size_bytes: 0,
                sha256: Sha256Digest::of(b""),
            },
            notes: Vec::new(),
            guest_agent: None,
            trusted_launch_refusals: Vec::new(),
            predicted_boot: Some(predicted),
        }
    }

    fn digest(name: &str) -> NamedDigest {
        NamedDigest {
            name: name.into(),
            sha256: Sha256Digest::of(name.as_bytes()).to_hex(),
        }
    }

    #[test]
    fn an_imported_windows_chain_predicts_pcr_4_only() {
        // The empty store Debian's OVMF ships (a host requirement).
        let store = VarStore::parse(&fs::read("/usr/share/OVMF/OVMF_VARS_4M.fd").unwrap()).unwrap();
        let shim_grub = PredictedBoot {
            chain: PredictedChain::ShimGrub,
            boot_applications: vec![digest("\\EFI\\BOOT\\BOOTX64.EFI")],
            loaded_files: vec![digest("/vmlinuz")],
            kernel_command_lines: vec!["/vmlinuz ro".into()],
            authorities: vec![digest("db")],
        };
        let b = predicted_baseline(&imported(shim_grub.clone()), &store, true).measurements;
        assert_eq!(b.boot_applications.map(|a| a.len()), Some(1));
        assert_eq!(b.authorities.map(|a| a.len()), Some(1));
        assert_eq!(b.loaded_files.map(|a| a.len()), Some(1));
        assert_eq!(b.kernel_command_lines, Some(vec!["/vmlinuz ro".into()]));

        let windows = PredictedBoot {
            chain: PredictedChain::WindowsBootManager,
            loaded_files: Vec::new(),
            kernel_command_lines: Vec::new(),
            authorities: Vec::new(),
            ..shim_grub
        };
        let b = predicted_baseline(&imported(windows), &store, true).measurements;
        let apps = b.boot_applications.unwrap();
        assert_eq!(
            (apps.len(), apps[0].name.as_str()),
            (1, "\\EFI\\BOOT\\BOOTX64.EFI")
        );
        // Not "none": not predicted, so not compared.
        assert_eq!(b.authorities, None);
        assert_eq!(b.loaded_files, None);
        assert_eq!(b.kernel_command_lines, None);
    }
}
