//! `trustlaunch host ...`: this host's VM runtime — the accelerator probe,
//! the host's readiness (`doctor`) and VMs (`host vm create|start|stop|restart|reimage|resize|delete|list|
//! show|console|attest`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use trustlaunch_runtime::accel::{decide, ProbeConfig};
use trustlaunch_runtime::platform::Home;
use trustlaunch_runtime::spec::{
    Generation, KeyTemplate, Network, OsProfile, SecurityProfile, SecurityType, UefiSettings,
    VmSpec,
};
use trustlaunch_runtime::vm::{BootOutcome, Progress, Runtime, VmInfo};

/// Host subcommands.
#[derive(Subcommand)]
pub enum HostCommand {
    /// Decide the accelerator VMs get: KVM only if OVMF really boots under
    /// it here (up to 10 s), else TCG, with the reason.
    /// `TRUSTLAUNCH_ACCEL=kvm|tcg` overrides.
    Probe {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that this host has what trustlaunch needs: every command and
    /// file (with the package that provides it), KVM, free disk space, the
    /// home's permissions and the ids VMs are confined under. Prints the
    /// fix for each problem; exits 1 if any check fails.
    Doctor {
        /// The platform's state directory (default: $TRUSTLAUNCH_HOME,
        /// /var/lib/trustlaunch for root, else ~/.local/share/trustlaunch).
        #[arg(long)]
        home: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// VMs on this host: QEMU + OVMF (Secure Boot) + a vTPM each.
    #[command(subcommand)]
    Vm(VmCommand),
}

/// Options every `vm` subcommand takes.
#[derive(Args, Clone)]
pub struct Common {
    /// The platform's state directory (default: $TRUSTLAUNCH_HOME,
    /// /var/lib/trustlaunch for root, else ~/.local/share/trustlaunch).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Print JSON on stdout (progress still goes to stderr).
    #[arg(long, global = true)]
    json: bool,
}

/// Options of commands that boot a VM.
#[derive(Args, Clone)]
pub struct BootArgs {
    /// Return once QEMU runs instead of following the boot to the guest's
    /// evidence.
    #[arg(long)]
    no_wait: bool,
    /// How long to follow the boot, seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// `securityType`.
#[derive(Clone, Copy, ValueEnum)]
pub enum SecurityTypeArg {
    /// Neither Secure Boot nor vTPM.
    Standard,
    /// Secure Boot and vTPM per the flags (both on by default).
    #[value(name = "TrustedLaunch")]
    TrustedLaunch,
}

/// `hyperVGeneration`.
#[derive(Clone, Copy, ValueEnum)]
pub enum GenerationArg {
    /// Legacy BIOS.
    V1,
    /// UEFI.
    V2,
}

/// VM subcommands.
#[derive(Subcommand)]
pub enum VmCommand {
    /// Create a VM from an image (`trustlaunch image build`). A Gen2 VM is
    /// TrustedLaunch with Secure Boot and vTPM on unless told otherwise.
    Create {
        /// VM name (a-z, 0-9, '-').
        name: String,
        /// The image directory (disk.raw + image.json).
        #[arg(long)]
        image: PathBuf,
        /// `securityType` (default TrustedLaunch for V2, Standard for V1).
        #[arg(long, value_enum)]
        security_type: Option<SecurityTypeArg>,
        /// `uefiSettings.secureBootEnabled` (default true with TrustedLaunch).
        #[arg(long)]
        enable_secure_boot: Option<bool>,
        /// `uefiSettings.vTpmEnabled` (default true with TrustedLaunch).
        #[arg(long)]
        enable_vtpm: Option<bool>,
        /// Secure Boot key template (default: the image's, else custom).
        #[arg(long)]
        key_template: Option<KeyTemplate>,
        /// `hyperVGeneration`.
        #[arg(long, value_enum, default_value = "v2")]
        generation: GenerationArg,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory, MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u64,
        /// The NIC (`networkProfile`): `user` (QEMU's user-mode network,
        /// restricted: the guest reaches nothing, SSH reaches the guest
        /// through a port on 127.0.0.1 that `show` prints), `bridge=NAME`
        /// (a tap on an existing host bridge), or `none`.
        #[arg(long, default_value = "user")]
        network: Network,
        /// The guest's host name (`osProfile.computerName`; default: the
        /// VM name).
        #[arg(long)]
        computer_name: Option<String>,
        /// An OpenSSH public key file root may log in with
        /// (`osProfile...ssh.publicKeys`), repeated.
        #[arg(long = "ssh-key", value_name = "FILE")]
        ssh_keys: Vec<PathBuf>,
        /// Start it after creating it.
        #[arg(long)]
        start: bool,
        #[command(flatten)]
        boot: BootArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Start a stopped VM and follow its boot to the guest's evidence.
    Start {
        /// VM name.
        name: String,
        #[command(flatten)]
        boot: BootArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Stop: ACPI power button, then (after --grace) forced.
    Stop {
        /// VM name.
        name: String,
        /// Seconds the guest gets to power off.
        #[arg(long, default_value_t = 30)]
        grace: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Stop, then start.
    Restart {
        /// VM name.
        name: String,
        /// Seconds the guest gets to power off.
        #[arg(long, default_value_t = 30)]
        grace: u64,
        #[command(flatten)]
        boot: BootArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Give the VM a fresh OS disk from its image (vTPM and Secure Boot
    /// variables stay); a running VM is restarted.
    Reimage {
        /// VM name.
        name: String,
        /// Seconds the guest gets to power off.
        #[arg(long, default_value_t = 30)]
        grace: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Change vCPUs and/or memory (applied at the next start).
    Resize {
        /// VM name.
        name: String,
        /// Virtual CPUs.
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory, MiB.
        #[arg(long)]
        memory: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a VM, its disk and its vTPM (irreversible: needs --yes).
    Delete {
        /// VM name.
        name: String,
        /// Confirm that the vTPM (and its keys) is destroyed.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List VMs with their status.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// A VM's spec, status and last evidence.
    Show {
        /// VM name.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print (or follow) a VM's serial console.
    Console {
        /// VM name.
        name: String,
        /// Keep printing as the console grows (until the VM stops).
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Appraise the VM's last evidence: every check, with its evidence,
    /// against the EK the platform made, the vTPM CA, the key template and
    /// the baseline predicted from the image.
    Appraise {
        /// VM name.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Challenge a running VM's agent again and check its evidence.
    Attest {
        /// VM name.
        name: String,
        /// Seconds to wait for the evidence.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[command(flatten)]
        common: Common,
    },
}

/// Runs a subcommand.
pub fn run(cmd: HostCommand) -> Result<ExitCode> {
    match cmd {
        HostCommand::Probe { json } => {
            let scratch = tempfile_dir()?;
            let d = decide(&ProbeConfig::default(), &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            let d = d?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!("{}: {}", d.accel.name(), d.reason);
            }
            Ok(ExitCode::SUCCESS)
        }
        HostCommand::Doctor { home, json } => doctor(home, json),
        HostCommand::Vm(cmd) => run_vm(cmd),
    }
}

fn doctor(home: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    use trustlaunch_runtime::doctor::{
        examine, parse_requirements, HostPaths, Status, REQUIREMENTS,
    };
    let requirements = parse_requirements(REQUIREMENTS)?;
    let paths = HostPaths::of_host(home.unwrap_or_else(Home::default_root));
    let findings = examine(&paths, &requirements);
    let failed = findings.iter().filter(|f| f.status == Status::Fail).count();
    let warned = findings.iter().filter(|f| f.status == Status::Warn).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "healthy": failed == 0,
                "findings": findings,
            }))?
        );
    } else {
        let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
        for f in &findings {
            let mark = match f.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{mark}  {:width$}  {}", f.check, f.detail);
            if let Some(fix) = &f.fix {
                println!("      {:width$}  fix: {fix}", "");
            }
        }
        println!(
            "{} checks: {} failed, {} warnings",
            findings.len(),
            failed,
            warned
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A private scratch directory for the probe.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("trustlaunch-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn open(common: &Common) -> Result<Runtime> {
    let root = common.home.clone().unwrap_or_else(Home::default_root);
    let home = Home::open(&root)?;
    Ok(Runtime::open(home)?)
}

/// A VM operation's steps on stderr, a line each, timed by the runtime.
fn progress_printer() -> impl FnMut(Progress) {
    let mut out = crate::progress::Reporter::stderr();
    move |p: Progress| {
        out.step_after(
            Duration::from_millis(p.elapsed_ms),
            &format!("{}: {:<9} {}", p.vm, p.step, p.detail),
        );
    }
}

fn print_info(info: &VmInfo, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    let s = &info.spec;
    let p = &s.security_profile;
    println!("name:            {}", s.name);
    println!(
        "status:          {}{}",
        info.state.status,
        info.state
            .phase
            .map(|ph| format!(
                " ({})",
                serde_json::to_value(ph)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("")
            ))
            .unwrap_or_default()
    );
    if let Some(r) = &info.state.reason {
        println!("reason:          {r}");
    }
    println!("generation:      {:?}", s.hyper_v_generation);
    println!("securityType:    {:?}", p.security_type);
    if let Some(u) = p.uefi_settings {
        println!("secureBoot:      {}", u.secure_boot_enabled);
        println!("vTpm:            {}", u.v_tpm_enabled);
    }
    println!("keyTemplate:     {}", s.key_template);
    println!("size:            {} vCPU, {} MiB", s.vcpus, s.memory_mib);
    println!("image:           {}", s.image.display());
    println!("boots:           {}", info.state.boots);
    if let Some(a) = info.state.accel {
        println!("accel:           {}", a.name());
    }
    println!("confinement:     {}", info.confinement);
    println!("network:         {}", s.network.describe());
    if let (Network::User, Some(port)) = (&s.network, info.state.ssh_port) {
        println!("ssh:             ssh -p {port} root@127.0.0.1");
    }
    if let Some(pid) = info.qemu_pid {
        println!("qemu pid:        {pid}");
    }
    if let Some(pid) = info.swtpm_pid {
        println!("swtpm pid:       {pid}");
    }
    for c in &info.state.pending_changes {
        println!("pending:         {c}");
    }
    println!("console:         {}", info.console_log.display());
    Ok(())
}

/// Follows a boot; the exit status says whether it reached its goal.
fn follow_boot(rt: &Runtime, name: &str, boot: &BootArgs, json: bool) -> Result<ExitCode> {
    let outcome = rt.wait_boot(
        name,
        Duration::from_secs(boot.timeout),
        &mut progress_printer(),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    }
    Ok(match outcome {
        BootOutcome::Attested { received } => {
            if !json {
                let e = &received.evidence;
                println!(
                    "{name}: attested: quote verified, AK activated under the VM's EK; SecureBoot={}, kernel {}, event log {} bytes",
                    e.secure_boot.map_or("unknown".into(), |v| v.to_string()),
                    e.kernel_release,
                    e.event_log.0.len()
                );
            }
            ExitCode::SUCCESS
        }
        BootOutcome::GuestUp => {
            if !json {
                println!("{name}: the guest is up (no vTPM: nothing to attest)");
            }
            ExitCode::SUCCESS
        }
        BootOutcome::Failed { reason } => {
            eprintln!("{name}: failed: {reason}");
            ExitCode::FAILURE
        }
        BootOutcome::TimedOut { seconds } => {
            eprintln!("{name}: no evidence within {seconds} s (the VM keeps running; see `trustlaunch host vm console {name}`)");
            ExitCode::FAILURE
        }
    })
}

fn run_vm(cmd: VmCommand) -> Result<ExitCode> {
    match cmd {
        VmCommand::Create {
            name,
            image,
            security_type,
            enable_secure_boot,
            enable_vtpm,
            key_template,
            generation,
            vcpus,
            memory,
            network,
            computer_name,
            ssh_keys,
            start,
            boot,
            common,
        } => {
            let mut ssh_public_keys = Vec::new();
            for f in &ssh_keys {
                let text = String::from_utf8(crate::input::read_bounded(f)?)
                    .map_err(|_| anyhow::anyhow!("{}: not a text file", f.display()))?;
                ssh_public_keys.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_owned),
                );
            }
            let os_profile = Some(OsProfile {
                // A VM name may end in "-", a host name may not.
                computer_name: Some(
                    computer_name.unwrap_or_else(|| name.trim_end_matches('-').to_owned()),
                ),
                ssh_public_keys,
            });
            let generation = match generation {
                GenerationArg::V1 => Generation::V1,
                GenerationArg::V2 => Generation::V2,
            };
            let security_type = match security_type {
                Some(SecurityTypeArg::Standard) => SecurityType::Standard,
                Some(SecurityTypeArg::TrustedLaunch) => SecurityType::TrustedLaunch,
                None if generation == Generation::V2 => SecurityType::TrustedLaunch,
                None => SecurityType::Standard,
            };
            let uefi_settings = match security_type {
                SecurityType::TrustedLaunch => Some(UefiSettings {
                    secure_boot_enabled: enable_secure_boot.unwrap_or(true),
                    v_tpm_enabled: enable_vtpm.unwrap_or(true),
                }),
                SecurityType::Standard => {
                    if enable_secure_boot.is_some() || enable_vtpm.is_some() {
                        bail!("--enable-secure-boot and --enable-vtpm need --security-type TrustedLaunch");
                    }
                    None
                }
            };
            let key_template = key_template
                .unwrap_or_else(|| trustlaunch_runtime::image_meta::vm_key_template(&image));
            let spec = VmSpec {
                name: name.clone(),
                hyper_v_generation: generation,
                security_profile: SecurityProfile {
                    security_type,
                    uefi_settings,
                },
                key_template,
                vcpus,
                memory_mib: memory,
                image: std::fs::canonicalize(&image)
                    .with_context(|| format!("image {}", image.display()))?,
                data_disks: Vec::new(),
                network,
                os_profile,
            };
            let rt = open(&common)?;
            let info = rt.create(&spec, &mut progress_printer())?;
            if !start {
                print_info(&info, common.json)?;
                return Ok(ExitCode::SUCCESS);
            }
            rt.start(&name, &mut progress_printer())?;
            if boot.no_wait {
                return print_info(&rt.show(&name)?, common.json).map(|()| ExitCode::SUCCESS);
            }
            follow_boot(&rt, &name, &boot, common.json)
        }
        VmCommand::Start { name, boot, common } => {
            let rt = open(&common)?;
            let info = rt.start(&name, &mut progress_printer())?;
            if boot.no_wait {
                return print_info(&info, common.json).map(|()| ExitCode::SUCCESS);
            }
            follow_boot(&rt, &name, &boot, common.json)
        }
        VmCommand::Stop {
            name,
            grace,
            common,
        } => {
            let rt = open(&common)?;
            let info = rt.stop(&name, Duration::from_secs(grace))?;
            print_info(&info, common.json)?;
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Restart {
            name,
            grace,
            boot,
            common,
        } => {
            let rt = open(&common)?;
            let info = rt.restart(&name, Duration::from_secs(grace), &mut progress_printer())?;
            if boot.no_wait {
                return print_info(&info, common.json).map(|()| ExitCode::SUCCESS);
            }
            follow_boot(&rt, &name, &boot, common.json)
        }
        VmCommand::Reimage {
            name,
            grace,
            common,
        } => {
            let rt = open(&common)?;
            let info = rt.reimage(&name, Duration::from_secs(grace), &mut progress_printer())?;
            print_info(&info, common.json)?;
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Resize {
            name,
            vcpus,
            memory,
            common,
        } => {
            if vcpus.is_none() && memory.is_none() {
                bail!("give --vcpus and/or --memory");
            }
            let rt = open(&common)?;
            let info = rt.resize(&name, vcpus, memory)?;
            print_info(&info, common.json)?;
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Delete { name, yes, common } => {
            if !yes {
                bail!("deleting {name} destroys its disk and its vTPM for good: add --yes");
            }
            let rt = open(&common)?;
            rt.delete(&name)?;
            if common.json {
                println!("{}", serde_json::json!({ "deleted": name }));
            } else {
                println!("{name}: deleted (disk, vTPM state and key removed)");
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::List { common } => {
            let rt = open(&common)?;
            let vms = rt.list()?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<9} {:<10} {:<14} {:<6} {:<5} {:>4} {:>7}  REASON",
                "NAME", "STATUS", "PHASE", "SECURITY", "SB", "VTPM", "CPU", "MEM"
            );
            for v in vms {
                let p = &v.spec.security_profile;
                let phase = v
                    .state
                    .phase
                    .and_then(|ph| serde_json::to_value(ph).ok())
                    .and_then(|j| j.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<20} {:<9} {:<10} {:<14} {:<6} {:<5} {:>4} {:>6}M  {}",
                    v.spec.name,
                    v.state.status.to_string(),
                    phase,
                    format!("{:?}", p.security_type),
                    p.secure_boot(),
                    p.vtpm(),
                    v.spec.vcpus,
                    v.spec.memory_mib,
                    v.state.reason.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Show { name, common } => {
            let rt = open(&common)?;
            let info = rt.show(&name)?;
            let attestation = rt.last_attestation(&name)?;
            if common.json {
                let mut v = serde_json::to_value(&info)?;
                v["attestation"] = attestation.unwrap_or_default();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_info(&info, false)?;
                if let Some(a) = attestation {
                    println!(
                        "attestation:     checks {} (received at {})",
                        a["checks"],
                        crate::human::when(&a["received_at"], "?")
                    );
                }
                if let Some(a) = rt.appraise(&name)? {
                    let failed: Vec<&str> = a.failures().map(|c| c.name).collect();
                    if failed.is_empty() {
                        println!(
                            "appraisal:       healthy (`host vm appraise {name}` for every check)"
                        );
                    } else {
                        println!(
                            "appraisal:       UNHEALTHY: {} (`host vm appraise {name}`)",
                            failed.join(", ")
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Console {
            name,
            follow,
            common,
        } => {
            let rt = open(&common)?;
            let path = rt.console_path(&name)?;
            print_console(&rt, &name, &path, follow)
        }
        VmCommand::Appraise { name, common } => {
            let rt = open(&common)?;
            let Some(a) = rt.appraise(&name)? else {
                bail!("{name}: no evidence yet (start the VM, or `host vm attest {name}`)");
            };
            if common.json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!(
                    "{name}: {}",
                    if a.healthy { "healthy" } else { "UNHEALTHY" }
                );
                for c in &a.checks {
                    let mark = match c.outcome {
                        trustlaunch_attestation::Outcome::Pass => "pass",
                        trustlaunch_attestation::Outcome::Fail => "FAIL",
                        trustlaunch_attestation::Outcome::Skipped => "skip",
                    };
                    println!("  {mark:<4} {:<26} {}", c.name, c.detail);
                    if c.outcome == trustlaunch_attestation::Outcome::Fail {
                        for e in &c.evidence {
                            println!("         evidence: {}", serde_json::to_string(e)?);
                        }
                    }
                }
            }
            Ok(if a.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        VmCommand::Attest {
            name,
            timeout,
            common,
        } => {
            let rt = open(&common)?;
            let t0 = Instant::now();
            let received = rt.attest(&name, Duration::from_secs(timeout))?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&received)?);
            } else {
                println!(
                    "{name}: attested in {} ms: checks {}",
                    t0.elapsed().as_millis(),
                    received.checks.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_console(
    rt: &Runtime,
    name: &str,
    path: &std::path::Path,
    follow: bool,
) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if let Ok(mut f) = std::fs::File::open(path) {
            f.seek(SeekFrom::Start(pos))?;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(buf.get(..n).unwrap_or_default())?;
                pos += n as u64;
            }
            out.flush()?;
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        if rt.refresh(name)?.status != trustlaunch_runtime::vm::Status::Running {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
