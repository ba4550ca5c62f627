//! Helpers shared by the integration tests that run real tools on real
//! Debian artifacts: a missing file or tool panics with the package to
//! install (never a skip).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory under cargo's per-target temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, unique directory; `tag` names the test.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "trustlaunch-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// The path of `name` in the directory, as a string for command lines.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// Writes `name`; returns its path.
    pub fn write(&self, name: &str, data: impl AsRef<[u8]>) -> String {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// Reads `name`.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a file a Debian package installs.
pub fn read(path: &str, package: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}); install it with `apt-get install -y {package}`")
    })
}

/// The newest `/boot/vmlinuz-*` (Debian's signed kernel).
pub fn kernel_path() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/boot")
        .expect("/boot missing; apt-get install -y linux-image-amd64")
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.starts_with("/boot/vmlinuz-"))
        .collect();
    v.sort();
    v.pop()
        .expect("no /boot/vmlinuz-*; apt-get install -y linux-image-amd64")
}

/// Runs `tool args` (in `dir` when given); returns (success, stdout +
/// stderr).
pub fn run_in(dir: Option<&Path>, tool: &str, package: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(tool);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); apt-get install -y {package}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Runs `tool args`; returns (success, stdout + stderr).
pub fn run(tool: &str, package: &str, args: &[&str]) -> (bool, String) {
    run_in(None, tool, package, args)
}

/// `openssl req -x509 -newkey rsa:2048` in `dir`: NAME.key (PKCS#8) and a
/// self-signed NAME.crt with subject CN=`cn`; returns their paths.
pub fn openssl_req(dir: &TempDir, name: &str, cn: &str) -> (String, String) {
    let key = dir.path(&format!("{name}.key"));
    let crt = dir.path(&format!("{name}.crt"));
    let (ok, text) = run(
        "openssl",
        "openssl",
        &[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-subj",
            &format!("/CN={cn}/"),
            "-days",
            "3650",
        ],
    );
    assert!(ok, "openssl req failed:\n{text}");
    (key, crt)
}
