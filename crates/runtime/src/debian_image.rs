//! A real Debian image: a root filesystem built from Debian's package
//! archive by `mmdebstrap`, as a GPT disk with an EFI system partition
//! and an ext4 root partition, made without loop devices or mounts
//! (`mkfs.ext4 -d` fills the file system from the directory, `mtools`
//! writes the ESP).
//!
//! Two boot chains:
//! - [`DebianBoot::Shim`] (key template `microsoft`): Debian's own signed
//!   shim → signed grub → signed kernel → initramfs-tools → systemd. grub
//!   reads `grub.cfg` from the ESP and the kernel and initrd through the
//!   root file system's `/vmlinuz` and `/initrd.img` links, which
//!   Debian's kernel packages keep pointing at the newest kernel, so a
//!   kernel upgrade inside the guest boots on the next start (and shows
//!   as a new PCR 4/9 measurement).
//! - [`DebianBoot::Uki`] (key template `custom`): the same kernel,
//!   initramfs and command line as one UKI signed with the platform's db
//!   key.
//!
//! The image runs systemd with udev and systemd-networkd (DHCP on the
//! VM's NIC), OpenSSH with key logins only, a serial console, no
//! password anywhere, and the guest attestation agent package
//! ([`crate::agent_package`]) installed: the service answers the host's
//! attestation, the first-boot unit applies the VM's hostname and SSH key
//! and makes the VM's own SSH host keys (the image has none).
//!
//! Downloads go to a cache directory ([`DebianRequest::cache`]): a second
//! build takes its packages from there and fetches only what is new.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::image::{io_err, run, ImageError};

/// The Debian releases the builder knows to boot (`bookworm` is Debian 12).
pub const RELEASES: &[&str] = &["bookworm"];
/// Debian's archive.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The packages every image has, beyond `minbase`.
pub const BASE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "kmod",
    "e2fsprogs",
    "openssh-server",
    "iproute2",
    "procps",
];
/// Default disk size.
pub const DEFAULT_SIZE_BYTES: u64 = 4 << 30;
/// Smallest disk the builder makes: the base system takes about 700 MiB.
pub const MIN_SIZE_BYTES: u64 = 2 << 30;
/// Largest disk.
pub const MAX_SIZE_BYTES: u64 = 256 << 30;
/// The ESP: room for a UKI (kernel + initramfs) and the shim chain.
pub const ESP_BYTES: u64 = 256 << 20;
/// First usable sector of both partitions' layout (1 MiB alignment).
pub const FIRST_SECTOR: u64 = 2048;
/// GPT type of an x86-64 root partition (Discoverable Partitions).
pub const ROOT_PARTITION_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// The ESP's GPT type.
pub const ESP_PARTITION_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The kernel command line: the root by file-system UUID, the serial
/// console (where systemd starts a getty), warnings from the kernel.
pub fn kernel_cmdline(root_uuid: &str) -> String {
    format!("root=UUID={root_uuid} ro console=ttyS0,115200 loglevel=4 panic=-1")
}

/// How the image boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebianBoot {
    /// Debian's signed shim → grub → kernel (key template `microsoft`).
    Shim,
    /// A UKI signed with the platform's db key (key template `custom`).
    Uki,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct DebianRequest {
    /// Debian release (`bookworm`).
    pub release: String,
    /// Packages beyond [`BASE_PACKAGES`].
    pub packages: Vec<String>,
    /// Disk size, bytes.
    pub size_bytes: u64,
    /// Boot chain.
    pub boot: DebianBoot,
    /// The guest attestation agent package to install.
    pub agent_deb: PathBuf,
    /// Where downloaded packages are kept between builds.
    pub cache: PathBuf,
    /// The archive (`http://deb.debian.org/debian`).
    pub mirror: String,
}

