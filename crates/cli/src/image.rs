//! `trustlaunch image ...`: Gen2 disk images (a `disk.raw` with a GPT and
//! an EFI system partition, and its `image.json`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use rand_core::OsRng;
use trustlaunch_runtime::agent_package::build_agent_package;
use trustlaunch_runtime::debian_image::{DebianBoot, DebianRequest};
use trustlaunch_runtime::image_build::{build_image, BuildRequest, Recipe, DEFAULT_CMDLINE};
use trustlaunch_runtime::image_meta::ImageMetadata;
use trustlaunch_runtime::platform::{Home, PlatformKeys};
use trustlaunch_secureboot::keys::KeyPair;

use crate::input::{read_bounded, read_cert_der};
use crate::progress::Reporter;

/// Which image to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A UKI (systemd-stub + Debian's kernel + a busybox initramfs running
    /// the agent) signed with the platform's db key (key template custom).
    Tiny,
    /// Debian's signed shim -> grub -> kernel with the same initramfs, not
    /// re-signed (key template microsoft).
    DebianShim,
    /// An existing UKI (`--uki`), signed with the db key unless `--no-sign`.
    Uki,
    /// An existing EFI binary (`--efi`) as BOOTX64.EFI, plus `--file`s.
    Chain,
    /// A real Debian system from Debian's archive (mmdebstrap; needs root):
    /// systemd, udev, networkd, OpenSSH (keys only), the guest attestation
    /// agent package; booted by Debian's signed shim -> grub -> kernel
    /// (key template microsoft) or, with `--boot uki`, by one UKI signed
    /// with the platform's db key (key template custom).
    Debian,
}

/// How a Debian image boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DebianBootArg {
    /// Debian's signed shim -> grub -> kernel (key template microsoft).
    Shim,
    /// A UKI signed with the platform's db key (key template custom).
    Uki,
}

