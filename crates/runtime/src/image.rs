//! Gen2 disk images: a UKI assembled from systemd-stub, a kernel and an
//! initramfs (bookworm has no `ukify`: `objcopy` adds the sections), and a
//! raw disk with a GPT and one FAT32 EFI system partition holding the boot
//! files (`sfdisk`, `mkfs.fat`, `mtools` — no loop devices, no root).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A tool failed or is missing.
    #[error("{tool}: {message} (install {package})")]
    Tool {
        /// The program.
        tool: &'static str,
        /// The Debian package providing it.
        package: &'static str,
        /// What went wrong (its stderr).
        message: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A path on the ESP is not `\EFI\...`-style ASCII.
    #[error("ESP path {0:?}: use ASCII path components separated by '/'")]
    BadEspPath(String),
    /// The boot files do not fit the ESP.
    #[error("boot files ({need} bytes) do not fit a {have}-byte ESP")]
    TooLarge {
        /// Bytes needed.
        need: u64,
        /// ESP size.
        have: u64,
    },
    /// A path inside the initramfs is empty, has `.`/`..` components, or
    /// was added twice.
    #[error("initramfs path {0:?}")]
    BadArchivePath(String),
    /// A cpio archive read back is malformed.
    #[error("cpio archive at byte {offset}: {message}")]
    BadArchive {
        /// Byte offset of the entry.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// No kernel was found (no `vmlinuz-*`, or no module tree).
    #[error("no kernel in {dir}: apt-get install -y linux-image-amd64")]
    NoKernel {
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A kernel module could not be included.
    #[error("kernel module {module}: {message}")]
    Module {
        /// The module name or path.
        module: String,
        /// What went wrong.
        message: String,
    },
    /// A required input is missing (e.g. the db key for a signed image).
    #[error("{0}")]
    Missing(String),
    /// An EFI binary could not be parsed, hashed or signed.
    #[error("{path}: {message}")]
    Efi {
        /// The file.
        path: PathBuf,
        /// The Secure Boot toolkit's error.
        message: String,
    },
    /// The db key or certificate could not be used.
    #[error("db key {path}: {message}")]
    Key {
        /// The key or certificate file.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// The metadata could not be written or read.
    #[error(transparent)]
    Metadata(#[from] crate::image_meta::MetadataError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn run(
    tool: &'static str,
    package: &'static str,
    cmd: &mut Command,
    stdin: Option<&[u8]>,
) -> Result<(), ImageError> {
    let fail = |message: String| ImageError::Tool {
        tool,
        package,
        message,
    };
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The parts of a unified kernel image.
#[derive(Clone, Debug)]
pub struct UkiParts {
    /// systemd-stub (`/usr/lib/systemd/boot/efi/linuxx64.efi.stub`).
    pub stub: PathBuf,
    /// The kernel (`/boot/vmlinuz-*`).
    pub kernel: PathBuf,
    /// The initramfs (cpio, optionally compressed).
    pub initrd: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// The `.osrel` section (os-release text).
    pub os_release: String,
}

/// Assembles a UKI at `out` (unsigned; sign it with the Secure Boot
/// toolkit). Section addresses follow systemd 252's documented objcopy
/// recipe: .osrel 0x20000, .cmdline 0x30000, .linux 0x2000000, .initrd
/// 0x3000000 (the stub's own sections end below 0x20000).
pub fn build_uki(parts: &UkiParts, scratch: &Path, out: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(scratch).map_err(io_err(scratch))?;
    let osrel = scratch.join("os-release");
    fs::write(&osrel, &parts.os_release).map_err(io_err(&osrel))?;
    let cmdline = scratch.join("cmdline");
    fs::write(&cmdline, &parts.cmdline).map_err(io_err(&cmdline))?;
    let mut cmd = Command::new("objcopy");
    for (name, file, vma) in [
        (".osrel", osrel.as_path(), "0x20000"),
        (".cmdline", cmdline.as_path(), "0x30000"),
        (".linux", parts.kernel.as_path(), "0x2000000"),
        (".initrd", parts.initrd.as_path(), "0x3000000"),
    ] {
        cmd.arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={vma}"));
    }
    cmd.arg(&parts.stub).arg(out);
    run("objcopy", "binutils", &mut cmd, None)
}

/// Size of the disk [`build_disk`] makes, and its ESP (from 1 MiB to
/// 1 MiB before the end, leaving room for the backup GPT).
pub const DISK_BYTES: u64 = 128 << 20;
const ESP_START_SECTOR: u64 = 2048;
const ESP_SECTORS: u64 = (DISK_BYTES >> 9) - 2 * ESP_START_SECTOR;

/// Writes a raw disk at `out`: GPT, one EFI system partition (FAT32)
/// holding each `(ESP path, source file)`, e.g.
/// `("EFI/BOOT/BOOTX64.EFI", uki)`.
pub fn build_disk(files: &[(&str, &Path)], scratch: &Path, out: &Path) -> Result<(), ImageError> {
    let esp_bytes = ESP_SECTORS << 9;
    fs::create_dir_all(scratch).map_err(io_err(scratch))?;
    let owned: Vec<(String, PathBuf)> = files
        .iter()
        .map(|(e, p)| ((*e).to_owned(), p.to_path_buf()))
        .collect();
    let esp = scratch.join("esp.img");
    // The FAT first: a file that does not fit fails before the disk is made.
    build_fat(&owned, esp_bytes, &esp)?;
    let _ = fs::remove_file(out);
    fs::File::create(out)
        .and_then(|f| f.set_len(DISK_BYTES))
        .map_err(io_err(out))?;
    let layout = format!(
        "label: gpt\nstart={ESP_START_SECTOR}, size={ESP_SECTORS}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"\n"
    );
    run(
        "sfdisk",
        "fdisk",
        Command::new("sfdisk").arg("-q").arg(out),
        Some(layout.as_bytes()),
    )?;
    // The ESP into the disk at sector 2048.
    let part = fs::read(&esp).map_err(io_err(&esp))?;
    let mut disk = fs::OpenOptions::new()
        .write(true)
        .open(out)
        .map_err(io_err(out))?;
    std::io::Seek::seek(&mut disk, std::io::SeekFrom::Start(ESP_START_SECTOR << 9))
        .map_err(io_err(out))?;
    disk.write_all(&part).map_err(io_err(out))?;
    fs::remove_file(&esp).map_err(io_err(&esp))?;
    Ok(())
}

/// Writes a FAT32 file system of `bytes` at `out` holding each
/// `(ESP path, source file)`.
pub fn build_fat(files: &[(String, PathBuf)], bytes: u64, out: &Path) -> Result<(), ImageError> {
    let mut need = 0u64;
    for (esp_path, src) in files {
        if esp_path.is_empty()
            || !esp_path
                .split('/')
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic() && b != b'\\'))
        {
            return Err(ImageError::BadEspPath(esp_path.clone()));
        }
        need += fs::metadata(src).map_err(io_err(src))?.len();
    }
    // FAT32 overhead (FATs, clusters) stays well under 10 %.
    if need > bytes / 10 * 9 {
        return Err(ImageError::TooLarge { need, have: bytes });
    }
    let _ = fs::remove_file(out);
    run(
        "mkfs.fat",
        "dosfstools",
        Command::new("mkfs.fat")
            .args(["-C", "-F", "32", "-n", "ESP"])
            .arg(out)
            .arg((bytes >> 10).to_string()),
        None,
    )?;
    let img = out.to_string_lossy().into_owned();
    for (esp_path, src) in files {
        // Directories first (mmd fails on existing ones: make each once).
        let comps: Vec<&str> = esp_path.split('/').collect();
        for depth in 1..comps.len() {
            let dir = format!("::/{}", comps[..depth].join("/"));
            let exists = Command::new("mdir")
                .args(["-i", &img, &dir])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !exists {
                run(
                    "mmd",
                    "mtools",
                    Command::new("mmd").args(["-i", &img, &dir]),
                    None,
                )?;
            }
        }
        run(
            "mcopy",
            "mtools",
            Command::new("mcopy")
                .args(["-i", &img])
                .arg(src)
                .arg(format!("::/{esp_path}")),
            None,
        )?;
    }
    Ok(())
}
