//! Gen2 images: a directory holding `disk.raw` (GPT + FAT32 ESP, the base
//! image VMs get qcow2 overlays on) and `image.json`
//! ([`crate::image_meta::ImageMetadata`]).
//!
//! Recipes:
//! - [`Recipe::Tiny`]: a UKI (systemd-stub + Debian's kernel + our
//!   initramfs) signed with the platform's db key, as
//!   `EFI/BOOT/BOOTX64.EFI`; key template `custom`.
//! - [`Recipe::DebianShim`]: Debian's signed chain, not re-signed: shim as
//!   `EFI/BOOT/BOOTX64.EFI`, grub as `EFI/BOOT/grubx64.efi`, `grub.cfg`
//!   in `EFI/debian/` (the prefix Debian's signed grub carries), Debian's
//!   signed kernel and our initramfs at the ESP root; key template
//!   `microsoft`.
//! - [`Recipe::Uki`] (an operator's UKI, signed unless told not to) and
//!   [`Recipe::Chain`] (an operator's EFI binary plus files).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use trustlaunch_secureboot::keys::KeyPair;
use trustlaunch_secureboot::pe::PeImage;

use crate::debian_image::{self, DebianBoot, DebianRequest};
use crate::image::{build_disk, build_uki, ImageError, UkiParts};
use crate::image_meta::{
    self, trusted_launch_feature, BootComponent, CertificateInfo, DiskInfo, EspFile, Generation,
    ImageMetadata, KeyTemplate, Sha256Digest, UkiSection,
};
use crate::initramfs::{build_initramfs, InitramfsSpec};

/// systemd-stub (package `systemd-boot-efi`).
pub const SYSTEMD_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Debian's Microsoft-signed shim (package `shim-signed`).
pub const DEBIAN_SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
/// Debian's signed grub (package `grub-efi-amd64-signed`).
pub const DEBIAN_GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
/// The kernel command line of the built-in recipes: the serial console,
/// warnings and errors from the kernel (not `quiet`: a failing boot
/// should say why), no reboot loop on panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 loglevel=4 panic=-1";
/// The disk's file name in an image directory.
pub const DISK_FILE: &str = "disk.raw";
/// Where the ESP starts in the disk (bytes): for `mcopy -i disk@@OFFSET`.
pub const ESP_OFFSET: u64 = 1 << 20;

/// How the boot files are made.
#[derive(Clone, Debug)]
pub enum Recipe {
    /// A signed UKI with our initramfs.
    Tiny {
        /// The initramfs.
        initramfs: InitramfsSpec,
        /// The kernel (`/boot/vmlinuz-<release>`).
        kernel: PathBuf,
        /// systemd-stub.
        stub: PathBuf,
        /// Kernel command line (in the UKI's `.cmdline`).
        cmdline: String,
    },
    /// Debian's shim -> grub -> kernel chain with our initramfs.
    DebianShim {
        /// The initramfs.
        initramfs: InitramfsSpec,
        /// Debian's signed kernel.
        kernel: PathBuf,
        /// Signed shim.
        shim: PathBuf,
        /// Signed grub.
        grub: PathBuf,
        /// Kernel command line (in `grub.cfg`).
        cmdline: String,
    },
    /// An existing UKI.
    Uki {
        /// The UKI.
        uki: PathBuf,
        /// Sign it with the db key (adds a signature to any it has).
        sign: bool,
    },
    /// A real Debian system from Debian's archive
    /// ([`crate::debian_image`]): a root file system with systemd and the
    /// guest agent package, booted by Debian's shim chain or a signed UKI.
    Debian(DebianRequest),
    /// An existing EFI binary as `EFI/BOOT/BOOTX64.EFI`, plus files.
    Chain {
        /// The boot application.
        efi: PathBuf,
        /// `(ESP path, source)` pairs.
        files: Vec<(String, PathBuf)>,
    },
}