/// Image subcommands.
// Parsed once per process: the size of the Build variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Gallery image definitions on the server (az sig image-definition).
    #[command(subcommand)]
    Definition(crate::fleet::GalleryCommand),
    /// Gallery image versions on the server (az sig image-version).
    #[command(subcommand)]
    Version(crate::fleet::VersionCommand),
    /// Build an image directory: disk.raw + image.json.
    Build {
        /// tiny, debian-shim, uki or chain.
        kind: Kind,
        /// Output directory (created; must not hold an image already).
        #[arg(long)]
        out: PathBuf,
        /// The db private key (PEM) that signs the boot image (default:
        /// the platform's own db key, from --home).
        #[arg(long, requires = "db_cert")]
        db_key: Option<PathBuf>,
        /// The db certificate (PEM or DER).
        #[arg(long, requires = "db_key")]
        db_cert: Option<PathBuf>,
        /// The guest agent (default: `trustlaunch-agent` next to this
        /// executable).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Kernel release from /boot and /lib/modules (default: the newest
        /// /boot/vmlinuz-*).
        #[arg(long)]
        kernel_release: Option<String>,
        /// Kernel command line (tiny, debian-shim).
        #[arg(long, default_value = DEFAULT_CMDLINE)]
        cmdline: String,
        /// Image name (default: the kind).
        #[arg(long)]
        name: Option<String>,
        /// The UKI (kind uki).
        #[arg(long)]
        uki: Option<PathBuf>,
        /// Do not sign the UKI (kind uki).
        #[arg(long)]
        no_sign: bool,
        /// The boot application (kind chain).
        #[arg(long)]
        efi: Option<PathBuf>,
        /// ESP_PATH=SRC, repeated (kind chain), e.g. EFI/BOOT/grubx64.efi=grub.efi.
        #[arg(long = "file", value_name = "ESP_PATH=SRC")]
        files: Vec<String>,
        /// PATH=SRC, repeated (tiny, debian-shim): an extra file in the
        /// initramfs; scripts at etc/trustlaunch/init.d/*.sh run before the
        /// agent starts.
        #[arg(long = "add-file", value_name = "PATH=SRC")]
        add_files: Vec<String>,
        /// Debian release (kind debian).
        #[arg(long, default_value = "bookworm")]
        release: String,
        /// Packages beyond the base system, comma-separated (kind debian).
        #[arg(long, value_delimiter = ',')]
        packages: Vec<String>,
        /// Disk size, e.g. 4G or 3072M (kind debian).
        #[arg(long, default_value = "4G", value_parser = parse_size)]
        size: u64,
        /// Boot chain (kind debian).
        #[arg(long, value_enum, default_value = "shim")]
        boot: DebianBootArg,
        /// The guest attestation agent package (kind debian; default:
        /// built from the agent next to this executable).
        #[arg(long)]
        agent_deb: Option<PathBuf>,
        /// Where downloaded packages are kept between builds (kind debian;
        /// default: <home>/cache/debian).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Debian archive (kind debian).
        #[arg(long, default_value = trustlaunch_runtime::debian_image::DEFAULT_MIRROR)]
        mirror: String,
        /// The platform's state directory whose db key signs by default
        /// (default: $TRUSTLAUNCH_HOME, /var/lib/trustlaunch for root).
        #[arg(long)]
        home: Option<PathBuf>,
        /// Print the metadata as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Build the guest attestation agent package
    /// (trustlaunch-guest-agent_<version>_amd64.deb): the Guest Attestation
    /// extension for Debian and Ubuntu guests, installed with `dpkg -i`.
    AgentPackage {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// The agent binary (default: `trustlaunch-agent` next to this
        /// executable).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Package version (default: trustlaunch's own).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
    },
    /// Import a disk you bring (raw or qcow2) as an image directory:
    /// inspect it without booting or mounting it, verify its boot chain
    /// against every key template, and mark it
    /// SecurityType=TrustedLaunchSupported only when it would boot under
    /// Secure Boot (otherwise say which component would be refused, and
    /// why). Exits 0 either way; 3 when it is not Trusted Launch capable
    /// and --require-trusted-launch is given.
    Import(ImportArgs),
    /// Show an image directory's metadata (validated).
    Show {
        /// The image directory.
        dir: PathBuf,
        /// Also recompute the disk's SHA-256 and compare.
        #[arg(long)]
        verify_disk: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a subcommand.
pub fn run(cmd: ImageCommand) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Definition(c) => crate::fleet::definition(c),
        ImageCommand::Version(c) => crate::fleet::version(c),
        ImageCommand::Build {
            kind,
            out,
            db_key,
            db_cert,
            agent,
            kernel_release,
            cmdline,
            name,
            uki,
            no_sign,
            efi,
            files,
            add_files,
            release,
            packages,
            size,
            boot,
            agent_deb,
            cache,
            mirror,
            home,
            json,
        } => {
            let t0 = Instant::now();
            let mut progress = Reporter::stderr();
            let mut recipe = match kind {
                Kind::Tiny | Kind::DebianShim => {
                    let agent = match agent {
                        Some(a) => a,
                        None => default_agent()?,
                    };
                    if !agent.is_file() {
                        bail!("guest agent {} not found", agent.display());
                    }
                    if kind == Kind::Tiny {
                        Recipe::tiny(agent, kernel_release)?
                    } else {
                        Recipe::debian_shim(agent, kernel_release)?
                    }
                }
                Kind::Uki => {
                    let uki = uki.ok_or_else(|| anyhow!("image build uki needs --uki FILE"))?;
                    if !uki.is_file() {
                        bail!("UKI {} not found", uki.display());
                    }
                    Recipe::Uki {
                        uki,
                        sign: !no_sign,
                    }
                }
                Kind::Debian => {
                    let root = home.clone().unwrap_or_else(Home::default_root);
                    let agent_deb = match agent_deb {
                        Some(d) => d,
                        None => {
                            let agent = match agent.clone() {
                                Some(a) => a,
                                None => default_agent()?,
                            };
                            let dir = out.with_extension("agent-package");
                            let deb = build_agent_package(&agent, env!("CARGO_PKG_VERSION"), &dir)?;
                            eprintln!("guest agent package: {}", deb.display());
                            deb
                        }
                    };
                    if !agent_deb.is_file() {
                        bail!("agent package {} not found", agent_deb.display());
                    }
                    Recipe::Debian(DebianRequest {
                        release,
                        packages,
                        size_bytes: size,
                        boot: match boot {
                            DebianBootArg::Shim => DebianBoot::Shim,
                            DebianBootArg::Uki => DebianBoot::Uki,
                        },
                        agent_deb: std::path::absolute(&agent_deb)?,
                        cache: match cache {
                            Some(c) => c,
                            None => root.join("cache").join("debian"),
                        },
                        mirror,
                    })
                }
                Kind::Chain => {
                    let mut pairs = Vec::new();
                    for f in &files {
                        let (esp, src) = f
                            .split_once('=')
                            .ok_or_else(|| anyhow!("--file {f:?}: use ESP_PATH=SRC"))?;
                        pairs.push((esp.trim_start_matches('/').to_owned(), PathBuf::from(src)));
                    }
                    Recipe::Chain {
                        efi: efi.ok_or_else(|| anyhow!("image build chain needs --efi FILE"))?,
                        files: pairs,
                    }
                }
            };
            let mut extra = Vec::new();
            for f in &add_files {
                let (path, src) = f
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--add-file {f:?}: use PATH=SRC"))?;
                if !Path::new(src).is_file() {
                    bail!("--add-file {f:?}: {src} not found");
                }
                extra.push((path.to_owned(), PathBuf::from(src)));
            }
            match &mut recipe {
                Recipe::Tiny {
                    cmdline: c,
                    initramfs,
                    ..
                }
                | Recipe::DebianShim {
                    cmdline: c,
                    initramfs,
                    ..
                } => {
                    *c = cmdline;
                    initramfs.extra_files = extra;
                }
                _ if !extra.is_empty() => bail!("--add-file is for tiny and debian-shim"),
                _ => {}
            }
            // The key last: the inputs are checked first, so a mistake
            // never creates a platform home.
            let needs_key = kind == Kind::Tiny
                || (kind == Kind::Uki && !no_sign)
                || (kind == Kind::Debian && boot == DebianBootArg::Uki);
            let pair = match (&db_key, &db_cert) {
                (Some(k), Some(c)) => Some(load_key_pair(k, c)?),
                _ if needs_key => {
                    let root = home.unwrap_or_else(Home::default_root);
                    let keys = PlatformKeys::load_or_create(&Home::open(&root)?, &mut OsRng)?;
                    eprintln!("signing with the platform's db key ({})", root.display());
                    Some(keys.db)
                }
                _ => None,
            };
            let created_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let req = BuildRequest {
                name: name.unwrap_or_else(|| recipe.kind().to_owned()),
                recipe,
                db_key: pair.as_ref(),
                out_dir: out.clone(),
                created_at,
            };
            let meta = build_image(&req, &mut |step| {
                if step.ends_with("...") {
                    progress.step(step)
                } else {
                    progress.step(&format!("{step}..."))
                }
            })
            .with_context(|| format!("building image in {}", out.display()))?;
            eprintln!(
                "done in {:.1} s: {}",
                t0.elapsed().as_secs_f64(),
                out.display()
            );
            if json {
                println!("{}", meta.to_json());
            } else {
                print_text(&meta);
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::AgentPackage {
            out,
            agent,
            version,
        } => {
            let agent = match agent {
                Some(a) => a,
                None => default_agent()?,
            };
            let deb = build_agent_package(&agent, &version, &out)?;
            println!("{}", deb.display());
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Import(a) => import(a),
        ImageCommand::Show {
            dir,
            verify_disk,
            json,
        } => {
            let meta = ImageMetadata::read(&dir)?;
            if verify_disk {
                let disk = dir.join(&meta.disk.file);
                let data = std::fs::read(&disk).with_context(|| disk.display().to_string())?;
                let got = trustlaunch_runtime::image_meta::Sha256Digest::of(&data);
                if got != meta.disk.sha256 {
                    eprintln!(
                        "{}: SHA-256 {got} differs from image.json's {}",
                        disk.display(),
                        meta.disk.sha256
                    );
                    return Ok(ExitCode::from(1));
                }
            }
            if json {
                println!("{}", meta.to_json());
            } else {
                print_text(&meta);
                if verify_disk {
                    println!("disk SHA-256 verified");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `trustlaunch image import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The disk (raw or qcow2; the format is read from the file).
    disk: PathBuf,
    /// Output image directory (created; must not hold an image).
    #[arg(long)]
    out: PathBuf,
    /// Image name (default: the output directory's name).
    #[arg(long)]
    name: Option<String>,
    /// An EFI signature list (ESL) of revocations to add to every
    /// template's dbx, e.g. a dbx update not yet applied: would the
    /// image still boot?
    #[arg(long, value_name = "ESL")]
    extra_dbx: Option<PathBuf>,
    /// Fail (exit 3) when the image is not Trusted Launch capable.
    #[arg(long)]
    require_trusted_launch: bool,
    /// The platform's state directory (its key templates)
    /// (default: $TRUSTLAUNCH_HOME, /var/lib/trustlaunch for root).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Print the whole report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn import(a: ImportArgs) -> Result<ExitCode> {
    use trustlaunch_runtime::import::{import, ImportRequest};
    let t0 = Instant::now();
    let mut progress = Reporter::stderr();
    let root = a.home.clone().unwrap_or_else(Home::default_root);
    let rt = trustlaunch_runtime::vm::Runtime::open(Home::open(&root)?)?;
    let extra = match &a.extra_dbx {
        None => None,
        Some(p) => {
            let bytes = read_bounded(p)?;
            Some(
                trustlaunch_secureboot::siglist::SignatureDb::parse(&bytes)
                    .with_context(|| format!("{}: not an EFI signature list", p.display()))?,
            )
        }
    };
    let templates = rt.template_databases(extra.as_ref())?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "imported".into()),
    };
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (meta, ins) = import(
        &ImportRequest {
            disk: &a.disk,
            out_dir: &a.out,
            name: &name,
            templates: &templates,
            created_at,
        },
        &mut |line| progress.step(line),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&ins)?);
    } else {
        println!("image:       {} ({})", a.out.display(), meta.name);
        println!(
            "generation:  {:?} — {}",
            ins.generation, ins.generation_reason
        );
        if let Some(os) = &ins.os {
            println!("os:          {os}");
        }
        for c in &ins.chain {
            println!(
                "{:<12} {} authenticode {} {}",
                format!("{}:", c.role),
                c.location,
                c.authenticode_sha256.as_deref().unwrap_or("-"),
                if c.signers.is_empty() {
                    "unsigned".to_owned()
                } else {
                    format!("signed by {}", c.signers.join("; "))
                }
            );
        }
        if let Some(r) = &ins.kernel_release {
            println!("kernel:      {r}");
        }
        for t in &ins.templates {
            if t.boots {
                println!("template {}: boots", t.template);
                for l in &t.allowed {
                    println!("  {l}");
                }
            }
        }
        for r in ins.refusals() {
            println!("template {r}");
        }
        println!(
            "guest agent: {} ({})",
            match ins.guest_agent.installed {
                Some(true) => "installed",
                Some(false) => "not installed",
                None => "unknown",
            },
            ins.guest_agent.evidence
        );
        if let Some(p) = &ins.predicted {
            match p.chain {
                trustlaunch_runtime::image_meta::PredictedChain::ShimGrub => println!(
                    "predicted:   {} boot applications (PCR 4), {} authorities (PCR 7), {} files (PCR 9), kernel command line (PCR 8)",
                    p.boot_applications.len(),
                    p.authorities.len(),
                    p.loaded_files.len()
                ),
                trustlaunch_runtime::image_meta::PredictedChain::WindowsBootManager => println!(
                    "predicted:   the Windows Boot Manager (PCR 4); what it loads Windows measures into PCRs 12-14, read from the log at each boot"
                ),
            }
        }
        for n in &ins.notes {
            println!("note: {n}");
        }
        if ins.trusted_launch_supported() {
            println!(
                "SecurityType=TrustedLaunchSupported (key template {})",
                meta.key_template.name()
            );
        } else {
            println!("not Trusted Launch capable: the image runs as Standard only");
        }
    }
    eprintln!("imported in {:.1} s", t0.elapsed().as_secs_f64());
    if a.require_trusted_launch && !ins.trusted_launch_supported() {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(m: &ImageMetadata) {
    println!(
        "name: {} ({}, generation {:?})",
        m.name, m.kind, m.generation
    );
    for f in &m.features {
        println!("feature: {}={}", f.name, f.value);
    }
    println!("key template: {}", m.key_template.name());
    if let Some(c) = &m.db_certificate {
        println!("db certificate: {} (sha256 {})", c.subject, c.sha256);
    }
    if let Some(r) = &m.kernel_release {
        println!("kernel: {r}");
    }
    if let Some(c) = &m.kernel_cmdline {
        println!("cmdline: {c}");
    }
    for c in &m.boot_components {
        println!("boot component {}:", c.esp_path);
        println!("  authenticode sha256 (PCR 4): {}", c.authenticode_sha256);
        if c.signers.is_empty() {
            println!("  unsigned");
        }
        for s in &c.signers {
            println!("  signed by: {s}");
        }
        for s in &c.uki_sections {
            println!("  UKI section {} sha256 {}", s.name, s.sha256);
        }
        if let Some(p) = &c.uki_pcr11_sha256 {
            println!("  expected PCR 11 (sha256): {p}");
        }
    }
    println!(
        "disk: {} ({} bytes, {}, sha256 {})",
        m.disk.file, m.disk.size_bytes, m.disk.format, m.disk.sha256
    );
    println!("created: {}", m.created_at);
    for r in &m.trusted_launch_refusals {
        println!("not Trusted Launch capable: {r}");
    }
    for n in &m.notes {
        println!("note: {n}");
    }
}

/// A size with an optional K/M/G/T suffix (binary units), in bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        Some((i, 'T' | 't')) => (&s[..i], 40),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: a number with an optional K, M, G or T suffix"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// `trustlaunch-agent` next to the running executable.
fn default_agent() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let agent = exe
        .parent()
        .map(|d| d.join("trustlaunch-agent"))
        .ok_or_else(|| anyhow!("{}: no parent directory", exe.display()))?;
    if !agent.is_file() {
        bail!(
            "guest agent {} not found: build it with `cargo build -p trustlaunch-agent` \
             (or pass --agent PATH)",
            agent.display()
        );
    }
    Ok(agent)
}

fn load_key_pair(key: &Path, cert: &Path) -> Result<KeyPair> {
    let key_pem = String::from_utf8(read_bounded(key)?)
        .map_err(|_| anyhow!("{}: not a PEM private key", key.display()))?;
    KeyPair::from_pem(&key_pem, &read_cert_der(cert)?)
        .with_context(|| format!("key {} with certificate {}", key.display(), cert.display()))
}
