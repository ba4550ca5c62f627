//! Whether this host has what trustlaunch needs, each failure with its fix.
//!
//! The commands and files come from `host-requirements.txt`, the list the
//! install step (`scripts/lib.sh`) installs and checks: one list, so the
//! installer and `trustlaunch host doctor` cannot disagree. Beyond it the
//! doctor looks at what a package cannot provide: KVM, free disk space in
//! the platform's home, the home's permissions, and whether the ids VMs
//! are confined under ([`crate::confine`]) collide with accounts or with
//! ranges delegated to other users' containers.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::confine::{UID_BASE, UID_END};

/// The list, compiled in.
pub const REQUIREMENTS: &str = include_str!("../host-requirements.txt");

/// How a requirement is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A program on `PATH`.
    Command,
    /// A regular file at an absolute path.
    File,
    /// At least one file whose name starts with a prefix (`/boot/vmlinuz-*`).
    Glob,
}

/// One line of the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    /// How it is looked for.
    pub kind: Kind,
    /// The command, path or pattern.
    pub what: String,
    /// The Debian package that provides it.
    pub package: String,
    /// What trustlaunch uses it for.
    pub why: String,
}

/// A malformed line of the list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("host-requirements.txt line {line}: {message}")]
pub struct ListError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses the list: `kind what package why...`, `#` comments.
pub fn parse_requirements(text: &str) -> Result<Vec<Requirement>, ListError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| ListError {
            line: i + 1,
            message,
        };
        let mut words = line.split_whitespace();
        let (Some(kind), Some(what), Some(package)) = (words.next(), words.next(), words.next())
        else {
            return Err(err("expected: kind what package why".into()));
        };
        let why = words.collect::<Vec<_>>().join(" ");
        if why.is_empty() {
            return Err(err(format!("{what}: says nothing of why it is needed")));
        }
        let kind = match kind {
            "command" if !what.contains('/') => Kind::Command,
            "file" if what.starts_with('/') && !what.contains('*') => Kind::File,
            "glob"
                if what.starts_with('/')
                    && what.ends_with('*')
                    && what.matches('*').count() == 1
                    && what.rsplit_once('/').is_none_or(|(_, name)| name != "*") =>
            {
                Kind::Glob
            }
            other => {
                return Err(err(format!(
                    "`{other} {what}`: a command is a bare name, a file an absolute path, \
                     a glob an absolute path ending in one `*` after a name prefix"
                )))
            }
        };
        out.push(Requirement {
            kind,
            what: what.to_string(),
            package: package.to_string(),
            why,
        });
    }
    Ok(out)
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worse than it could (TCG instead of KVM, little space).
    Warn,
    /// trustlaunch cannot do its job here.
    Fail,
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What was checked (`qemu-img`, `kvm`, `disk space` …).
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &str, detail: String) -> Self {
        Self {
            check: check.into(),
            status: Status::Ok,
            detail,
            fix: None,
        }
    }
    fn bad(check: &str, status: Status, detail: String, fix: String) -> Self {
        Self {
            check: check.into(),
            status,
            detail,
            fix: Some(fix),
        }
    }
}

/// Where the doctor looks: the real host's paths by default; tests point
/// them at files of their own.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// The platform's state directory.
    pub home: PathBuf,
    /// `PATH`, split.
    pub path: Vec<PathBuf>,
    /// `/dev/kvm`.
    pub kvm: PathBuf,
    /// `/etc/passwd`, `/etc/group`.
    pub passwd: PathBuf,
    /// As above.
    pub group: PathBuf,
    /// `/etc/subuid`, `/etc/subgid`.
    pub subuid: PathBuf,
    /// As above.
    pub subgid: PathBuf,
    /// Whether the runtime runs as root (and so confines VMs).
    pub root: bool,
}

impl HostPaths {
    /// This host, for the platform home `home`.
    pub fn of_host(home: PathBuf) -> Self {
        let path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        Self {
            home,
            path,
            kvm: "/dev/kvm".into(),
            passwd: "/etc/passwd".into(),
            group: "/etc/group".into(),
            subuid: "/etc/subuid".into(),
            subgid: "/etc/subgid".into(),
            root: rustix::process::geteuid().is_root(),
        }
    }
}

