//! `trustlaunch-agent`: the guest agent's command line (see the library's
//! docs). Flags are parsed by hand to keep the binary's dependencies small.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use trustlaunch_agent::{
    log, open_tpm, run_session, wait_for_port, GuestPaths, SessionEnd, SessionOptions, TpmAttester,
    DEFAULT_PORT_WAIT, PORT_POLL,
};

const USAGE: &str = "\
usage: trustlaunch-agent [--port NAME] [--tpm PATH] [--wait-port SECONDS] [--once]

Answers the host's attestation challenges over a virtio-serial port.

  --port NAME          virtio-serial port name (default org.trustlaunch.attest.0)
  --tpm PATH           TPM device (default /dev/tpmrm0, then /dev/tpm0)
  --wait-port SECONDS  how long to wait for the port to appear (default 60)
  --once               exit after the host's first `done`
  --help               this text

Exit status: 0 after --once's `done`, 1 no TPM device, 2 the port never
appeared, 64 bad arguments.";

/// Exit status: no TPM device could be opened.
const EXIT_NO_TPM: u8 = 1;
/// Exit status: the port never appeared.
const EXIT_NO_PORT: u8 = 2;
/// Exit status: bad arguments (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Debug)]
struct Args {
    port: String,
    tpm: Option<PathBuf>,
    wait: Duration,
    once: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        port: trustlaunch_protocol::PORT_NAME.to_string(),
        tpm: None,
        wait: DEFAULT_PORT_WAIT,
        once: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--once" => parsed.once = true,
            "--port" => parsed.port = value("--port")?,
            "--tpm" => parsed.tpm = Some(PathBuf::from(value("--tpm")?)),
            "--wait-port" => {
                let v = value("--wait-port")?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--wait-port: not a number of seconds: {v}"))?;
                parsed.wait = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Some(parsed))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("trustlaunch-agent: {e}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut paths = GuestPaths::default();
    if let Some(tpm) = args.tpm {
        paths.tpm_devices = vec![tpm];
    }
    log(format_args!("{} starting", env!("CARGO_PKG_VERSION")));
    let (tpm, tpm_path) = match open_tpm(&paths) {
        Ok(t) => t,
        Err(e) => {
            log(e);
            return ExitCode::from(EXIT_NO_TPM);
        }
    };
    log(format_args!("TPM {}", tpm_path.display()));
    let mut attester = TpmAttester::new(tpm, paths.clone());
    // Keys now, so the first challenge is quick; a failure is retried then.
    if let Err(e) = attester.prepare() {
        log(format_args!(
            "key setup failed (retried at the first challenge): {e}"
        ));
    }
    log(format_args!("waiting for port {}", args.port));
    let (mut port, port_path) = match wait_for_port(&paths, &args.port, args.wait, PORT_POLL) {
        Ok(p) => p,
        Err(e) => {
            log(e);
            return ExitCode::from(EXIT_NO_PORT);
        }
    };
    log(format_args!("port {} open", port_path.display()));
    let options = SessionOptions {
        once: args.once,
        ..SessionOptions::default()
    };
    match run_session(&mut port, &mut attester, &options) {
        SessionEnd::Done => log("done; exiting (--once)"),
        SessionEnd::Idle => log("idle; exiting"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let a = parse(&[]).unwrap().unwrap();
        assert_eq!(a.port, trustlaunch_protocol::PORT_NAME);
        assert_eq!((a.tpm, a.wait, a.once), (None, DEFAULT_PORT_WAIT, false));
        let a = parse(&[
            "--port",
            "p.0",
            "--tpm",
            "/dev/tpm0",
            "--once",
            "--wait-port",
            "5",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.port, "p.0");
        assert_eq!(a.tpm, Some(PathBuf::from("/dev/tpm0")));
        assert_eq!((a.wait, a.once), (Duration::from_secs(5), true));
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--port"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--wait-port", "x"]).is_err());
        assert!(parse(&["--bogus"]).unwrap_err().contains("--bogus"));
    }
}