/// Checks a Debian package name (policy §5.6.1): lowercase letters,
/// digits, `+ - .`, at least two characters, starting alphanumeric.
pub fn check_package(name: &str) -> Result<(), ImageError> {
    let ok = name.len() >= 2
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ImageError::Missing(format!(
            "package {name:?}: a Debian package name has lowercase letters, digits and + - . only"
        )))
    }
}

impl DebianRequest {
    /// Checks the request before anything runs.
    pub fn validate(&self) -> Result<(), ImageError> {
        if !RELEASES.contains(&self.release.as_str()) {
            return Err(ImageError::Missing(format!(
                "release {:?}: the builder knows {}",
                self.release,
                RELEASES.join(", ")
            )));
        }
        for p in &self.packages {
            check_package(p)?;
        }
        if !(MIN_SIZE_BYTES..=MAX_SIZE_BYTES).contains(&self.size_bytes) {
            return Err(ImageError::Missing(format!(
                "disk size {} MiB: between {} and {} MiB",
                self.size_bytes >> 20,
                MIN_SIZE_BYTES >> 20,
                MAX_SIZE_BYTES >> 20
            )));
        }
        if !(self.mirror.starts_with("http://") || self.mirror.starts_with("https://"))
            || self
                .mirror
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'\'')
        {
            return Err(ImageError::Missing(format!(
                "mirror {:?}: an http(s) URL",
                self.mirror
            )));
        }
        Ok(())
    }

    /// Every package the image gets, base first, without repeats.
    pub fn all_packages(&self) -> Vec<String> {
        let mut out: Vec<String> = BASE_PACKAGES.iter().map(|s| (*s).to_owned()).collect();
        for p in &self.packages {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

/// Quotes `s` for a POSIX shell (single quotes).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The configuration applied inside the new root (`$1`), as an
/// mmdebstrap customize hook.
pub fn configure_script(root_uuid: &str, agent_deb_name: &str) -> String {
    format!(
        r#"set -eu
root="$1"
echo debian >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf 'UUID={root_uuid} / ext4 errors=remount-ro 0 1\n' >"$root/etc/fstab"
# Each VM gets its own machine id at first boot.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# DHCP on the VM's NIC.
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/80-trustlaunch-dhcp.network"
chroot "$root" systemctl enable systemd-networkd.service
# Key logins only; no host keys in the image (each VM makes its own).
mkdir -p "$root/etc/ssh/sshd_config.d"
printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n' >"$root/etc/ssh/sshd_config.d/trustlaunch.conf"
rm -f "$root"/etc/ssh/ssh_host_*
# No password logins anywhere: root's password stays locked.
chroot "$root" passwd --lock root
# The guest attestation agent.
chroot "$root" dpkg -i "/tmp/{agent_deb_name}"
rm -f "$root/tmp/{agent_deb_name}"
# The kernel's links grub follows.
test -e "$root/vmlinuz" && test -e "$root/initrd.img"
"#
    )
}

/// mmdebstrap's arguments for building into `root` with the cache.
pub fn mmdebstrap_args(req: &DebianRequest, root: &Path, root_uuid: &str) -> Vec<OsString> {
    let cache = sh_quote(&req.cache.to_string_lossy());
    let deb = sh_quote(&req.agent_deb.to_string_lossy());
    let deb_name = req
        .agent_deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut args: Vec<OsString> = vec![
        "--mode=root".into(),
        "--format=directory".into(),
        "--variant=minbase".into(),
        format!("--include={}", req.all_packages().join(",")).into(),
        "--aptopt=Acquire::Retries \"3\"".into(),
        // The cache: packages in before the download, out after it.
        "--skip=download/empty".into(),
        "--skip=essential/unlink".into(),
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/".into(),
        format!("--setup-hook=sync-in {cache} /var/cache/apt/archives/").into(),
        format!("--customize-hook=sync-out /var/cache/apt/archives {cache}").into(),
        "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb".into(),
        format!("--customize-hook=copy-in {deb} /tmp/").into(),
        format!(
            "--customize-hook={}",
            configure_script(root_uuid, &deb_name)
        )
        .into(),
        req.release.clone().into(),
    ];
    args.push(root.as_os_str().to_owned());
    args.push(req.mirror.clone().into());
    args
}

/// `grub.cfg` on the ESP: the root partition by file-system UUID, the
/// kernel and initrd through the links Debian keeps current.
pub fn grub_cfg(root_uuid: &str) -> String {
    format!(
        "# trustlaunch debian image\n\
         set timeout=0\n\
         set default=0\n\
         search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         menuentry \"Debian GNU/Linux\" {{\n\
         \x20   linux /vmlinuz {cmdline}\n\
         \x20   initrd /initrd.img\n\
         }}\n",
        cmdline = kernel_cmdline(root_uuid)
    )
}

/// A random (version 4) UUID.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The partition table (sfdisk script): the ESP, then the root file
/// system to the end of the disk.
pub fn layout(esp_bytes: u64, root_sectors: u64, root_partuuid: &str) -> String {
    let esp_sectors = esp_bytes >> 9;
    let root_start = FIRST_SECTOR + esp_sectors;
    format!(
        "label: gpt\n\
         start={FIRST_SECTOR}, size={esp_sectors}, type={ESP_PARTITION_TYPE}, name=\"ESP\"\n\
         start={root_start}, size={root_sectors}, type={ROOT_PARTITION_TYPE}, uuid={root_partuuid}, name=\"root\"\n"
    )
}

/// Where the root partition starts and how many sectors it has, for a
/// disk of `size_bytes` (GPT's backup table takes the last 33 sectors;
/// the partition ends on a MiB boundary before it).
pub fn root_extent(size_bytes: u64) -> (u64, u64) {
    let start = FIRST_SECTOR + (ESP_BYTES >> 9);
    let end = ((size_bytes >> 9) - 34) / 2048 * 2048;
    (start, end.saturating_sub(start))
}

/// Runs `cmd`, streaming its stderr lines to `progress` (mmdebstrap's
/// own progress), failing with the tail of its output.
pub fn run_logged(
    tool: &'static str,
    package: &'static str,
    cmd: &mut Command,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    use std::io::BufRead;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Tool {
            tool,
            package,
            message: e.to_string(),
        })?;
    let mut tail: Vec<String> = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            progress(&format!("{tool}: {line}"));
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(|e| ImageError::Tool {
        tool,
        package,
        message: e.to_string(),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::Tool {
            tool,
            package,
            message: format!("{status}: {}", tail.join("\n")),
        })
    }
}

/// Copies `src` into `dst` at byte `offset`, skipping blocks of zeros so
/// a sparse `dst` stays sparse.
pub fn copy_sparse(src: &Path, dst: &Path, offset: u64) -> Result<(), ImageError> {
    let mut from = fs::File::open(src).map_err(io_err(src))?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .map_err(io_err(dst))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = from.read(&mut buf[filled..]).map_err(io_err(src))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for chunk in buf[..filled].chunks(64 << 10) {
            if chunk.iter().any(|&b| b != 0) {
                to.seek(SeekFrom::Start(at)).map_err(io_err(dst))?;
                to.write_all(chunk).map_err(io_err(dst))?;
            }
            at += chunk.len() as u64;
        }
        if filled < buf.len() {
            break;
        }
    }
    to.sync_all().map_err(io_err(dst))?;
    Ok(())
}

