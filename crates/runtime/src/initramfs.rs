//! The guest's initramfs: a cpio "newc" archive (written here, no `cpio`
//! tool) holding busybox, the guest agent with the shared libraries `ldd`
//! names, the kernel modules a trusted-launch guest needs (virtio-serial
//! for the attestation channel, efivarfs, the ACPI power button, fw_cfg)
//! with their dependencies from `modules.dep`, and an `/init` that mounts
//! the kernel filesystems, loads the modules, starts `acpid` (so QMP
//! `system_powerdown` powers the guest off), prints a marker line and runs
//! the agent in a respawn loop.
//!
//! The newc format (see the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`): per
//! entry a 110-byte ASCII header (magic `070701`, thirteen 8-hex-digit
//! fields), the NUL-terminated name padded to 4 bytes, the data padded to
//! 4 bytes; the archive ends with an entry named `TRAILER!!!`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::ImageError;

/// Mode bits of a directory, a regular file and a symlink (`S_IF*`).
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const TRAILER: &str = "TRAILER!!!";

/// Writes a cpio "newc" archive in memory.
#[derive(Debug, Default)]
pub struct CpioWriter {
    buf: Vec<u8>,
    next_ino: u32,
    names: BTreeSet<String>,
}

/// One entry read back by [`parse_newc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Path inside the archive (no leading `/`).
    pub name: String,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// File contents, or the symlink's target.
    pub data: Vec<u8>,
}

impl CpioEntry {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == S_IFDIR
    }
    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == S_IFREG
    }
    /// Whether this is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170000 == S_IFLNK
    }
}

fn cpio_name(path: &str) -> Result<String, ImageError> {
    let name = path.trim_start_matches('/');
    if name.is_empty()
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err(ImageError::BadArchivePath(path.to_owned()));
    }
    Ok(name.to_owned())
}

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            next_ino: 1,
            names: BTreeSet::new(),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), ImageError> {
        let size = u32::try_from(data.len())
            .map_err(|_| ImageError::BadArchivePath(format!("{name}: larger than 4 GiB")))?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        let nlink = if mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        let namesize = name.len() + 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
        // devminor, rdevmajor, rdevminor, namesize, check.
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, 0, 0, 0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
        self.buf.extend_from_slice(data);
        self.pad4();
        Ok(())
    }

    fn pad4(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// Adds the parents of `name` not yet in the archive (mode 0755).
    fn parents(&mut self, name: &str) -> Result<(), ImageError> {
        let comps: Vec<&str> = name.split('/').collect();
        for depth in 1..comps.len() {
            let dir = comps[..depth].join("/");
            if self.names.insert(dir.clone()) {
                self.entry(&dir, S_IFDIR | 0o755, &[])?;
            }
        }
        Ok(())
    }

    fn claim(&mut self, path: &str) -> Result<String, ImageError> {
        let name = cpio_name(path)?;
        self.parents(&name)?;
        if !self.names.insert(name.clone()) {
            return Err(ImageError::BadArchivePath(format!("{path}: added twice")));
        }
        Ok(name)
    }

    /// A directory (parents are added as needed). Adding a directory that
    /// is already there (e.g. as a parent) is a no-op.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), ImageError> {
        let name = cpio_name(path)?;
        self.parents(&name)?;
        if self.names.insert(name.clone()) {
            self.entry(&name, S_IFDIR | (perm & 0o7777), &[])?;
        }
        Ok(())
    }

    /// A regular file with permission bits `perm` (e.g. 0o755).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), ImageError> {
        let name = self.claim(path)?;
        self.entry(&name, S_IFREG | (perm & 0o7777), data)
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        let name = self.claim(path)?;
        self.entry(&name, S_IFLNK | 0o777, target.as_bytes())
    }

    /// Whether `path` is already in the archive.
    pub fn contains(&self, path: &str) -> bool {
        self.names.contains(path.trim_start_matches('/'))
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        // A fixed name cannot fail.
        let _ = self.entry(TRAILER, 0, &[]);
        self.buf
    }
}

fn hex_field(data: &[u8], at: usize, field: usize) -> Result<u32, ImageError> {
    let start = at + 6 + field * 8;
    let bad = || ImageError::BadArchive {
        offset: start as u64,
        message: "bad header field".into(),
    };
    let text = data.get(start..start + 8).ok_or_else(bad)?;
    let text = std::str::from_utf8(text).map_err(|_| bad())?;
    u32::from_str_radix(text, 16).map_err(|_| bad())
}

