//! What a local unprivileged user can read of a server's home: nothing.
//! A `trustlaunch server` process started on a home an older version left
//! world-readable narrows it (0700 directories, 0600 files); the database,
//! its WAL, the master key and the admin token are unreadable as `nobody`;
//! and no file of the home holds a plaintext private key (the token
//! signing keys are sealed under the master key).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn a_servers_home_is_sealed_from_other_local_users() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // As an older version left it: world-readable home and database.
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = home.join("trustlaunch.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/tests/data/evidence/vtpm-ca.crt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args([
            "server",
            "--no-runtime",
            "--driver",
            "none",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--home")
        .arg(&home)
        .arg("--vtpm-ca")
        .arg(&ca)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("server output").expect("line");
        if line.contains("listening on ") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let token = home.join("server/admin.token");
    for _ in 0..100 {
        if token.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Modes: the home and what is under it are the owner's only.
    assert_eq!(mode(&home), 0o700, "home");
    assert_eq!(mode(&home.join("server")), 0o700);
    for f in [
        db.clone(),
        home.join("master.key"),
        token.clone(),
        home.join("trustlaunch.db-wal"),
    ] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    let mut all = Vec::new();
    files(&home, &mut all);
    for f in &all {
        assert_eq!(mode(f) & 0o077, 0, "{} is readable by others", f.display());
    }
    // No plaintext private key anywhere; the signing key is sealed.
    let mut sealed = false;
    for f in &all {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a plaintext private key",
            f.display()
        );
        sealed |= text.contains("TRUSTLAUNCH SEALED SECRET");
    }
    assert!(sealed, "the signing key is in the database, sealed");

    // As `nobody`: not one file can be read, not even listed.
    if !is_root() {
        eprintln!("not root: the read-as-nobody part needs root (the test command runs as root)");
        return;
    }
    for target in all.iter().chain([&home]) {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg("cat")
            .arg(target)
            .output()
            .expect("setpriv (util-linux)");
        assert!(!o.status.success(), "nobody read {}", target.display());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("Permission denied"),
            "{}: {err}",
            target.display()
        );
    }
    drop(server);
}
