//! Kernel modules that failed signature verification, from the kernel
//! log: [`read_kernel_log`] reads `/dev/kmsg` (bounded, non-blocking,
//! without consuming it — `/proc/kmsg` would take the records from
//! syslog), [`untrusted_modules`] finds the kernel's messages in it
//! (pure).
//!
//! The messages, as Linux 6.1 prints them:
//!
//! - `<name>: module verification failed: signature and/or required key
//!   missing - tainting kernel` — `load_module` (kernel/module/main.c,
//!   `pr_notice_once`) when a module without a valid signature is loaded
//!   because neither `module.sig_enforce` nor lockdown forbids it. Printed
//!   once per boot: later unsigned modules only taint (flag `E`).
//! - `Lockdown: <comm>: unsigned module loading is restricted; see man
//!   kernel_lockdown.7` — the lockdown LSM (security/lockdown/lockdown.c,
//!   rate-limited) when `module_sig_check` (kernel/module/signing.c)
//!   refuses a module whose signature is missing or whose key is unknown
//!   under lockdown (Debian locks down when booted with Secure Boot). The
//!   module is not named: reported as [`UNKNOWN_LOCKDOWN`].
//! - `Loading of unsigned module is rejected` (also `module with
//!   unavailable key`, `module with unsupported crypto`) — kernel/module/
//!   signing.c when `module.sig_enforce` refuses it. Not named either:
//!   reported as `unknown module (loading of <what> is rejected)`.
//!
//! A module whose signature is present but does not verify is refused
//! without a message (`-EKEYREJECTED`, only the loader sees it), and the
//! ring buffer may have wrapped: the list is what the log still shows.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// What an attempt the kernel refused under lockdown without naming the
/// module is reported as.
pub const UNKNOWN_LOCKDOWN: &str = "unknown module (unsigned module loading is restricted)";

/// The most `/dev/kmsg` records read.
pub const MAX_KMSG_RECORDS: usize = 20_000;

/// The most bytes of kernel log read.
pub const MAX_KMSG_BYTES: usize = 4 << 20;

/// The most module names reported.
pub const MAX_UNTRUSTED_MODULES: usize = 256;

/// One read of `/dev/kmsg` returns one record and fails with EINVAL if the
/// buffer is smaller (records are at most `CONSOLE_EXT_LOG_MAX`, 8 KiB).
const RECORD_BUFFER: usize = 8192;

/// The longest module name (`MODULE_NAME_LEN` less the NUL on 64-bit).
const MAX_MODULE_NAME: usize = 55;

/// `O_NONBLOCK`: the generic Linux value on the architectures listed;
/// elsewhere unknown, and the kernel log is not read (a blocking read would
/// wait for the next message).
const O_NONBLOCK: Option<i32> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "loongarch64"
)) {
    Some(0o4000)
} else {
    None
};

/// Reads the kernel log from `path` (`/dev/kmsg`) from its oldest record,
/// non-blocking: one record per read until EAGAIN (or EOF, for a plain
/// file), at most [`MAX_KMSG_RECORDS`] reads and [`MAX_KMSG_BYTES`]. A
/// record overwritten while reading (EPIPE) is skipped. Empty if it cannot
/// be opened (no such file, EPERM under `dmesg_restrict` without
/// CAP_SYSLOG): the log is best effort.
pub fn read_kernel_log(path: &Path) -> Vec<u8> {
    let Some(nonblock) = O_NONBLOCK else {
        return Vec::new();
    };
    let Ok(mut file) = OpenOptions::new()
        .read(true)
        .custom_flags(nonblock)
        .open(path)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; RECORD_BUFFER];
    for _ in 0..MAX_KMSG_RECORDS {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let Some(record) = buf.get(..n) else { break };
                if out.len().saturating_add(n) > MAX_KMSG_BYTES {
                    break;
                }
                out.extend_from_slice(record);
            }
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::BrokenPipe) => {}
            // WouldBlock: everything is read. EINVAL (a record larger than
            // the buffer) or anything else: stop with what was read.
            Err(_) => break,
        }
    }
    out
}

/// The message of a kernel log line: without `/dev/kmsg`'s
/// `<prio>,<seq>,<usec>,<flags>[,...];` prefix or `dmesg`'s
/// `[<seconds>] ` timestamp. `None` for a `/dev/kmsg` continuation line
/// (` KEY=value`).
fn message(line: &str) -> Option<&str> {
    if line.starts_with(' ') {
        return None;
    }
    if let Some((head, rest)) = line.split_once(';') {
        let mut fields = head.split(',');
        let numeric = |f: Option<&str>| {
            f.is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        };
        if numeric(fields.next()) && numeric(fields.next()) && numeric(fields.next()) {
            return Some(rest);
        }
    }
    if let Some(rest) = line.strip_prefix('[') {
        if let Some((stamp, rest)) = rest.split_once("] ") {
            if stamp
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b' ')
            {
                return Some(rest);
            }
        }
    }
    Some(line)
}

fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_MODULE_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What one message says about a module, if anything.
fn untrusted_module(msg: &str) -> Option<String> {
    const TAINTED: &str = ": module verification failed: ";
    if let Some((before, _)) = msg.split_once(TAINTED) {
        let name = before.rsplit(' ').next().unwrap_or(before);
        return is_module_name(name).then(|| name.to_owned());
    }
    if msg.starts_with("Lockdown: ") && msg.contains(": unsigned module loading is restricted") {
        return Some(UNKNOWN_LOCKDOWN.to_owned());
    }
    let what = msg
        .trim_end()
        .strip_prefix("Loading of ")?
        .strip_suffix(" is rejected")?;
    (what.contains("module")
        && what.len() <= 64
        && what.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' '))
    .then(|| format!("unknown module (loading of {what} is rejected)"))
}

