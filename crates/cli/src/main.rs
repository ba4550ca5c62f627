//! `trustlaunch`: the command line. A thin layer: it reads files, turns
//! arguments into calls of the libraries, and prints their results.

mod client;
mod eventlog;
mod fleet;
mod host;
mod human;
mod image;
mod input;
mod pcrs;
mod progress;
mod secureboot;
mod server;
mod tpm;
mod tpm_certs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// trustlaunch: Trusted Launch (Secure Boot, vTPM, measured boot and
/// attestation) for KVM/QEMU virtual machines.
#[derive(Parser)]
#[command(name = "trustlaunch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// TCG event logs: show, replay, verify, extract boot evidence.
    #[command(subcommand)]
    Eventlog(eventlog::EventlogCommand),
    /// TPM 2.0 evidence: quotes, attestation keys, credentials, EK
    /// certificates and the vTPM CA.
    #[command(subcommand)]
    Tpm(tpm::TpmCommand),
    /// UEFI Secure Boot: keys, signing, Authenticode hashes and db/dbx
    /// decisions, signature lists, OVMF variable stores, PCR 7 prediction.
    #[command(subcommand)]
    Secureboot(secureboot::SecurebootCommand),
    /// This host's VM runtime: accelerator probe, Trusted Launch VMs.
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Gen2 disk images: tiny (signed UKI) and debian-shim; metadata.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The attestation service: REST API, monitoring of this host's VMs,
    /// tokens, recommendations, alerts (the main job).
    Server(server::ServerCommand),
    /// Attestations of a VM, from the server.
    #[command(subcommand)]
    Attestation(client::AttestationCommand),
    /// A VM's baseline: show, approve, pin, relearn (from the server).
    #[command(subcommand)]
    Baseline(client::BaselineCommand),
    /// Recommendations and alerts (from the server).
    #[command(subcommand)]
    Security(client::SecurityCommand),
    /// API tokens (from the server, admin): create, list, revoke.
    #[command(subcommand)]
    Token(client::TokenCommand),
    /// Virtual machine scale sets (from the server): create, update,
    /// update-instances, rolling-upgrade, list, list-instances, show, delete,
    /// start, stop, deallocate, restart, reimage.
    #[command(subcommand)]
    Vmss(fleet::VmssCommand),
    /// Virtual machines (from the server): create, update, show, list,
    /// delete, start, stop, deallocate, restart, reimage, list-skus.
    #[command(subcommand)]
    Vm(fleet::VmCommand),
    /// Resource groups (from the server): create, show, list, delete.
    #[command(subcommand)]
    Group(fleet::GroupCommand),
}

/// Output piped into a reader that stops early (`| head`) ends the process
/// quietly with the shell's SIGPIPE status, instead of a panic report from
/// `println!` (Rust ignores SIGPIPE, so a closed pipe is an error there).
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    // Everything this process writes (keys, VM files, logs, sockets) is
    // its own: no group or other bits, whatever the caller's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eventlog(cmd) => eventlog::run(cmd),
        Command::Tpm(cmd) => tpm::run(cmd),
        Command::Secureboot(cmd) => secureboot::run(cmd),
        Command::Host(cmd) => host::run(cmd),
        Command::Image(cmd) => image::run(cmd),
        Command::Server(cmd) => server::run(cmd),
        Command::Attestation(cmd) => client::attestation(cmd),
        Command::Baseline(cmd) => client::baseline(cmd),
        Command::Security(cmd) => client::security(cmd),
        Command::Token(cmd) => client::token(cmd),
        Command::Vmss(cmd) => fleet::vmss(cmd),
        Command::Vm(cmd) => fleet::vm(cmd),
        Command::Group(cmd) => fleet::group(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trustlaunch: error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each cause once: the libraries' messages
/// already name their source ("path: reason"), so a cause whose text the
/// message so far contains is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}