/// Free space below which the home fails, and below which it warns: a
/// Debian image and a VM's OS disk take about 2 GiB each.
pub const DISK_FAIL_BYTES: u64 = 1 << 30;
/// As above.
pub const DISK_WARN_BYTES: u64 = 10 << 30;

/// Every check, in a stable order.
pub fn examine(paths: &HostPaths, requirements: &[Requirement]) -> Vec<Finding> {
    let mut out: Vec<Finding> = requirements.iter().map(|r| requirement(paths, r)).collect();
    out.push(kvm(&paths.kvm));
    out.extend(home(&paths.home));
    out.extend(sandbox(paths));
    out
}

fn requirement(paths: &HostPaths, r: &Requirement) -> Finding {
    let found = match r.kind {
        Kind::Command => paths
            .path
            .iter()
            .map(|d| d.join(&r.what))
            .find(|p| is_executable(p)),
        Kind::File => Some(PathBuf::from(&r.what)).filter(|p| p.is_file()),
        Kind::Glob => first_match(&r.what),
    };
    match found {
        Some(p) => Finding::ok(&r.what, format!("{} ({})", p.display(), r.package)),
        None => Finding::bad(
            &r.what,
            Status::Fail,
            format!("missing: {}", r.why),
            format!("apt-get install {}", r.package),
        ),
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first file (in name order) matching `/dir/prefix*`.
fn first_match(pattern: &str) -> Option<PathBuf> {
    let (dir, name) = pattern.rsplit_once('/')?;
    let prefix = name.strip_suffix('*')?;
    let dir = if dir.is_empty() { "/" } else { dir };
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    names.into_iter().next()
}

fn kvm(dev: &Path) -> Finding {
    match fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => Finding::ok(
            "kvm",
            format!(
                "{} opens read-write; the runtime still probes that OVMF boots \
                 under it (`trustlaunch host probe`)",
                dev.display()
            ),
        ),
        Err(e) => Finding::bad(
            "kvm",
            Status::Warn,
            format!(
                "{}: {e}: VMs run under TCG emulation, many times slower",
                dev.display()
            ),
            "enable hardware virtualization (VT-x/AMD-V, or nested virtualization \
             on a cloud VM), load kvm_intel or kvm_amd, and run as root or in group kvm"
                .into(),
        ),
    }
}

fn home(home: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    // The nearest directory that exists: a fresh home is made on first use.
    let existing = home
        .ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"));
    match rustix::fs::statvfs(existing) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let detail = format!("{} free at {}", gib(free), existing.display());
            let fix = format!(
                "free space on the file system of {}, or choose another home \
                 (--home, TRUSTLAUNCH_HOME)",
                home.display()
            );
            out.push(if free < DISK_FAIL_BYTES {
                Finding::bad(
                    "disk space",
                    Status::Fail,
                    format!("{detail}: a VM needs at least {}", gib(DISK_FAIL_BYTES)),
                    fix,
                )
            } else if free < DISK_WARN_BYTES {
                Finding::bad(
                    "disk space",
                    Status::Warn,
                    format!("{detail}: room for few images and VMs"),
                    fix,
                )
            } else {
                Finding::ok("disk space", detail)
            });
        }
        Err(e) => out.push(Finding::bad(
            "disk space",
            Status::Fail,
            format!("statvfs {}: {e}", existing.display()),
            "check that the home's parent directory exists and is readable".into(),
        )),
    }
    match fs::symlink_metadata(home) {
        Err(_) => out.push(Finding::ok(
            "home",
            format!(
                "{} does not exist yet; it is made private (0700) on first use",
                home.display()
            ),
        )),
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => out.push(Finding::bad(
            "home",
            Status::Fail,
            format!("{} is not a directory", home.display()),
            "point --home or TRUSTLAUNCH_HOME at a directory".into(),
        )),
        Ok(m) if m.mode() & 0o077 != 0 => out.push(Finding::bad(
            "home",
            Status::Fail,
            format!(
                "{} has mode {:04o}: other users may read the platform's keys and database",
                home.display(),
                m.mode() & 0o7777
            ),
            format!("chmod 0700 {}", home.display()),
        )),
        Ok(m) if m.uid() != rustix::process::geteuid().as_raw() => out.push(Finding::bad(
            "home",
            Status::Fail,
            format!(
                "{} belongs to uid {}, not to this user",
                home.display(),
                m.uid()
            ),
            format!(
                "run as its owner, or chown it: chown -R $(id -u) {}",
                home.display()
            ),
        )),
        Ok(_) => out.push(Finding::ok(
            "home",
            format!("{} is private (0700)", home.display()),
        )),
    }
    out
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Whether VMs can be confined under ids of their own, and whether those
/// ids are really nobody else's.
fn sandbox(paths: &HostPaths) -> Vec<Finding> {
    let range = format!("{UID_BASE}..{}", UID_END - 1);
    if !paths.root {
        return vec![Finding::bad(
            "vm confinement",
            Status::Warn,
            "not root: VMs run as this user, not each under ids of its own".into(),
            "run the runtime (trustlaunch server, host vm) as root".into(),
        )];
    }
    let mut out = Vec::new();
    let mut clashes = Vec::new();
    for (file, what) in [(&paths.passwd, "user"), (&paths.group, "group")] {
        for (name, id) in accounts(file) {
            if (UID_BASE..UID_END).contains(&id) {
                clashes.push(format!("{what} {name} ({id}) in {}", file.display()));
            }
        }
    }
    out.push(if clashes.is_empty() {
        Finding::ok(
            "vm ids",
            format!("no account uses the ids VMs run under ({range})"),
        )
    } else {
        Finding::bad(
            "vm ids",
            Status::Fail,
            format!(
                "accounts use ids VMs run under ({range}): {}; a VM's QEMU would share \
                 its uid with them",
                clashes.join(", ")
            ),
            "give those accounts ids outside the range (usermod -u / groupmod -g)".into(),
        )
    });
    let mut delegated = Vec::new();
    for file in [&paths.subuid, &paths.subgid] {
        for (owner, start, count) in subordinate_ranges(file) {
            let end = start.saturating_add(count);
            if start < UID_END && end > UID_BASE {
                delegated.push(format!(
                    "{owner} {start}..{} in {}",
                    end.saturating_sub(1),
                    file.display()
                ));
            }
        }
    }
    out.push(if delegated.is_empty() {
        Finding::ok(
            "subordinate ids",
            format!("no user's containers may map ids VMs run under ({range})"),
        )
    } else {
        Finding::bad(
            "subordinate ids",
            Status::Warn,
            format!(
                "ranges delegated to other users overlap the ids VMs run under ({range}): \
                 {}; such a user's rootless containers can run processes as a VM's QEMU \
                 or swtpm (signal it, read its files)",
                delegated.join(", ")
            ),
            format!(
                "move those ranges to {UID_END} or above, e.g. usermod --del-subuids \
                 START-END --add-subuids {UID_END}-{} USER (and --del-subgids/--add-subgids)",
                UID_END + 65_535
            ),
        )
    });
    out
}

