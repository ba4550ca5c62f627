//! The trusted-launch VM runtime (IO): realises a VM from a typed spec with
//! QEMU, OVMF (Secure Boot firmware with SMM and secure pflash) and one
//! swtpm vTPM per VM.
//!
//! The QEMU command line a VM gets ([`qemu`]) encodes the invariants of
//! `../shared/design/vm-runtime-notes.md`: boot only from the OS disk's
//! ESP with `bootindex=1` (never `-kernel`, which bypasses db), `-nic
//! none`, secure pflash + SMM for Secure Boot. A runtime running as root
//! confines every VM ([`confine`]): QEMU and swtpm run under the VM's own
//! ids, without capabilities, QEMU in its seccomp sandbox, each handed
//! only its VM's files as descriptors. Private keys at rest are sealed
//! under the platform's master key ([`platform`]). The accelerator probe
//! is [`accel`], the host's readiness [`doctor`], the per-VM vTPM [`vtpm`], VMs and their lifecycle [`vm`].

#![forbid(unsafe_code)]

pub mod accel;
pub mod agent_package;
pub mod channel;
pub mod confine;
pub mod console;
pub mod debian_image;
pub mod disk;
pub mod doctor;
pub mod image;
pub mod image_build;
pub mod image_meta;
pub mod import;
pub mod initramfs;
pub mod platform;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod spec;
pub mod vm;
pub mod vtpm;