/// Reads a newc archive back (the entries before `TRAILER!!!`); every
/// length is checked against the input.
pub fn parse_newc(data: &[u8]) -> Result<Vec<CpioEntry>, ImageError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let err = |message: &str| ImageError::BadArchive {
            offset: at as u64,
            message: message.into(),
        };
        if data.get(at..at + 6) != Some(b"070701".as_slice()) {
            return Err(err("no newc magic 070701 (or no trailer)"));
        }
        let mode = hex_field(data, at, 1)?;
        let size = hex_field(data, at, 6)? as usize;
        let namesize = hex_field(data, at, 11)? as usize;
        let name_start = at + 110;
        let name_bytes = data
            .get(name_start..name_start + namesize)
            .ok_or_else(|| err("name runs past the end"))?;
        let name = name_bytes
            .strip_suffix(&[0])
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| err("name not NUL-terminated UTF-8"))?
            .to_owned();
        let data_start = (name_start + namesize + 3) & !3;
        let body = data
            .get(data_start..data_start + size)
            .ok_or_else(|| err("data runs past the end"))?;
        at = (data_start + size + 3) & !3;
        if name == TRAILER {
            return Ok(out);
        }
        out.push(CpioEntry {
            name,
            mode,
            data: body.to_vec(),
        });
    }
}

/// The modules [`InitramfsSpec::default_modules`] names: virtio-serial
/// (the attestation channel), efivarfs, the ACPI power button and evdev
/// (busybox `acpid` reads `/dev/input/event*`), and fw_cfg (host -> guest
/// data).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "efivarfs",
    "button",
    "evdev",
    "qemu_fw_cfg",
];

/// What goes into the initramfs.
#[derive(Clone, Debug)]
pub struct InitramfsSpec {
    /// A static busybox (`/bin/busybox` from `busybox-static`).
    pub busybox: PathBuf,
    /// The guest agent, installed as `/bin/trustlaunch-agent` (debug info
    /// stripped) with the shared libraries `ldd` reports.
    pub agent: PathBuf,
    /// The kernel release whose modules are included.
    pub kernel_release: String,
    /// Where module trees live (`/lib/modules`).
    pub modules_root: PathBuf,
    /// Module names to load (dependencies are added).
    pub modules: Vec<String>,
    /// Extra files: (path in the archive, relative, source file). Scripts
    /// under `etc/trustlaunch/init.d/*.sh` are run by `/init` after the
    /// guest is up and before the agent starts.
    pub extra_files: Vec<(String, PathBuf)>,
}

impl InitramfsSpec {
    /// The usual spec: `/bin/busybox`, `/lib/modules`, [`DEFAULT_MODULES`].
    pub fn new(agent: PathBuf, kernel_release: String) -> Self {
        Self {
            busybox: "/bin/busybox".into(),
            agent,
            kernel_release,
            modules_root: "/lib/modules".into(),
            modules: Self::default_modules(),
            extra_files: Vec::new(),
        }
    }

    /// [`DEFAULT_MODULES`] as owned names.
    pub fn default_modules() -> Vec<String> {
        DEFAULT_MODULES.iter().map(|m| (*m).to_owned()).collect()
    }
}

/// The newest kernel installed under `boot` (`vmlinuz-<release>`, compared
/// as versions), as `(release, path)`. Not `uname -r`: the host may run
/// another kernel than the one the images ship.
pub fn newest_kernel(boot: &Path) -> Result<(String, PathBuf), ImageError> {
    let entries = fs::read_dir(boot).map_err(|source| ImageError::Io {
        path: boot.to_owned(),
        source,
    })?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .collect();
    found.sort_by(|a, b| version_cmp(a, b));
    let release = found.pop().ok_or_else(|| ImageError::NoKernel {
        dir: boot.to_owned(),
    })?;
    let path = boot.join(format!("vmlinuz-{release}"));
    Ok((release, path))
}