/// What the root file system build yields for the ESP and the metadata.
#[derive(Clone, Debug)]
pub struct BuiltRoot {
    /// The ext4 file system image (the root partition's contents).
    pub root_image: PathBuf,
    /// Its file-system UUID (`root=UUID=`).
    pub root_uuid: String,
    /// The kernel release the image boots (`/vmlinuz`'s target).
    pub kernel_release: String,
    /// The kernel, copied out of the root (for a UKI).
    pub kernel: PathBuf,
    /// The initramfs, copied out of the root (for a UKI).
    pub initrd: PathBuf,
    /// The packages installed, `name version` lines (dpkg's list).
    pub package_count: usize,
}

/// Builds the root file system in `scratch` (mmdebstrap, then
/// `mkfs.ext4 -d`), `root_sectors` 512-byte sectors large.
pub fn build_root(
    req: &DebianRequest,
    scratch: &Path,
    root_sectors: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<BuiltRoot, ImageError> {
    req.validate()?;
    if !rustix::process::geteuid().is_root() {
        return Err(ImageError::Missing(
            "building a Debian image needs root: mmdebstrap installs packages as root into the \
             new file system, and mkfs.ext4 -d keeps the owners it finds"
                .into(),
        ));
    }
    fs::create_dir_all(&req.cache).map_err(io_err(&req.cache))?;
    let root = scratch.join("root");
    let _ = fs::remove_dir_all(&root);
    let root_uuid = new_uuid();
    let cached = fs::read_dir(&req.cache)
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    progress(&format!(
        "mmdebstrap {} ({} packages asked for; {} files in the cache {})",
        req.release,
        req.all_packages().len(),
        cached,
        req.cache.display()
    ));
    run_logged(
        "mmdebstrap",
        "mmdebstrap",
        Command::new("mmdebstrap").args(mmdebstrap_args(req, &root, &root_uuid)),
        progress,
    )?;
    // The kernel the links point at.
    let vmlinuz = fs::read_link(root.join("vmlinuz")).map_err(io_err(&root.join("vmlinuz")))?;
    let kernel_release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(str::to_owned)
        .ok_or_else(|| {
            ImageError::Missing(format!(
                "{}: /vmlinuz points at {}, not at a vmlinuz-<release>",
                root.display(),
                vmlinuz.display()
            ))
        })?;
    let kernel = scratch.join("vmlinuz");
    let initrd = scratch.join("initrd.img");
    for (from, to) in [
        (format!("boot/vmlinuz-{kernel_release}"), &kernel),
        (format!("boot/initrd.img-{kernel_release}"), &initrd),
    ] {
        let src = root.join(from);
        fs::copy(&src, to).map_err(io_err(&src))?;
    }
    let status = root.join("var/lib/dpkg/status");
    let package_count = fs::read_to_string(&status)
        .map_err(io_err(&status))?
        .lines()
        .filter(|l| *l == "Status: install ok installed")
        .count();
    progress(&format!(
        "mkfs.ext4 -d: root file system ({} MiB, kernel {kernel_release}, {package_count} packages)",
        root_sectors >> 11
    ));
    let root_image = scratch.join("root.ext4");
    let _ = fs::remove_file(&root_image);
    run_logged(
        "mkfs.ext4",
        "e2fsprogs",
        Command::new("mkfs.ext4")
            .args([
                "-q", "-F", "-t", "ext4", "-L", "root", "-U", &root_uuid, "-d",
            ])
            .arg(&root)
            .arg(&root_image)
            .arg(format!("{}k", root_sectors / 2)),
        progress,
    )?;
    fs::remove_dir_all(&root).map_err(io_err(&root))?;
    Ok(BuiltRoot {
        root_image,
        root_uuid,
        kernel_release,
        kernel,
        initrd,
        package_count,
    })
}

/// Writes the disk at `out` (`size_bytes`, sparse): GPT with the ESP
/// (`esp_files` on FAT32) and the root partition (`root_image`).
pub fn build_disk(
    esp_files: &[(String, PathBuf)],
    root_image: &Path,
    size_bytes: u64,
    scratch: &Path,
    out: &Path,
) -> Result<(), ImageError> {
    let (root_start, root_sectors) = root_extent(size_bytes);
    let _ = fs::remove_file(out);
    fs::File::create(out)
        .and_then(|f| f.set_len(size_bytes))
        .map_err(io_err(out))?;
    run(
        "sfdisk",
        "fdisk",
        Command::new("sfdisk").arg("-q").arg(out),
        Some(layout(ESP_BYTES, root_sectors, &new_uuid()).as_bytes()),
    )?;
    let esp = scratch.join("esp.img");
    crate::image::build_fat(esp_files, ESP_BYTES, &esp)?;
    copy_sparse(&esp, out, FIRST_SECTOR << 9)?;
    fs::remove_file(&esp).map_err(io_err(&esp))?;
    let root_len = fs::metadata(root_image).map_err(io_err(root_image))?.len();
    if root_len > root_sectors << 9 {
        return Err(ImageError::TooLarge {
            need: root_len,
            have: root_sectors << 9,
        });
    }
    copy_sparse(root_image, out, root_start << 9)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> DebianRequest {
        DebianRequest {
            release: "bookworm".into(),
            packages: vec!["curl".into(), "udev".into()],
            size_bytes: DEFAULT_SIZE_BYTES,
            boot: DebianBoot::Shim,
            agent_deb: "/x/trustlaunch-guest-agent_0.1.0_amd64.deb".into(),
            cache: "/var/cache/it's".into(),
            mirror: DEFAULT_MIRROR.into(),
        }
    }

    #[test]
    fn requests_are_checked() {
        request().validate().unwrap();
        for bad in [
            DebianRequest {
                release: "sid; rm -rf /".into(),
                ..request()
            },
            DebianRequest {
                packages: vec!["--allow-unauthenticated".into()],
                ..request()
            },
            DebianRequest {
                packages: vec!["Curl".into()],
                ..request()
            },
            DebianRequest {
                size_bytes: 1 << 30,
                ..request()
            },
            DebianRequest {
                mirror: "file:///etc".into(),
                ..request()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn packages_are_deduplicated_base_first() {
        let all = request().all_packages();
        assert_eq!(all[0], "systemd-sysv");
        assert_eq!(all.iter().filter(|p| *p == "udev").count(), 1);
        assert_eq!(all.last().unwrap(), "curl");
    }

    #[test]
    fn the_cache_path_is_quoted_for_the_hooks() {
        let args = mmdebstrap_args(&request(), Path::new("/tmp/root"), "u");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.contains(
                &"--setup-hook=sync-in '/var/cache/it'\\''s' /var/cache/apt/archives/".to_string()
            ),
            "{args:?}"
        );
        assert_eq!(
            &args[args.len() - 3..],
            ["bookworm", "/tmp/root", DEFAULT_MIRROR]
        );
    }

    #[test]
    fn the_layout_fits_the_disk() {
        let (start, sectors) = root_extent(DEFAULT_SIZE_BYTES);
        assert_eq!(start, FIRST_SECTOR + (ESP_BYTES >> 9));
        assert_eq!((start + sectors) % 2048, 0);
        assert!((start + sectors) * 512 <= DEFAULT_SIZE_BYTES - 34 * 512);
        let l = layout(ESP_BYTES, sectors, "p");
        assert!(l.contains(&format!("start={start}, size={sectors}")), "{l}");
    }

    #[test]
    fn uuids_are_version_4() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid());
    }

    #[test]
    fn sparse_copy_keeps_holes_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let mut data = vec![0u8; 3 << 20];
        data[100] = 1;
        data[(2 << 20) + 5] = 7;
        fs::write(&src, &data).unwrap();
        fs::File::create(&dst).unwrap().set_len(8 << 20).unwrap();
        copy_sparse(&src, &dst, 1 << 20).unwrap();
        let out = fs::read(&dst).unwrap();
        assert_eq!(&out[1 << 20..(1 << 20) + data.len()], &data[..]);
        assert!(out[..1 << 20].iter().all(|&b| b == 0));
    }
}
