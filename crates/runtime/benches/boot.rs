//! VM boot benchmark: what the runtime costs on top of a bare
//! QEMU boot of the same image on the same virtual hardware.
//!
//! ```sh
//! cargo bench -p trustlaunch-runtime --bench boot -- [--runs N | --quick] [--agent PATH]
//! ```
//!
//! A `bench` command, not criterion: one sample is a whole VM boot (about
//! 15 s under TCG), so a run is a few rounds. Per round, in a rotating
//! order so that drift on a shared machine hits every variant alike:
//!
//! 1. **TrustedLaunch** through the runtime (Secure Boot, vTPM, `custom`
//!    key template): `create` (varstore, overlay, vTPM with its EK
//!    certificate), `start` (swtpm, QEMU), `wait_boot` to verified
//!    evidence (firmware started the boot option, guest up, evidence);
//!    then the processes' memory and the VM's files are measured, and the
//!    VM is stopped and deleted.
//! 2. **Standard** through the runtime (no Secure Boot, no vTPM, plain
//!    OVMF): `create`, `start`, `wait_boot` to the guest-up marker.
//! 3. **Baseline**: a hand-written QEMU command line for the same image and
//!    hardware (q35 + SMM, secure pflash, the Secure Boot OVMF with a copy
//!    of a varstore the runtime enrolled, a swtpm started by hand on a copy
//!    of a vTPM the runtime made, a qcow2 overlay, serial to a file, the
//!    attestation port), timed from spawning swtpm to the guest-up marker
//!    and to evidence, with the same host-side exchange the runtime does
//!    ([`Channel::attest`]) so the guest does the same work.
//!
//! Everything lives in a fresh temporary `TRUSTLAUNCH_HOME`; the tiny image
//! is built once at the start (timed, reported, not part of any variant).
//! VMs are deleted and hand-started processes killed on every exit path
//! that unwinds (errors and panics), not on SIGKILL or Ctrl-C.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use serde_json::json;
use trustlaunch_runtime::channel::Channel;
use trustlaunch_runtime::console::{self, ConsoleVerdict};
use trustlaunch_runtime::image_build::{build_image, BuildRequest, Recipe};
use trustlaunch_runtime::platform::Home;
use trustlaunch_runtime::qemu::{Accel, ATTESTATION_PORT};
use trustlaunch_runtime::spec::{Generation, KeyTemplate, Network, SecurityProfile, VmSpec};
use trustlaunch_runtime::vm::{BootOutcome, Progress, Runtime, VmInfo, BOOT_FILE, IMAGE_DISK};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Guest memory of every VM, MiB.
const MEMORY_MIB: u64 = 1024;
/// vCPUs of every VM (`-smp 1` boots faster than 2 under TCG here).
const VCPUS: u32 = 1;
/// How long one boot may take before the run fails.
const BOOT_LIMIT: Duration = Duration::from_secs(240);
/// How long `stop` lets the guest power off (ACPI) before QMP `quit`.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Console poll interval of the baseline (the runtime's `wait_boot` polls
/// every 100 ms; that latency is part of what it costs).
const BASELINE_POLL: Duration = Duration::from_millis(20);

const SECBOOT_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";

struct Args {
    runs: usize,
    agent: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        runs: 3,
        agent: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--quick" => args.runs = 1,
            "--runs" => {
                let n = it.next().ok_or("--runs needs a number")?;
                args.runs = n.parse().map_err(|_| format!("--runs {n}: not a number"))?;
                if args.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--agent" => args.agent = Some(it.next().ok_or("--agent needs a path")?.into()),
            "-h" | "--help" => {
                println!(
                    "cargo bench -p trustlaunch-runtime --bench boot -- [--runs N | --quick] [--agent PATH]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(args)
}

/// The workspace's target directory (this binary is `target/<profile>/deps/boot-*`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(Path::to_path_buf))
        .filter(|t| t.join("debug").is_dir() || t.join("release").is_dir())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The guest agent: `--agent`, else the release build, else the debug build.
fn find_agent(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(a) = given {
        return if a.is_file() {
            Ok(a)
        } else {
            Err(format!("guest agent {} not found", a.display()).into())
        };
    }
    let t = target_dir();
    for p in [
        t.join("release/trustlaunch-agent"),
        t.join("debug/trustlaunch-agent"),
    ] {
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "no guest agent in {}/{{release,debug}}: cargo build -p trustlaunch-agent (or --agent PATH)",
        t.display()
    )
    .into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Samples of one variant, phase by phase, in the order first recorded.
#[derive(Default)]
struct Samples {
    phases: Vec<(&'static str, Vec<f64>)>,
}

impl Samples {
    fn add(&mut self, phase: &'static str, value: f64) {
        match self.phases.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, v)) => v.push(value),
            None => self.phases.push((phase, vec![value])),
        }
    }

    fn get(&self, phase: &str) -> Option<&[f64]> {
        self.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, v)| v.as_slice())
    }