/// Compares versions by runs of digits (numerically) and other text.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Module file names in `modules.dep` order: `name` -> (relative path,
/// direct dependency paths). Names normalise `-` to `_`.
fn parse_modules_dep(text: &str) -> Vec<(String, String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let base = path.rsplit('/').next()?;
            let name = base.split(".ko").next()?.replace('-', "_");
            Some((
                name,
                path.trim().to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect()
}

/// The modules to load, dependencies first (relative paths under
/// `/lib/modules/<release>/`), each with its direct dependencies.
fn resolve_modules(
    modules_dep: &str,
    wanted: &[String],
) -> Result<Vec<(String, Vec<String>)>, ImageError> {
    let table = parse_modules_dep(modules_dep);
    let by_path: std::collections::HashMap<&str, &Vec<String>> =
        table.iter().map(|(_, p, d)| (p.as_str(), d)).collect();
    let mut order: Vec<(String, Vec<String>)> = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        path: &str,
        by_path: &std::collections::HashMap<&str, &Vec<String>>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, Vec<String>)>,
        depth: usize,
    ) {
        if depth > 64 || !seen.insert(path.to_owned()) {
            return;
        }
        let deps = by_path.get(path).map(|d| (*d).clone()).unwrap_or_default();
        // modules.dep lists the full closure, the last to be loaded first.
        for d in deps.iter().rev() {
            visit(d, by_path, seen, order, depth + 1);
        }
        order.push((path.to_owned(), deps));
    }
    for w in wanted {
        let norm = w.replace('-', "_");
        let (_, path, _) =
            table
                .iter()
                .find(|(n, _, _)| *n == norm)
                .ok_or_else(|| ImageError::Module {
                    module: w.clone(),
                    message: "not in modules.dep (built in, or not in this kernel?)".into(),
                })?;
        visit(path, &by_path, &mut seen, &mut order, 0);
    }
    Ok(order)
}

