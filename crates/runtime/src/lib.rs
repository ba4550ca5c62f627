//! The trusted-launch VM runtime (IO): realises a VM from a typed spec with
//! QEMU, OVMF (Secure Boot firmware with SMM and secure pflash) and one
//! swtpm vTPM per VM.
//!
//! In progress (issue 6). Here so far: the accelerator probe ([`accel`]),
//! the per-VM vTPM ([`vtpm`]) and the QEMU command line a VM gets
//! ([`qemu`]), which encodes the
//! invariants of `../shared/design/vm-runtime-notes.md`: boot only from
//! the OS disk's ESP with `bootindex=1` (never `-kernel`, which bypasses
//! db), `-nic none`, secure pflash + SMM for Secure Boot.

#![forbid(unsafe_code)]

pub mod accel;
pub mod channel;
pub mod confine;
pub mod console;
pub mod image;
pub mod image_build;
pub mod image_meta;
pub mod initramfs;
pub mod platform;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod spec;
pub mod vm;
pub mod vtpm;