/// `name:x:id:...` lines of a passwd or group file; unreadable or
/// malformed lines are skipped (a missing file has no accounts).
fn accounts(file: &Path) -> Vec<(String, u32)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

/// `owner:start:count` lines of a subuid or subgid file.
fn subordinate_ranges(file: &Path) -> Vec<(String, u32, u32)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let owner = f.next()?;
            let start = f.next()?.parse().ok()?;
            let count = f.next()?.parse().ok()?;
            Some((owner.to_string(), start, count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_compiled_in_list_parses_and_names_the_core_tools() {
        let list = parse_requirements(REQUIREMENTS).unwrap();
        for what in ["qemu-img", "qemu-system-x86_64", "swtpm"] {
            assert!(
                list.iter()
                    .any(|r| r.kind == Kind::Command && r.what == what),
                "{what}"
            );
        }
        let qemu_img = list.iter().find(|r| r.what == "qemu-img").unwrap();
        assert_eq!(qemu_img.package, "qemu-utils");
    }

    #[test]
    fn malformed_lines_are_named() {
        for (text, needle) in [
            ("command qemu-img\n", "expected"),
            ("command qemu-img qemu-utils\n", "why"),
            ("tool qemu-img qemu-utils disks\n", "`tool qemu-img`"),
            ("file relative/path p why\n", "absolute"),
            ("glob /boot/* p why\n", "prefix"),
            ("command /usr/bin/x p why\n", "bare name"),
        ] {
            let e = parse_requirements(&format!("# c\n\n{text}")).unwrap_err();
            assert_eq!(e.line, 3, "{text}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    fn paths(dir: &Path) -> HostPaths {
        HostPaths {
            home: dir.join("home"),
            path: vec![dir.join("bin")],
            kvm: dir.join("kvm"),
            passwd: dir.join("passwd"),
            group: dir.join("group"),
            subuid: dir.join("subuid"),
            subgid: dir.join("subgid"),
            root: true,
        }
    }

    fn find<'a>(f: &'a [Finding], check: &str) -> &'a Finding {
        f.iter().find(|x| x.check == check).unwrap()
    }

    #[test]
    fn a_missing_command_fails_with_its_package_and_an_executable_one_passes() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        let list = parse_requirements(
            "command qemu-img qemu-utils disks\ncommand swtpm swtpm vtpm\n\
             glob /nonexistent-dir/vmlinuz-* linux-image-amd64 kernel\n",
        )
        .unwrap();
        // Not executable: as good as missing.
        fs::write(dir.path().join("bin/swtpm"), "").unwrap();
        fs::write(dir.path().join("bin/qemu-img"), "").unwrap();
        fs::set_permissions(
            dir.path().join("bin/qemu-img"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let f = examine(&p, &list);
        assert_eq!(find(&f, "qemu-img").status, Status::Ok);
        let swtpm = find(&f, "swtpm");
        assert_eq!(swtpm.status, Status::Fail);
        assert_eq!(swtpm.fix.as_deref(), Some("apt-get install swtpm"));
        assert_eq!(
            find(&f, "/nonexistent-dir/vmlinuz-*").fix.as_deref(),
            Some("apt-get install linux-image-amd64")
        );
    }

    #[test]
    fn globs_match_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("vmlinuz-6.1.0-9-amd64"), "k").unwrap();
        let pattern = format!("{}/vmlinuz-*", dir.path().display());
        assert!(first_match(&pattern).is_some());
        let pattern = format!("{}/initrd.img-*", dir.path().display());
        assert!(first_match(&pattern).is_none());
    }

    #[test]
    fn kvm_absent_is_a_warning_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = kvm(&dir.path().join("kvm"));
        assert_eq!(f.status, Status::Warn);
        assert!(f.fix.unwrap().contains("kvm_intel"));
    }

    #[test]
    fn a_home_others_can_read_fails() {
        let dir = tempfile::tempdir().unwrap();
        let home_dir = dir.path().join("home");
        let f = home(&home_dir);
        assert_eq!(find(&f, "home").status, Status::Ok, "{f:?}");
        assert_ne!(find(&f, "disk space").status, Status::Fail, "{f:?}");
        fs::create_dir(&home_dir).unwrap();
        fs::set_permissions(&home_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let f = home(&home_dir);
        let h = find(&f, "home");
        assert_eq!(h.status, Status::Fail);
        assert!(h.detail.contains("0755"), "{}", h.detail);
        fs::set_permissions(&home_dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(find(&home(&home_dir), "home").status, Status::Ok);
    }

    #[test]
    fn accounts_and_delegated_ranges_in_the_vm_id_range_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::write(
            &p.passwd,
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        fs::write(&p.group, "root:x:0:\n").unwrap();
        // Debian's useradd default for the first user: 100000, 65536 ids.
        fs::write(&p.subuid, "alice:100000:65536\n").unwrap();
        fs::write(&p.subgid, "alice:600000:65536\n").unwrap();
        let f = sandbox(&p);
        assert_eq!(find(&f, "vm ids").status, Status::Ok);
        let sub = find(&f, "subordinate ids");
        assert_eq!(sub.status, Status::Warn);
        assert!(
            sub.detail.contains("alice 100000..165535"),
            "{}",
            sub.detail
        );
        assert!(!sub.detail.contains("600000"), "{}", sub.detail);

        fs::write(&p.group, "root:x:0:\nvmsneak:x:65537:\n").unwrap();
        let f = sandbox(&p);
        let ids = find(&f, "vm ids");
        assert_eq!(ids.status, Status::Fail);
        assert!(
            ids.detail.contains("group vmsneak (65537)"),
            "{}",
            ids.detail
        );

        let f = sandbox(&HostPaths { root: false, ..p });
        assert_eq!(find(&f, "vm confinement").status, Status::Warn);
    }
}