impl Recipe {
    /// The kind name (`tiny`, `debian-shim`, `uki`, `debian`, `debian-uki`,
    /// `chain`).
    pub fn kind(&self) -> &'static str {
        match self {
            Recipe::Tiny { .. } => "tiny",
            Recipe::DebianShim { .. } => "debian-shim",
            Recipe::Uki { .. } => "uki",
            Recipe::Debian(d) => match d.boot {
                DebianBoot::Shim => "debian",
                DebianBoot::Uki => "debian-uki",
            },
            Recipe::Chain { .. } => "chain",
        }
    }

    /// `tiny` with this host's files: the newest `/boot/vmlinuz-*` (or
    /// `release`), systemd-stub, `/bin/busybox`.
    pub fn tiny(agent: PathBuf, release: Option<String>) -> Result<Self, ImageError> {
        let (release, kernel) = kernel_for(release)?;
        Ok(Recipe::Tiny {
            initramfs: InitramfsSpec::new(agent, release),
            kernel,
            stub: SYSTEMD_STUB.into(),
            cmdline: DEFAULT_CMDLINE.into(),
        })
    }

    /// `debian-shim` with this host's Debian packages.
    pub fn debian_shim(agent: PathBuf, release: Option<String>) -> Result<Self, ImageError> {
        let (release, kernel) = kernel_for(release)?;
        Ok(Recipe::DebianShim {
            initramfs: InitramfsSpec::new(agent, release),
            kernel,
            shim: DEBIAN_SHIM.into(),
            grub: DEBIAN_GRUB.into(),
            cmdline: DEFAULT_CMDLINE.into(),
        })
    }
}

/// `release`'s kernel in `/boot`, or the newest one there.
fn kernel_for(release: Option<String>) -> Result<(String, PathBuf), ImageError> {
    match release {
        Some(r) => {
            let path = PathBuf::from(format!("/boot/vmlinuz-{r}"));
            if r.contains('/') || !path.is_file() {
                return Err(ImageError::NoKernel { dir: path });
            }
            Ok((r, path))
        }
        None => crate::initramfs::newest_kernel(Path::new("/boot")),
    }
}

/// One image to build.
#[derive(Clone, Debug)]
pub struct BuildRequest<'a> {
    /// Image name (metadata).
    pub name: String,
    /// The recipe.
    pub recipe: Recipe,
    /// The db key pair, for recipes that sign.
    pub db_key: Option<&'a KeyPair>,
    /// The output directory (created; must not hold an image already).
    pub out_dir: PathBuf,
    /// Creation time, Unix seconds (the caller owns the clock).
    pub created_at: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_owned(),
        source,
    }
}

