//! The unix-socket transport and the control channel against a real swtpm
//! listening on unix sockets in a private directory (no TCP port): the
//! control handshake, TPM commands over one kept connection, and a clean
//! shutdown that ends the process.

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trustlaunch_tpm_client::{KeyAlg, SwtpmControl, Tpm};

#[test]
fn swtpm_on_unix_sockets_answers_tpm_and_control_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ctrl) = (dir.path().join("tpm.sock"), dir.path().join("ctrl.sock"));
    let mut child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "not-need-init"])
        .arg("--tpmstate")
        .arg(format!("dir={}", dir.path().display()))
        .arg("--server")
        .arg(format!("type=unixio,path={}", server.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", ctrl.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("swtpm is installed");
    let t0 = Instant::now();
    while !(server.exists() && ctrl.exists()) {
        assert!(t0.elapsed() < Duration::from_secs(10), "no sockets");
        std::thread::sleep(Duration::from_millis(10));
    }
    let timeout = Duration::from_secs(30);
    let mut control = SwtpmControl::new(UnixStream::connect(&ctrl).unwrap(), timeout).unwrap();
    let caps = control.capabilities().unwrap();
    assert_ne!(caps & 0x1, 0, "CMD_INIT is offered: {caps:#x}");

    let mut tpm = Tpm::over_unix(UnixStream::connect(&server).unwrap(), timeout).unwrap();
    tpm.startup_clear().unwrap();
    assert_eq!(tpm.get_random(16).unwrap().len(), 16);
    let ek = tpm.create_ek(KeyAlg::Rsa2048).unwrap();
    assert!(!ek.public.is_empty());

    control.shutdown().unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "swtpm did not exit on CMD_SHUTDOWN"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
