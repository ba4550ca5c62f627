//! The swtpm harness itself: it starts a usable simulator, gives each
//! instance its own state, and kills it on drop.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use trustlaunch_tpm_client::harness::Swtpm;
use trustlaunch_tpm_client::{HashAlg, PcrSelection, StartupOutcome};

#[test]
fn starts_isolated_simulators_and_kills_them_on_drop() -> Result<()> {
    let a = Swtpm::start()?;
    let b = Swtpm::start()?;
    assert_ne!(a.port(), b.port());
    assert_eq!(a.ctrl_port(), a.port() + 1);
    assert_ne!(a.state_dir(), b.state_dir());
    assert_eq!(a.tcti(), format!("swtpm:host=127.0.0.1,port={}", a.port()));

    // Independent state: extending a PCR on one leaves the other alone.
    let mut ta = a.client()?;
    let mut tb = b.client()?;
    assert_eq!(ta.startup_clear()?, StartupOutcome::AlreadyStarted);
    ta.pcr_extend(16, HashAlg::Sha256, &[7; 32])?;
    let sel = PcrSelection::new(HashAlg::Sha256, [16]);
    assert_ne!(ta.pcr_read(&sel)?, tb.pcr_read(&sel)?);
    assert_eq!(
        tb.pcr_read(&sel)?.get(HashAlg::Sha256, 16),
        Some(&[0u8; 32][..])
    );

    let pid = a.pid();
    let state = a.state_dir().to_path_buf();
    let addr = a.addr();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(a);
    assert!(!state.exists(), "state directory left behind");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "swtpm still listening after drop"
    );
    // `b` is unaffected.
    assert!(tb.get_random(4).is_ok());
    Ok(())
}