fn efi_err(path: &Path, e: impl std::fmt::Display) -> ImageError {
    ImageError::Efi {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn sign(path: &Path, data: &[u8], pair: &KeyPair) -> Result<Vec<u8>, ImageError> {
    trustlaunch_secureboot::sign::sign_image(data, &pair.key, &pair.cert_der, &[])
        .map_err(|e| efi_err(path, e))
}

/// Builds a UKI from `parts` and signs it with `pair`: the signed
/// `BOOTX64.EFI` in `scratch`.
fn signed_uki(
    parts: &UkiParts,
    pair: &KeyPair,
    scratch: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ImageError> {
    let uki = scratch.join("uki.efi");
    build_uki(parts, &scratch.join("uki"), &uki)?;
    progress("signing UKI with the db key");
    let data = fs::read(&uki).map_err(io(&uki))?;
    let signed = scratch.join("BOOTX64.EFI");
    fs::write(&signed, sign(&uki, &data, pair)?).map_err(io(&signed))?;
    Ok(signed)
}

/// The db certificate's fingerprint and subject.
pub fn certificate_info(cert_der: &[u8]) -> CertificateInfo {
    use trustlaunch_secureboot::verify::Database;
    let db = Database::from_certs(
        trustlaunch_eventlog::Guid::from_bytes([0; 16]),
        [cert_der.to_vec()],
    );
    CertificateInfo {
        sha256: Sha256Digest::of(cert_der),
        subject: db
            .entry(0)
            .and_then(|e| e.subject)
            .unwrap_or_else(|| "<unparsable certificate>".into()),
    }
}

/// The signer subject of each signature in a PE image's certificate table.
pub fn signer_subjects(data: &[u8], pe: &PeImage) -> Vec<String> {
    let Some(table) = pe.cert_table_bytes(data) else {
        return Vec::new();
    };
    match trustlaunch_secureboot::pkcs7::signatures(table) {
        Ok(sigs) => sigs
            .iter()
            .map(|s| {
                s.certificates
                    .iter()
                    .find(|c| {
                        c.cert.tbs_certificate.serial_number.as_bytes()
                            == s.signer.serial.as_slice()
                    })
                    .map(|c| c.cert.tbs_certificate.subject.to_string())
                    .unwrap_or_else(|| "<signer certificate not embedded>".into())
            })
            .collect(),
        Err(e) => vec![format!("<unparsable signature: {e}>")],
    }
}

/// The sections systemd-stub (252) measures into PCR 11, in its order.
const UKI_MEASURED: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// A UKI's measured sections (VirtualSize bytes of each, zero-filled past
/// the raw data, as the stub reads them from the loaded image) and the
/// PCR 11 they yield; empty when `data` has no `.linux` section.
pub fn uki_sections(data: &[u8], pe: &PeImage) -> (Vec<UkiSection>, Option<Sha256Digest>) {
    use sha2::Digest;
    let mut out = Vec::new();
    let mut pcr = [0u8; 32];
    for name in UKI_MEASURED {
        let Some(s) = pe
            .sections
            .iter()
            .find(|s| pe.section_name(data, s) == *name)
        else {
            continue;
        };
        let vsize = s.virtual_size as usize;
        let raw = (s.size_of_raw_data as usize).min(vsize);
        let start = s.pointer_to_raw_data as usize;
        let Some(bytes) = data.get(start..start.saturating_add(raw)) else {
            continue;
        };
        let mut content = bytes.to_vec();
        content.resize(vsize, 0);
        let digest = Sha256Digest::of(&content);
        let mut name_z = name.as_bytes().to_vec();
        name_z.push(0);
        for m in [Sha256Digest::of(&name_z), digest] {
            let mut h = sha2::Sha256::new();
            h.update(pcr);
            h.update(m.0);
            pcr = h.finalize().into();
        }
        out.push(UkiSection {
            name: (*name).to_owned(),
            sha256: digest,
        });
    }
    if !out.iter().any(|s| s.name == ".linux") {
        return (Vec::new(), None);
    }
    (out, Some(Sha256Digest(pcr)))
}

/// The boot component for an EFI binary, or `None` if `data` is not PE.
pub fn boot_component(esp_path: &str, data: &[u8]) -> Option<BootComponent> {
    let pe = PeImage::parse(data).ok()?;
    let hash = trustlaunch_secureboot::authenticode::image_sha256_parsed(data, &pe).ok()?;
    let (uki_sections, uki_pcr11_sha256) = uki_sections(data, &pe);
    Some(BootComponent {
        esp_path: esp_path.to_owned(),
        authenticode_sha256: Sha256Digest(hash),
        signers: signer_subjects(data, &pe),
        uki_sections,
        uki_pcr11_sha256,
    })
}

/// SHA-256 of a file and its length, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<(Sha256Digest, u64), ImageError> {
    use sha2::Digest;
    let mut f = fs::File::open(path).map_err(io(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Sha256Digest(h.finalize().into()), total))
}

/// `grub.cfg` for the debian-shim image.
pub fn debian_grub_cfg(cmdline: &str) -> String {
    format!(
        "# trustlaunch debian-shim image\n\
         set timeout=0\n\
         set default=0\n\
         menuentry \"trustlaunch\" {{\n\
         \x20   linux /vmlinuz {cmdline}\n\
         \x20   initrd /initrd.img\n\
         }}\n"
    )
}

/// Builds the image into `req.out_dir`, reporting each step to `progress`.
pub fn build_image(
    req: &BuildRequest<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageMetadata, ImageError> {
    let out = &req.out_dir;
    fs::create_dir_all(out).map_err(io(out))?;
    for f in [DISK_FILE, image_meta::METADATA_FILE] {
        let p = out.join(f);
        if p.exists() {
            return Err(ImageError::Io {
                path: p,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "an image is already there (choose another --out)",
                ),
            });
        }
    }
    let scratch = out.join(".build");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let result = build_in(req, &scratch, progress);
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn need_key<'a>(req: &BuildRequest<'a>, what: &str) -> Result<&'a KeyPair, ImageError> {
    req.db_key.ok_or_else(|| {
        ImageError::Missing(format!(
            "{what} is signed with the platform's db key: give --db-key and --db-cert"
        ))
    })
}

fn build_in(
    req: &BuildRequest<'_>,
    scratch: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageMetadata, ImageError> {
    let write = |name: &str, data: &[u8]| -> Result<PathBuf, ImageError> {
        let p = scratch.join(name);
        fs::write(&p, data).map_err(io(&p))?;
        Ok(p)
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut key_template = KeyTemplate::Custom;
    let mut db_certificate = None;
    let mut kernel_release = None;
    let mut kernel_cmdline = None;
    let mut notes = Vec::new();
    // A root partition beside the ESP: (its file system image, disk size).
    let mut root_partition: Option<(PathBuf, u64)> = None;
    match &req.recipe {
        Recipe::Tiny {
            initramfs,
            kernel,
            stub,
            cmdline,
        } => {
            let pair = need_key(req, "tiny")?;
            progress(&format!(
                "building initramfs (kernel {}, agent {})",
                initramfs.kernel_release,
                initramfs.agent.display()
            ));
            let initrd = write("initramfs.cpio", &build_initramfs(initramfs)?)?;
            progress("building UKI (systemd-stub + kernel + initramfs)");
            let signed = signed_uki(
                &UkiParts {
                    stub: stub.clone(),
                    kernel: kernel.clone(),
                    initrd,
                    cmdline: cmdline.clone(),
                    os_release: format!(
                        "ID=trustlaunch\nNAME=\"trustlaunch tiny\"\nPRETTY_NAME=\"trustlaunch {} (kernel {})\"\n",
                        req.name, initramfs.kernel_release
                    ),
                },
                pair,
                scratch,
                progress,
            )?;
            files.push(("EFI/BOOT/BOOTX64.EFI".into(), signed));
            db_certificate = Some(certificate_info(&pair.cert_der));
            kernel_release = Some(initramfs.kernel_release.clone());
            kernel_cmdline = Some(cmdline.clone());
        }
        Recipe::DebianShim {
            initramfs,
            kernel,
            shim,
            grub,
            cmdline,
        } => {
            key_template = KeyTemplate::Microsoft;
            progress(&format!(
                "building initramfs (kernel {}, agent {})",
                initramfs.kernel_release,
                initramfs.agent.display()
            ));
            let initrd = write("initrd.img", &build_initramfs(initramfs)?)?;
            let cfg = write("grub.cfg", debian_grub_cfg(cmdline).as_bytes())?;
            for p in [shim, grub, kernel] {
                if !p.is_file() {
                    return Err(ImageError::Missing(format!(
                        "{} is missing: apt-get install -y shim-signed grub-efi-amd64-signed linux-image-amd64",
                        p.display()
                    )));
                }
            }
            files.extend([
                ("EFI/BOOT/BOOTX64.EFI".to_owned(), shim.clone()),
                ("EFI/BOOT/grubx64.efi".to_owned(), grub.clone()),
                ("EFI/debian/grub.cfg".to_owned(), cfg),
                ("vmlinuz".to_owned(), kernel.clone()),
                ("initrd.img".to_owned(), initrd),
            ]);
            kernel_release = Some(initramfs.kernel_release.clone());
            kernel_cmdline = Some(cmdline.clone());
            notes.push(
                "shim verifies grub and the kernel against its built-in Debian certificate \
                 (not db) and measures them into PCR 4; grub measures grub.cfg commands and \
                 the kernel command line into PCR 8 and each file it reads into PCR 9 \
                 (see esp_files)"
                    .into(),
            );
        }
        Recipe::Uki { uki, sign: do_sign } => {
            let data = fs::read(uki).map_err(io(uki))?;
            let boot = if *do_sign {
                let pair = need_key(req, "a UKI")?;
                progress("signing UKI with the db key");
                db_certificate = Some(certificate_info(&pair.cert_der));
                write("BOOTX64.EFI", &sign(uki, &data, pair)?)?
            } else {
                if let Some(pair) = req.db_key {
                    db_certificate = Some(certificate_info(&pair.cert_der));
                }
                notes.push("not signed by the builder (--no-sign)".into());
                uki.clone()
            };
            if PeImage::parse(&data).is_err() {
                return Err(efi_err(uki, "not a PE/COFF image"));
            }
            files.push(("EFI/BOOT/BOOTX64.EFI".into(), boot));
        }
        Recipe::Debian(d) => {
            let (_, root_sectors) = debian_image::root_extent(d.size_bytes);
            let built = debian_image::build_root(d, scratch, root_sectors, progress)?;
            let cmdline = debian_image::kernel_cmdline(&built.root_uuid);
            match d.boot {
                DebianBoot::Shim => {
                    key_template = KeyTemplate::Microsoft;
                    for p in [DEBIAN_SHIM, DEBIAN_GRUB] {
                        if !Path::new(p).is_file() {
                            return Err(ImageError::Missing(format!(
                                "{p} is missing: apt-get install -y shim-signed grub-efi-amd64-signed"
                            )));
                        }
                    }
                    let cfg = write(
                        "grub.cfg",
                        debian_image::grub_cfg(&built.root_uuid).as_bytes(),
                    )?;
                    files.extend([
                        (
                            "EFI/BOOT/BOOTX64.EFI".to_owned(),
                            PathBuf::from(DEBIAN_SHIM),
                        ),
                        (
                            "EFI/BOOT/grubx64.efi".to_owned(),
                            PathBuf::from(DEBIAN_GRUB),
                        ),
                        ("EFI/debian/grub.cfg".to_owned(), cfg),
                    ]);
                    notes.push(
                        "shim verifies grub and the kernel against its built-in Debian certificate \
                         and measures them into PCR 4; grub reads the kernel and initrd through the \
                         root file system's /vmlinuz and /initrd.img links (kept current by Debian's \
                         kernel packages) and measures them into PCR 9, its commands and the kernel \
                         command line into PCR 8"
                            .into(),
                    );
                }
                DebianBoot::Uki => {
                    let pair = need_key(req, "debian --boot uki")?;
                    progress("building UKI (systemd-stub + the image's kernel and initramfs)");
                    let signed = signed_uki(
                        &UkiParts {
                            stub: SYSTEMD_STUB.into(),
                            kernel: built.kernel.clone(),
                            initrd: built.initrd.clone(),
                            cmdline: cmdline.clone(),
                            os_release: format!(
                                "ID=debian\nNAME=\"Debian GNU/Linux\"\nVERSION_CODENAME={}\nPRETTY_NAME=\"Debian GNU/Linux ({}, kernel {})\"\n",
                                d.release, d.release, built.kernel_release
                            ),
                        },
                        pair,
                        scratch,
                        progress,
                    )?;
                    files.push(("EFI/BOOT/BOOTX64.EFI".into(), signed));
                    db_certificate = Some(certificate_info(&pair.cert_der));
                    notes.push(
                        "the kernel, initramfs and command line are one UKI signed with the \
                         platform's db key; a kernel installed inside the guest does not boot \
                         until the image is rebuilt"
                            .into(),
                    );
                }
            }
            notes.push(format!(
                "Debian {} from {}: {} packages, root file system UUID {}",
                d.release, d.mirror, built.package_count, built.root_uuid
            ));
            kernel_release = Some(built.kernel_release.clone());
            kernel_cmdline = Some(cmdline);
            root_partition = Some((built.root_image, d.size_bytes));
        }
        Recipe::Chain { efi, files: extra } => {
            let data = fs::read(efi).map_err(io(efi))?;
            if PeImage::parse(&data).is_err() {
                return Err(efi_err(efi, "not a PE/COFF image"));
            }
            match req.db_key {
                Some(pair) => db_certificate = Some(certificate_info(&pair.cert_der)),
                None => key_template = KeyTemplate::Microsoft,
            }
            files.push(("EFI/BOOT/BOOTX64.EFI".into(), efi.clone()));
            files.extend(extra.iter().cloned());
        }
    }

    progress("describing boot components (Authenticode, UKI sections)");
    let mut components = Vec::new();
    let mut esp_files = Vec::new();
    for (esp_path, src) in &files {
        let data = fs::read(src).map_err(io(src))?;
        esp_files.push(EspFile {
            esp_path: esp_path.clone(),
            size_bytes: data.len() as u64,
            sha256: Sha256Digest::of(&data),
        });
        if data.starts_with(b"MZ") {
            if let Some(c) = boot_component(esp_path, &data) {
                components.push(c);
            }
        }
    }
    if !components
        .iter()
        .any(|c| c.esp_path == "EFI/BOOT/BOOTX64.EFI")
    {
        return Err(efi_err(
            &files[0].1,
            "the boot application does not hash as PE",
        ));
    }

    let disk = req.out_dir.join(DISK_FILE);
    match &root_partition {
        Some((root_image, size)) => {
            progress("building disk (GPT + FAT32 ESP + ext4 root)");
            debian_image::build_disk(&files, root_image, *size, scratch, &disk)?;
            fs::remove_file(root_image).map_err(io(root_image))?;
        }
        None => {
            progress("building disk (GPT + FAT32 ESP)");
            let refs: Vec<(&str, &Path)> = files
                .iter()
                .map(|(e, p)| (e.as_str(), p.as_path()))
                .collect();
            build_disk(&refs, &scratch.join("disk"), &disk)?;
        }
    }
    let (sha256, size_bytes) = sha256_file(&disk)?;

    let meta = ImageMetadata {
        schema: image_meta::SCHEMA,
        name: req.name.clone(),
        kind: req.recipe.kind().into(),
        generation: Generation::V2,
        features: vec![trusted_launch_feature()],
        key_template,
        db_certificate,
        boot_components: components,
        esp_files,
        kernel_release,
        kernel_cmdline,
        created_at: image_meta::rfc3339(req.created_at),
        disk: DiskInfo {
            file: DISK_FILE.into(),
            format: "raw".into(),
            size_bytes,
            sha256,
        },
        notes,
        // Every recipe but a user's own UKI or chain puts the agent in.
        guest_agent: match &req.recipe {
            Recipe::Uki { .. } | Recipe::Chain { .. } => None,
            _ => Some(true),
        },
        trusted_launch_refusals: Vec::new(),
        predicted_boot: None,
    };
    meta.validate()
        .map_err(|message| image_meta::MetadataError::Invalid {
            path: req.out_dir.join(image_meta::METADATA_FILE),
            message,
        })?;
    meta.write(&req.out_dir)?;
    Ok(meta)
}