    fn median(&self, phase: &str) -> Option<f64> {
        self.get(phase).map(|v| stats(v).0)
    }
}

/// (median, min, max).
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    };
    (
        median,
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

/// Moments of one boot, from one origin.
struct Timeline {
    t0: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Timeline {
    fn new() -> Self {
        Self {
            t0: Instant::now(),
            marks: Vec::new(),
        }
    }

    fn mark(&mut self, name: &'static str) {
        let d = self.t0.elapsed();
        self.marks.push((name, d));
    }

    fn mark_at(&mut self, name: &'static str, at: Instant) {
        self.marks
            .push((name, at.saturating_duration_since(self.t0)));
    }

    fn at(&self, name: &str) -> Option<Duration> {
        self.marks.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }

    /// Records `to - from` (the origin when `from` is empty) as `phase`.
    fn span(&self, s: &mut Samples, phase: &'static str, from: &str, to: &str) {
        let start = if from.is_empty() {
            Some(Duration::ZERO)
        } else {
            self.at(from)
        };
        if let (Some(a), Some(b)) = (start, self.at(to)) {
            s.add(phase, ms(b.saturating_sub(a)));
        }
    }
}

/// Deletes a runtime VM when dropped (errors and panics included).
struct VmGuard<'a> {
    rt: &'a Runtime,
    name: String,
}

impl Drop for VmGuard<'_> {
    fn drop(&mut self) {
        // NotFound once the run deleted it itself.
        let _ = self.rt.delete(&self.name);
    }
}

/// Kills and reaps hand-started processes when dropped.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`, KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

fn rss(pid: u32) -> Option<Rss> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
    })
}

/// (apparent bytes, allocated bytes) of a file or a directory tree.
fn disk_usage(path: &Path) -> (u64, u64) {
    let Ok(m) = fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if m.is_dir() {
        let mut total = (0, m.blocks() * 512);
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                let (a, b) = disk_usage(&e.path());
                total.0 += a;
                total.1 += b;
            }
        }
        total
    } else {
        (m.len(), m.blocks() * 512)
    }
}

fn spec(name: &str, image: &Path, profile: SecurityProfile, template: KeyTemplate) -> VmSpec {
    VmSpec {
        name: name.into(),
        hyper_v_generation: Generation::V2,
        security_profile: profile,
        key_template: template,
        vcpus: VCPUS,
        memory_mib: MEMORY_MIB,
        image: image.to_path_buf(),
        data_disks: Vec::new(),
        network: Network::None,
        os_profile: None,
    }
}

