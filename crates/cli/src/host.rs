//! `trustlaunch host ...`: this host's VM runtime (in progress, issue 6).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use trustlaunch_runtime::accel::{decide, ProbeConfig};

/// Host subcommands.
#[derive(Subcommand)]
pub enum HostCommand {
    /// Decide the accelerator VMs get: KVM only if OVMF really boots under
    /// it here (up to 10 s), else TCG, with the reason.
    /// `TRUSTLAUNCH_ACCEL=kvm|tcg` overrides.
    Probe {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a subcommand.
pub fn run(cmd: HostCommand) -> Result<ExitCode> {
    match cmd {
        HostCommand::Probe { json } => {
            let scratch = tempfile_dir()?;
            let d = decide(&ProbeConfig::default(), &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            let d = d?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!("{}: {}", d.accel.name(), d.reason);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A private scratch directory for the probe.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("trustlaunch-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