/// The shared libraries `ldd` reports for `binary` (absolute paths; none
/// for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ImageError::Tool {
            tool: "ldd",
            package: "libc-bin",
            message: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(ImageError::Tool {
            tool: "ldd",
            package: "libc-bin",
            message: format!("{}: {}", binary.display(), stderr.trim()),
        });
    }
    let mut libs = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if line.contains("statically linked") {
            continue;
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; vdso has no path.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            return Err(ImageError::Tool {
                tool: "ldd",
                package: "libc-bin",
                message: format!("{}: {line}", binary.display()),
            });
        }
    }
    Ok(libs)
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The agent with its debug info removed (`objcopy --strip-debug`); a
/// non-ELF agent (a script) is taken as it is.
fn stripped(agent: &Path) -> Result<Vec<u8>, ImageError> {
    let data = read(agent)?;
    if !data.starts_with(b"\x7fELF") {
        return Ok(data);
    }
    let tmp = std::env::temp_dir().join(format!(
        "trustlaunch-agent-strip-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let out = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(agent)
        .arg(&tmp)
        .output()
        .map_err(|e| ImageError::Tool {
            tool: "objcopy",
            package: "binutils",
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::Tool {
            tool: "objcopy",
            package: "binutils",
            message: format!(
                "--strip-debug {}: {}",
                agent.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let data = read(&tmp);
    let _ = fs::remove_file(&tmp);
    data
}

/// The `/init` script (busybox sh) for `release`, loading `modules`
/// (paths under `/lib/modules/<release>/`) in order.
pub fn init_script(release: &str, modules: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         # trustlaunch guest init (PID 1): never exits.\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t securityfs securityfs /sys/kernel/security\n",
    );
    for m in modules {
        s.push_str(&format!(
            "insmod /lib/modules/{release}/{m} || echo \"trustlaunch-init: insmod {m} failed\" > /dev/console\n"
        ));
    }
    s.push_str(
        "if [ -d /sys/firmware/efi/efivars ]; then\n\
         \x20 mount -t efivarfs efivarfs /sys/firmware/efi/efivars\n\
         fi\n\
         SB=unknown\n\
         SBVAR=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c\n\
         if [ -r $SBVAR ]; then\n\
         \x20 # 4 bytes of attributes, then the value (efivarfs cannot seek).\n\
         \x20 set -- $(od -An -tu1 $SBVAR)\n\
         \x20 SB=${5:-unknown}\n\
         fi\n\
         # devtmpfs fills /dev/input and /dev/virtio-ports as drivers bind.\n\
         i=0\n\
         while [ $i -lt 20 ] && ! ls /dev/input/event* >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done\n\
         acpid -c /etc/acpi -l /var/log/acpid.log\n",
    );
    s.push_str(&format!(
        "echo \"trustlaunch-init: up (kernel {release}, SecureBoot=$SB)\" > /dev/console\n"
    ));
    s.push_str(
        "for p in /sys/class/virtio-ports/*; do\n\
         \x20 [ -r $p/name ] && echo \"trustlaunch-init: virtio port $(cat $p/name)\" > /dev/console\n\
         done\n\
         for f in /etc/trustlaunch/init.d/*.sh; do\n\
         \x20 [ -r \"$f\" ] && . \"$f\" > /dev/console 2>&1\n\
         done\n\
         while true; do\n\
         \x20 /bin/trustlaunch-agent > /dev/console 2>&1\n\
         \x20 echo \"trustlaunch-init: agent exited ($?), restarting\" > /dev/console\n\
         \x20 sleep 2\n\
         done\n",
    );
    s
}

/// The power-button handler busybox `acpid` runs
/// (`/etc/acpi/PWRF/00000080`).
const POWER_BUTTON: &str = "#!/bin/sh\n\
echo 'trustlaunch-init: power button: powering off' > /dev/console\n\
poweroff -f\n";

/// Builds the initramfs (an uncompressed newc archive).
pub fn build_initramfs(spec: &InitramfsSpec) -> Result<Vec<u8>, ImageError> {
    let release = &spec.kernel_release;
    if release.is_empty() || release.contains('/') || release.starts_with('.') {
        return Err(ImageError::NoKernel {
            dir: spec.modules_root.join(release),
        });
    }
    let moddir = spec.modules_root.join(release);
    let dep_path = moddir.join("modules.dep");
    let dep_text = String::from_utf8_lossy(&read(&dep_path)?).into_owned();
    let modules = resolve_modules(&dep_text, &spec.modules)?;

    let mut w = CpioWriter::new();
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "var/log",
        "etc/acpi/PWRF",
        "root",
    ] {
        w.dir(d, 0o755)?;
    }
    w.file("bin/busybox", 0o755, &read(&spec.busybox)?)?;
    w.symlink("bin/sh", "busybox")?;
    let agent = stripped(&spec.agent)?;
    w.file("bin/trustlaunch-agent", 0o755, &agent)?;
    for lib in shared_libraries(&spec.agent)? {
        let name = lib.to_string_lossy().into_owned();
        if !w.contains(&name) {
            w.file(&name, 0o755, &read(&lib)?)?;
        }
    }
    let mut dep_out = String::new();
    let mut load = Vec::new();
    for (path, deps) in &modules {
        if path.ends_with(".xz") || path.ends_with(".zst") || path.ends_with(".gz") {
            return Err(ImageError::Module {
                module: path.clone(),
                message: "compressed modules are not supported (busybox insmod)".into(),
            });
        }
        let src = moddir.join(path);
        w.file(
            &format!("lib/modules/{release}/{path}"),
            0o644,
            &read(&src)?,
        )?;
        dep_out.push_str(&format!("{path}: {}\n", deps.join(" ")));
        load.push(path.clone());
    }
    w.file(
        &format!("lib/modules/{release}/modules.dep"),
        0o644,
        dep_out.as_bytes(),
    )?;
    w.file("etc/acpi/PWRF/00000080", 0o755, POWER_BUTTON.as_bytes())?;
    for (path, src) in &spec.extra_files {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(ImageError::BadArchivePath(path.to_owned()));
        }
        let mode = if path.ends_with(".sh") { 0o755 } else { 0o644 };
        w.file(path, mode, &read(src)?)?;
    }
    w.file("init", 0o755, init_script(release, &load).as_bytes())?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_cmp("6.1.0-9-amd64", "6.1.0-56-amd64").is_lt());
        assert!(version_cmp("6.10.0-1-amd64", "6.1.0-56-amd64").is_gt());
        assert!(version_cmp("6.1.0-56-amd64", "6.1.0-56-amd64").is_eq());
    }

    #[test]
    fn modules_resolve_dependencies_first() {
        let dep = "kernel/a/virtio_console.ko: kernel/v/virtio.ko kernel/v/virtio_ring.ko\n\
                   kernel/v/virtio.ko:\nkernel/v/virtio_ring.ko: kernel/v/virtio.ko\n\
                   kernel/f/efivarfs.ko:\n";
        let got = resolve_modules(dep, &["virtio-console".into(), "efivarfs".into()]).unwrap();
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "kernel/v/virtio.ko",
                "kernel/v/virtio_ring.ko",
                "kernel/a/virtio_console.ko",
                "kernel/f/efivarfs.ko"
            ]
        );
        assert!(matches!(
            resolve_modules(dep, &["nope".into()]),
            Err(ImageError::Module { .. })
        ));
    }

    #[test]
    fn malformed_archives_are_errors() {
        let mut w = CpioWriter::new();
        w.file("a", 0o644, b"hello").unwrap();
        let good = w.finish();
        for cut in [0, 5, 50, 115, good.len() - 4] {
            assert!(parse_newc(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(CpioWriter::new().file("../x", 0o644, b"").is_err());
    }
}