fn console_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Memory and disk of one TrustedLaunch VM after evidence.
#[derive(Default)]
struct Footprint {
    qemu: Vec<Rss>,
    swtpm: Vec<Rss>,
    baseline_qemu: Vec<Rss>,
    baseline_swtpm: Vec<Rss>,
    /// (what, apparent, allocated) of the last TrustedLaunch VM.
    files: Vec<(&'static str, u64, u64)>,
}

/// One TrustedLaunch VM through the runtime: create → start → evidence,
/// footprint, stop, delete.
fn run_trusted(
    rt: &Runtime,
    image: &Path,
    name: &str,
    s: &mut Samples,
    fp: &mut Footprint,
) -> Result<()> {
    let _guard = VmGuard {
        rt,
        name: name.into(),
    };
    let spec = spec(
        name,
        image,
        SecurityProfile::trusted_launch(),
        KeyTemplate::Custom,
    );
    let mut tl = Timeline::new();
    let mut marks: Vec<(&'static str, Instant)> = Vec::new();
    let mut note = |p: Progress| marks.push((p.step, Instant::now()));
    rt.create(&spec, &mut note)?;
    let created = Instant::now();
    let info = rt.start(name, &mut note)?;
    let started = Instant::now();
    let outcome = rt.wait_boot(name, BOOT_LIMIT, &mut note)?;
    let done = Instant::now();
    if !matches!(outcome, BootOutcome::Attested { .. }) {
        return Err(format!(
            "{name}: expected evidence, got {}\n{}",
            serde_json::to_string(&outcome).unwrap_or_default(),
            console_tail(&info.console_log)
        )
        .into());
    }
    for (step, at) in marks {
        tl.mark_at(step, at);
    }
    tl.mark_at("create-returned", created);
    tl.mark_at("start-returned", started);
    tl.mark_at("wait-returned", done);
    tl.span(s, "create: varstore", "", "varstore");
    tl.span(s, "create: overlay", "varstore", "overlay");
    tl.span(s, "create: vtpm (EK + cert)", "overlay", "vtpm");
    tl.span(s, "create (total)", "", "create-returned");
    tl.span(s, "start: swtpm", "create-returned", "swtpm");
    tl.span(s, "start: qemu", "swtpm", "qemu");
    tl.span(s, "start (total)", "create-returned", "start-returned");
    tl.span(
        s,
        "boot: to firmware boot option",
        "start-returned",
        "firmware",
    );
    tl.span(s, "boot: firmware to guest-up", "firmware", "guest-up");
    tl.span(s, "boot: guest-up to evidence", "guest-up", "evidence");
    tl.span(
        s,
        "boot (start returned to evidence)",
        "start-returned",
        "evidence",
    );
    tl.span(s, "create to guest-up", "", "guest-up");
    tl.span(s, "create to evidence", "", "evidence");

    // Footprint while the VM is up and attested.
    let info = rt.show(name)?;
    if let Some(r) = info.qemu_pid.and_then(|p| rss(p as u32)) {
        fp.qemu.push(r);
    }
    if let Some(r) = info.swtpm_pid.and_then(|p| rss(p as u32)) {
        fp.swtpm.push(r);
    }
    fp.files = vm_files(rt, &info, name);

    let t = Instant::now();
    rt.stop(name, STOP_GRACE)?;
    s.add("stop (ACPI power-off)", ms(t.elapsed()));
    let t = Instant::now();
    rt.delete(name)?;
    s.add("delete", ms(t.elapsed()));
    Ok(())
}

fn vm_files(rt: &Runtime, info: &VmInfo, name: &str) -> Vec<(&'static str, u64, u64)> {
    let d = &info.dir;
    let key = rt.home().keys().join(format!("{name}.vtpm.key"));
    let mut v = vec![
        ("OVMF_VARS.fd", disk_usage(&d.join("OVMF_VARS.fd"))),
        ("os.qcow2 (overlay)", disk_usage(&d.join("os.qcow2"))),
        ("vtpm/ (swtpm state)", disk_usage(&d.join("vtpm"))),
        ("vTPM key (keys/)", disk_usage(&key)),
    ];
    let whole = disk_usage(d);
    let listed: (u64, u64) = v
        .iter()
        .filter(|(n, _)| !n.starts_with("vTPM key"))
        .fold((0, 0), |a, (_, (x, y))| (a.0 + x, a.1 + y));
    v.push((
        "other (spec, state, console, attestation, run/)",
        (whole.0 - listed.0, whole.1.saturating_sub(listed.1)),
    ));
    let key_size = disk_usage(&key);
    v.push((
        "whole VM (dir + key)",
        (whole.0 + key_size.0, whole.1 + key_size.1),
    ));
    v.into_iter().map(|(n, (a, b))| (n, a, b)).collect()
}

/// One Standard VM through the runtime: create → start → guest-up, delete.
fn run_standard(rt: &Runtime, image: &Path, name: &str, s: &mut Samples) -> Result<()> {
    let _guard = VmGuard {
        rt,
        name: name.into(),
    };
    let spec = spec(name, image, SecurityProfile::standard(), KeyTemplate::None);
    let mut tl = Timeline::new();
    let mut marks: Vec<(&'static str, Instant)> = Vec::new();
    let mut note = |p: Progress| marks.push((p.step, Instant::now()));
    rt.create(&spec, &mut note)?;
    let created = Instant::now();
    let info = rt.start(name, &mut note)?;
    let started = Instant::now();
    let outcome = rt.wait_boot(name, BOOT_LIMIT, &mut note)?;
    if !matches!(outcome, BootOutcome::GuestUp) {
        return Err(format!(
            "{name}: expected guest-up, got {}\n{}",
            serde_json::to_string(&outcome).unwrap_or_default(),
            console_tail(&info.console_log)
        )
        .into());
    }
    for (step, at) in marks {
        tl.mark_at(step, at);
    }
    tl.mark_at("create-returned", created);
    tl.mark_at("start-returned", started);
    tl.span(s, "create: varstore", "", "varstore");
    tl.span(s, "create: overlay", "varstore", "overlay");
    tl.span(s, "create (total)", "", "create-returned");
    tl.span(s, "start: qemu", "create-returned", "qemu");
    tl.span(s, "start (total)", "create-returned", "start-returned");
    tl.span(
        s,
        "boot: to firmware boot option",
        "start-returned",
        "firmware",
    );
    tl.span(s, "boot: firmware to guest-up", "firmware", "guest-up");
    tl.span(
        s,
        "boot (start returned to guest-up)",
        "start-returned",
        "guest-up",
    );
    tl.span(s, "create to guest-up", "", "guest-up");
    let t = Instant::now();
    rt.delete(name)?;
    s.add("delete (forced stop)", ms(t.elapsed()));
    Ok(())
}

/// What the baseline boots: copies of what the runtime made for a VM.
struct BaselineInputs {
    dir: PathBuf,
    disk: PathBuf,
    vars: PathBuf,
    vtpm_state: PathBuf,
    vtpm_key: PathBuf,
    ek_public: Vec<u8>,
    accel: Accel,
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::DirBuilder::new().mode(0o700).create(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() && !e.file_name().to_string_lossy().ends_with(".lock") {
            fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

fn qemu_img_overlay(base: &Path, out: &Path) -> Result<()> {
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(base)
        .arg(out)
        .stdin(Stdio::null())
        .status()?;
    if !st.success() {
        return Err(format!("qemu-img create {} failed", out.display()).into());
    }
    Ok(())
}

/// The hand-written command line.
fn baseline_args(b: &BaselineInputs, vars: &Path, disk: &Path, run: &Path) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    let cpu = if b.accel == Accel::Kvm { "host" } else { "max" };
    [
        "-name",
        "baseline",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-machine",
        &format!("q35,smm=on,accel={}", b.accel.name()),
        "-cpu",
        cpu,
        "-smp",
        &VCPUS.to_string(),
        "-m",
        &MEMORY_MIB.to_string(),
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-global",
        "ICH9-LPC.disable_s3=1",
        "-drive",
        &format!("if=pflash,format=raw,unit=0,readonly=on,file={SECBOOT_CODE}"),
        "-drive",
        &format!("if=pflash,format=raw,unit=1,file={}", p(vars)),
        "-chardev",
        &format!("socket,id=chrtpm,path={}", p(&run.join("swtpm.sock"))),
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        "tpm-tis,tpmdev=tpm0",
        "-drive",
        &format!("if=none,id=os,format=qcow2,file={}", p(disk)),
        "-device",
        "virtio-blk-pci,drive=os,bootindex=1",
        "-display",
        "none",
        "-nic",
        "none",
        "-serial",
        &format!("file:{}", p(&run.join("console.log"))),
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        &format!(
            "socket,id=attest,path={},server=on,wait=off",
            p(&run.join("attest.sock"))
        ),
        "-device",
        &format!("virtserialport,bus=vser0.0,chardev=attest,name={ATTESTATION_PORT}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One baseline boot: fresh copies (untimed), then swtpm + QEMU by hand,
/// timed from spawning swtpm.
fn run_baseline(
    b: &BaselineInputs,
    round: usize,
    s: &mut Samples,
    fp: &mut Footprint,
) -> Result<()> {
    let run = b.dir.join(format!("r{round}"));
    fs::DirBuilder::new().mode(0o700).create(&run)?;
    let vars = run.join("VARS.fd");
    fs::copy(&b.vars, &vars)?;
    let state = run.join("vtpm");
    copy_dir(&b.vtpm_state, &state)?;
    let key = run.join("vtpm.key");
    fs::copy(&b.vtpm_key, &key)?;
    let disk = run.join("os.qcow2");
    qemu_img_overlay(&b.disk, &disk)?;
    let args = baseline_args(b, &vars, &disk, &run);
    let (swtpm_sock, attest_sock, console_log) = (
        run.join("swtpm.sock"),
        run.join("attest.sock"),
        run.join("console.log"),
    );

    let mut children = Children::default();
    let mut tl = Timeline::new();
    let swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--terminate"])
        .arg("--tpmstate")
        .arg(format!("dir={},mode=0600", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", swtpm_sock.display()))
        .arg("--key")
        .arg(format!(
            "file={},format=binary,mode=aes-256-cbc",
            key.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(run.join("swtpm.err"))?)
        .spawn()?;
    let swtpm_pid = swtpm.id();
    children.0.push(swtpm);
    while !swtpm_sock.exists() {
        if tl.t0.elapsed() > Duration::from_secs(10) {
            return Err("baseline: swtpm made no control socket within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tl.mark("swtpm");
    let qemu = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(run.join("qemu.err"))?)
        .spawn()?;
    let qemu_pid = qemu.id();
    children.0.push(qemu);
    let mut channel = loop {
        if let Ok(c) = Channel::connect(&attest_sock) {
            break c;
        }
        if let Some(Ok(Some(st))) = children.0.last_mut().map(Child::try_wait) {
            return Err(format!(
                "baseline: QEMU exited ({st}): {}",
                fs::read_to_string(run.join("qemu.err")).unwrap_or_default()
            )
            .into());
        }
        if tl.t0.elapsed() > Duration::from_secs(30) {
            return Err("baseline: QEMU made no attestation socket within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    tl.mark("qemu");
    let ek = b.ek_public.clone();
    let session = std::thread::spawn(move || {
        let r = channel.attest(&ek, BOOT_LIMIT, &mut OsRng, 0);
        (r, Instant::now())
    });
    let (mut firmware, mut up) = (false, false);
    while !up {
        let text = fs::read_to_string(&console_log).unwrap_or_default();
        match console::judge(&text, BOOT_FILE) {
            ConsoleVerdict::GuestUp { .. } => {
                tl.mark("guest-up");
                up = true;
            }
            ConsoleVerdict::Booting {
                firmware_started_boot: true,
            } if !firmware => {
                tl.mark("firmware");
                firmware = true;
            }
            ConsoleVerdict::Booting { .. } => {}
            other => return Err(format!("baseline boot failed: {other:?}").into()),
        }
        if tl.t0.elapsed() > BOOT_LIMIT {
            return Err(format!("baseline: no guest-up within {BOOT_LIMIT:?}").into());
        }
        if !up {
            std::thread::sleep(BASELINE_POLL);
        }
    }
    let (result, at) = session
        .join()
        .map_err(|_| "baseline: the attestation thread panicked")?;
    result.map_err(|e| format!("baseline: evidence: {e}\n{}", console_tail(&console_log)))?;
    tl.mark_at("evidence", at);
    tl.span(s, "swtpm ready", "", "swtpm");
    tl.span(s, "qemu spawned to socket up", "swtpm", "qemu");
    tl.span(s, "boot: to firmware boot option", "qemu", "firmware");
    tl.span(s, "boot: firmware to guest-up", "firmware", "guest-up");
    tl.span(s, "boot: guest-up to evidence", "guest-up", "evidence");
    tl.span(s, "boot (QEMU up to evidence)", "qemu", "evidence");
    tl.span(s, "spawn to guest-up", "", "guest-up");
    tl.span(s, "spawn to evidence", "", "evidence");
    if let Some(r) = rss(qemu_pid) {
        fp.baseline_qemu.push(r);
    }
    if let Some(r) = rss(swtpm_pid) {
        fp.baseline_swtpm.push(r);
    }
    drop(children);
    let _ = fs::remove_dir_all(&run);
    Ok(())
}

fn print_table(title: &str, s: &Samples, runs: usize) {
    println!("\n{title} ({runs} run{})", if runs == 1 { "" } else { "s" });
    println!(
        "  {:<38} {:>10} {:>10} {:>10}",
        "phase", "median ms", "min ms", "max ms"
    );
    for (phase, v) in &s.phases {
        let (med, min, max) = stats(v);
        println!("  {phase:<38} {med:>10.0} {min:>10.0} {max:>10.0}");
    }
}

fn json_phases(s: &Samples) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (phase, v) in &s.phases {
        let (med, min, max) = stats(v);
        m.insert(
            (*phase).to_owned(),
            json!({ "median_ms": med.round(), "min_ms": min.round(), "max_ms": max.round(), "n": v.len() }),
        );
    }
    serde_json::Value::Object(m)
}

fn rss_summary(v: &[Rss]) -> serde_json::Value {
    let pick = |f: fn(&Rss) -> u64| {
        let xs: Vec<f64> = v.iter().map(|r| f(r) as f64 / 1024.0).collect();
        let (med, min, max) = stats(&xs);
        json!({ "median_mib": (med * 10.0).round() / 10.0, "min_mib": (min * 10.0).round() / 10.0, "max_mib": (max * 10.0).round() / 10.0 })
    };
    json!({ "VmRSS": pick(|r| r.total), "RssAnon": pick(|r| r.anon), "RssFile": pick(|r| r.file), "n": v.len() })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let agent = find_agent(args.agent)?;
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("trustlaunch VM boot benchmark: {} round(s)", args.runs);
    println!("  agent: {}", agent.display());
    println!(
        "  load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let tmp = tempfile::Builder::new().prefix("tl-boot-").tempdir()?;
    let t = Instant::now();
    let rt = Runtime::open(Home::open(tmp.path().join("home"))?)?;
    let open_ms = ms(t.elapsed());
    let accel = rt.accel().accel;
    println!(
        "  runtime open (platform keys, accelerator): {open_ms:.0} ms; accel {} ({:?})",
        accel.name(),
        rt.accel()
    );

    let image = tmp.path().join("img");
    let t = Instant::now();
    build_image(
        &BuildRequest {
            name: "bench-tiny".into(),
            recipe: Recipe::tiny(agent.clone(), None)?,
            db_key: Some(&rt.keys().db),
            out_dir: image.clone(),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
        &mut |_| {},
    )?;
    let build_ms = ms(t.elapsed());
    let disk = image.join(IMAGE_DISK);
    println!(
        "  tiny image built in {build_ms:.0} ms (untimed below): {} ({} MiB)",
        disk.display(),
        fs::metadata(&disk)?.len() >> 20
    );

    // Warm-up VM (untimed): proves the flow, warms the page cache, and
    // gives the baseline its varstore and vTPM (copied right after create,
    // as a fresh runtime VM gets them).
    let base_dir = tmp.path().join("baseline");
    fs::DirBuilder::new().mode(0o700).create(&base_dir)?;
    let baseline = {
        let name = "warmup";
        let _guard = VmGuard {
            rt: &rt,
            name: name.into(),
        };
        let t = Instant::now();
        let info = rt.create(
            &spec(
                name,
                &image,
                SecurityProfile::trusted_launch(),
                KeyTemplate::Custom,
            ),
            &mut |_| {},
        )?;
        let vars = base_dir.join("VARS.template.fd");
        fs::copy(info.dir.join("OVMF_VARS.fd"), &vars)?;
        let vtpm_state = base_dir.join("vtpm.template");
        copy_dir(&info.dir.join("vtpm"), &vtpm_state)?;
        let vtpm_key = base_dir.join("vtpm.template.key");
        // The baseline's swtpm reads its key from a file (in this
        // benchmark's scratch directory): the platform keeps it sealed.
        let key = trustlaunch_runtime::vtpm::VtpmPaths {
            state: info.dir.join("vtpm"),
            key: trustlaunch_runtime::platform::SealedFile::new(
                rt.home().keys().join(format!("{name}.vtpm.key")),
                format!("vtpm/{name}"),
            ),
        }
        .load_key(&rt.home().master_key()?)?;
        trustlaunch_runtime::platform::write_secret(&vtpm_key, &key)?;
        let ek_hex = info
            .state
            .ek_public
            .clone()
            .ok_or("the warm-up VM recorded no EK")?;
        let ek_public =
            trustlaunch_eventlog::hex::decode(&ek_hex).ok_or("the warm-up VM's EK is not hex")?;
        rt.start(name, &mut |_| {})?;
        let outcome = rt.wait_boot(name, BOOT_LIMIT, &mut |_| {})?;
        if !matches!(outcome, BootOutcome::Attested { .. }) {
            return Err(format!(
                "warm-up VM: expected evidence, got {}\n{}",
                serde_json::to_string(&outcome).unwrap_or_default(),
                console_tail(&info.console_log)
            )
            .into());
        }
        rt.delete(name)?;
        println!(
            "  warm-up TrustedLaunch VM: create to evidence + delete {:.0} ms (untimed)",
            ms(t.elapsed())
        );
        BaselineInputs {
            dir: base_dir.clone(),
            disk: fs::canonicalize(&disk)?,
            vars,
            vtpm_state,
            vtpm_key,
            ek_public,
            accel,
        }
    };
    println!(
        "  baseline command line: swtpm socket --tpm2 --terminate --tpmstate dir=DIR,mode=0600 \
         --ctrl type=unixio,path=RUN/swtpm.sock --key file=KEY,format=binary,mode=aes-256-cbc; \
         qemu-system-x86_64 {}",
        baseline_args(
            &baseline,
            Path::new("RUN/VARS.fd"),
            Path::new("RUN/os.qcow2"),
            Path::new("RUN")
        )
        .join(" ")
    );

    let (mut tl, mut std_, mut base) = (Samples::default(), Samples::default(), Samples::default());
    let mut fp = Footprint::default();
    for round in 0..args.runs {
        for k in 0..3 {
            let which = (round + k) % 3;
            let t = Instant::now();
            let label = match which {
                0 => {
                    run_trusted(&rt, &image, &format!("tl-{round}"), &mut tl, &mut fp)?;
                    "trusted_launch"
                }
                1 => {
                    run_standard(&rt, &image, &format!("std-{round}"), &mut std_)?;
                    "standard"
                }
                _ => {
                    run_baseline(&baseline, round, &mut base, &mut fp)?;
                    "baseline"
                }
            };
            eprintln!(
                "  round {}/{}: {label} done in {:.1} s",
                round + 1,
                args.runs,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let load_end = fs::read_to_string("/proc/loadavg").unwrap_or_default();

    print_table(
        "Runtime, TrustedLaunch (Secure Boot + vTPM, custom keys)",
        &tl,
        args.runs,
    );
    print_table("Runtime, Standard (plain OVMF, no vTPM)", &std_, args.runs);
    print_table(
        "Baseline: hand-written swtpm + QEMU command line",
        &base,
        args.runs,
    );

    // Overhead, two ways: the whole paths (medians, and paired per round:
    // the variants of a round ran back to back), and the runtime's own
    // steps (create + start), which the bare launch does not have.
    let rt_total = tl.median("create to evidence").unwrap_or(f64::NAN);
    let bare = base.median("spawn to evidence").unwrap_or(f64::NAN);
    let create = tl.median("create (total)").unwrap_or(f64::NAN);
    let start = tl.median("start (total)").unwrap_or(f64::NAN);
    let diff = rt_total - bare;
    let ratio = rt_total / bare;
    let paired: Vec<f64> = match (tl.get("create to evidence"), base.get("spawn to evidence")) {
        (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| x - y).collect(),
        _ => Vec::new(),
    };
    let (p_med, p_min, p_max) = stats(&paired);
    let own = create + start;
    // The issue's goal: the runtime adds at most 10 % or at most 1 s.
    let within = |added: f64| added <= 0.10 * bare || added <= 1000.0;
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("\nOverhead (medians over {} run(s))", args.runs);
    println!("  runtime create to evidence:      {rt_total:>8.0} ms");
    println!("  baseline spawn to evidence:      {bare:>8.0} ms");
    println!(
        "  difference of medians:           {diff:>8.0} ms  (ratio {ratio:.3}, {:+.1} %)",
        (ratio - 1.0) * 100.0
    );
    println!("  paired difference per round:    {p_med:>8.0} ms  (min {p_min:.0}, max {p_max:.0})");
    println!(
        "  runtime's own steps:             {own:>8.0} ms  (create {create:.0} + start {start:.0}; {:.1} % of the bare boot)",
        own / bare * 100.0
    );
    println!(
        "  goal (runtime adds <= 10 % or <= 1 s): difference of medians: {} (10 %: {}, 1 s: {}); create + start: {} (10 %: {}, 1 s: {})",
        if within(diff) { "MET" } else { "NOT MET" },
        yes(diff <= 0.10 * bare),
        yes(diff <= 1000.0),
        if within(own) { "MET" } else { "NOT MET" },
        yes(own <= 0.10 * bare),
        yes(own <= 1000.0),
    );

    let mib = |k: u64| k as f64 / 1024.0;
    let med_rss =
        |v: &[Rss], f: fn(&Rss) -> u64| stats(&v.iter().map(|r| mib(f(r))).collect::<Vec<_>>()).0;
    println!("\nPer-VM host memory, TrustedLaunch VM after evidence (VmRSS, median MiB)");
    println!(
        "  QEMU:  {:>7.1} (anon {:.1}, file {:.1}); baseline QEMU {:.1}",
        med_rss(&fp.qemu, |r| r.total),
        med_rss(&fp.qemu, |r| r.anon),
        med_rss(&fp.qemu, |r| r.file),
        med_rss(&fp.baseline_qemu, |r| r.total)
    );
    println!(
        "  swtpm: {:>7.1} (anon {:.1}, file {:.1}); baseline swtpm {:.1}",
        med_rss(&fp.swtpm, |r| r.total),
        med_rss(&fp.swtpm, |r| r.anon),
        med_rss(&fp.swtpm, |r| r.file),
        med_rss(&fp.baseline_swtpm, |r| r.total)
    );
    println!(
        "  guest RAM configured: {MEMORY_MIB} MiB. QEMU's RSS includes the guest RAM the guest \
         has touched so far (not all of it), so RSS - guest RAM is not QEMU's own overhead."
    );
    println!("  runtime process: none per VM (the CLI exits; QEMU and swtpm are daemonised)");
    println!("\nPer-VM disk (after evidence): apparent / allocated");
    for (what, a, b) in &fp.files {
        println!("  {what:<48} {:>10} B {:>10} B", a, b);
    }

    let meta = json!({
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "runs": args.runs,
        "accel": accel.name(),
        "agent": agent.display().to_string(),
        "vcpus": VCPUS,
        "memory_mib": MEMORY_MIB,
        "loadavg_start": load.trim(),
        "loadavg_end": load_end.trim(),
        "image_build_ms": build_ms.round(),
        "runtime_open_ms": open_ms.round(),
    });
    println!();
    for (variant, s) in [
        ("trusted_launch", &tl),
        ("standard", &std_),
        ("baseline", &base),
    ] {
        println!(
            "{}",
            json!({ "bench": "vm_boot", "variant": variant, "meta": meta, "phases": json_phases(s) })
        );
    }
    println!(
        "{}",
        json!({
            "bench": "vm_boot", "variant": "overhead",
            "runtime_create_to_evidence_ms": rt_total.round(),
            "baseline_spawn_to_evidence_ms": bare.round(),
            "difference_ms": diff.round(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "paired_difference_ms": { "median": p_med.round(), "min": p_min.round(), "max": p_max.round() },
            "runtime_create_plus_start_ms": own.round(),
            "runtime_create_plus_start_percent": (own / bare * 1000.0).round() / 10.0,
            "goal_met_difference": within(diff),
            "goal_met_create_plus_start": within(own),
        })
    );
    println!(
        "{}",
        json!({
            "bench": "vm_boot", "variant": "footprint",
            "guest_ram_mib": MEMORY_MIB,
            "qemu": rss_summary(&fp.qemu), "swtpm": rss_summary(&fp.swtpm),
            "baseline_qemu": rss_summary(&fp.baseline_qemu), "baseline_swtpm": rss_summary(&fp.baseline_swtpm),
            "disk": fp.files.iter().map(|(w, a, b)| json!({ "what": w, "apparent_bytes": a, "allocated_bytes": b })).collect::<Vec<_>>(),
        })
    );
    drop(rt);
    tmp.close()?;
    Ok(())
}