/// The modules the kernel refused or flagged for a failed or missing
/// signature, from kernel log lines (`/dev/kmsg` records, `dmesg` lines or
/// bare messages): each once, in the order first logged, at most
/// [`MAX_UNTRUSTED_MODULES`]. See the module docs for the messages.
pub fn untrusted_modules<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        let Some(found) = message(line).and_then(untrusted_module) else {
            continue;
        };
        if !out.contains(&found) {
            if out.len() >= MAX_UNTRUSTED_MODULES {
                break;
            }
            out.push(found);
        }
    }
    out
}

/// [`untrusted_modules`] of the kernel log at `path` ([`read_kernel_log`]).
pub fn read_untrusted_modules(path: &Path) -> Vec<String> {
    let log = read_kernel_log(path);
    untrusted_modules(String::from_utf8_lossy(&log).lines())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A 6.1 guest's `/dev/kmsg`: an unsigned module loaded without
    /// lockdown, two refused under lockdown, one under sig_enforce, and
    /// the noise around them.
    const KMSG: &str = "\
6,0,0,-;Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)
5,412,1203311,-;integrity: Loaded X.509 cert 'Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1'
5,498,1882013,-;Lockdown: swapper/0: hibernation is restricted; see man kernel_lockdown.7
4,731,4120551,-;hello: loading out-of-tree module taints kernel.
5,732,4120607,-;hello: module verification failed: signature and/or required key missing - tainting kernel
 SUBSYSTEM=module
 DEVICE=+module:hello
5,733,5011920,-;Lockdown: insmod: unsigned module loading is restricted; see man kernel_lockdown.7
5,734,5210044,-;Lockdown: modprobe: unsigned module loading is restricted; see man kernel_lockdown.7
5,735,6400001,-;Loading of unsigned module is rejected
5,736,6400002,-;Loading of module with unavailable key is rejected
6,737,7000000,-;virtio_net virtio1 enp0s2: renamed from eth0
";

    #[test]
    fn finds_the_kernels_messages() {
        assert_eq!(
            untrusted_modules(KMSG.lines()),
            [
                "hello",
                UNKNOWN_LOCKDOWN,
                "unknown module (loading of unsigned module is rejected)",
                "unknown module (loading of module with unavailable key is rejected)",
            ]
        );
    }

    #[test]
    fn dmesg_lines_and_bare_messages() {
        let lines = [
            "[    4.120607] evil_mod: module verification failed: signature and/or required key missing - tainting kernel",
            "[    5.011920] Lockdown: systemd-udevd: unsigned module loading is restricted; see man kernel_lockdown.7",
            "kvm-intel: module verification failed: signature and/or required key missing - tainting kernel",
            "evil_mod: module verification failed: signature and/or required key missing - tainting kernel",
        ];
        assert_eq!(
            untrusted_modules(lines),
            ["evil_mod", UNKNOWN_LOCKDOWN, "kvm-intel"]
        );
    }

    #[test]
    fn ignores_what_is_not_a_refusal() {
        let lines = [
            "",
            ";",
            "5,1,2,-;",
            "5,1,2,-;Lockdown: swapper/0: hibernation is restricted; see man kernel_lockdown.7",
            "5,1,2,-;Lockdown: insmod: /dev/mem,kmem,port is restricted; see man kernel_lockdown.7",
            "4,3,4,-;hello: loading out-of-tree module taints kernel.",
            // A continuation line never counts.
            " hello: module verification failed: signature and/or required key missing - tainting kernel",
            // Not a module name.
            "6,5,6,-;: module verification failed: x",
            "6,5,6,-;bad/name: module verification failed: x",
            &format!("6,5,6,-;{}: module verification failed: x", "a".repeat(56)),
            "6,7,8,-;Loading of firmware is rejected",
            "6,7,8,-;Loading of unsigned module; rm -rf is rejected",
        ];
        assert_eq!(untrusted_modules(lines), Vec::<String>::new());
    }

    #[test]
    fn bounded_number_of_names() {
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("5,{i},0,-;m{i}: module verification failed: signature and/or required key missing - tainting kernel"))
            .collect();
        let found = untrusted_modules(lines.iter().map(String::as_str));
        assert_eq!(found.len(), MAX_UNTRUSTED_MODULES);
        assert_eq!(found.first().unwrap(), "m0");
    }

    #[test]
    fn reads_a_log_file_and_tolerates_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kmsg");
        assert_eq!(read_kernel_log(&p), Vec::<u8>::new(), "no such file");
        assert!(read_untrusted_modules(&p).is_empty());
        std::fs::write(&p, KMSG).unwrap();
        assert_eq!(read_kernel_log(&p), KMSG.as_bytes());
        assert_eq!(read_untrusted_modules(&p).first().unwrap(), "hello");
        // Bounded: a log larger than the limit is cut.
        let big = "x".repeat(1000) + "\n";
        std::fs::write(&p, big.repeat(MAX_KMSG_BYTES / big.len() + 10)).unwrap();
        assert!(read_kernel_log(&p).len() <= MAX_KMSG_BYTES);
    }

    /// The host's own `/dev/kmsg` where the tests can read it: reading
    /// ends (non-blocking) and never fails, whatever the permissions.
    #[test]
    fn the_real_kmsg_does_not_block() {
        let start = std::time::Instant::now();
        let log = read_kernel_log(Path::new("/dev/kmsg"));
        assert!(log.len() <= MAX_KMSG_BYTES);
        let _ = untrusted_modules(String::from_utf8_lossy(&log).lines());
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
    }
}
