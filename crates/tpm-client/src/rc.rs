//! TPM 2.0 response codes (TPM 2.0 Part 2 §6.6, Figures 26–27): format 0
//! and format 1, the parameter, handle or session a format-1 error names,
//! and the TSS layer (TSS 2.0 TCTI/RM "response code layer", bits 16–23)
//! that a resource manager may add.

use std::fmt;

/// A `TPM_RC` as returned in a response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode(pub u32);

/// Where a format-1 error points (TPM 2.0 Part 2 §6.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RcLocation {
    /// The error is not tied to one handle, parameter or session.
    Unspecified,
    /// The n-th command parameter (1-based).
    Parameter(u8),
    /// The n-th command handle (1-based).
    Handle(u8),
    /// The n-th authorization session (1-based).
    Session(u8),
}

/// The shape of a response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RcFormat {
    /// `TPM_RC_SUCCESS`.
    Success,
    /// A TPM 1.2 code (format 0, bit 8 clear).
    Tpm12,
    /// A TPM 2.0 format-0 error (`RC_VER1`).
    Error,
    /// A TPM 2.0 format-0 warning (`RC_WARN`): the command may succeed if retried.
    Warning,
    /// A vendor-defined format-0 code.
    Vendor,
    /// A TPM 2.0 format-1 error (`RC_FMT1`), with its location.
    Format1(RcLocation),
}

const RC_FMT1: u32 = 0x080;
const RC_VER1: u32 = 0x100;
const RC_WARN: u32 = 0x900;
const FMT1_BIT: u32 = 0x080;
const VER1_BIT: u32 = 0x100;
const VENDOR_BIT: u32 = 0x400;
const SEVERITY_BIT: u32 = 0x800;
const P_BIT: u32 = 0x040;
const LAYER_MASK: u32 = 0x00ff_0000;

impl ResponseCode {
    /// `TPM_RC_SUCCESS`.
    pub const SUCCESS: Self = Self(0);
    /// `TPM_RC_INITIALIZE`: TPM not initialized by Startup, or already initialized.
    pub const INITIALIZE: Self = Self(RC_VER1);
    /// `TPM_RC_AUTH_UNAVAILABLE`: the authValue or policy is not available for this use.
    pub const AUTH_UNAVAILABLE: Self = Self(RC_VER1 + 0x02F);
    /// `TPM_RC_NV_RANGE`: offset or size outside the NV index.
    pub const NV_RANGE: Self = Self(RC_VER1 + 0x046);
    /// `TPM_RC_NV_LOCKED`: NV access locked.
    pub const NV_LOCKED: Self = Self(RC_VER1 + 0x048);
    /// `TPM_RC_NV_AUTHORIZATION`: wrong kind of authorization for this NV access.
    pub const NV_AUTHORIZATION: Self = Self(RC_VER1 + 0x049);
    /// `TPM_RC_NV_UNINITIALIZED`: the NV index has never been written.
    pub const NV_UNINITIALIZED: Self = Self(RC_VER1 + 0x04A);
    /// `TPM_RC_NV_DEFINED`: the NV index is already defined.
    pub const NV_DEFINED: Self = Self(RC_VER1 + 0x04C);
    /// `TPM_RC_ATTRIBUTES`: attributes inconsistent with the command.
    pub const ATTRIBUTES: Self = Self(RC_FMT1 + 0x002);
    /// `TPM_RC_VALUE`: a value is out of range.
    pub const VALUE: Self = Self(RC_FMT1 + 0x004);
    /// `TPM_RC_HANDLE`: the handle is not loaded or not defined.
    pub const HANDLE: Self = Self(RC_FMT1 + 0x00B);
    /// `TPM_RC_AUTH_FAIL`: authorization failure.
    pub const AUTH_FAIL: Self = Self(RC_FMT1 + 0x00E);
    /// `TPM_RC_SIZE`: structure or parameter size is wrong.
    pub const SIZE: Self = Self(RC_FMT1 + 0x015);
    /// `TPM_RC_POLICY_FAIL`: the policy session's digest does not match the object's policy.
    pub const POLICY_FAIL: Self = Self(RC_FMT1 + 0x01D);
    /// `TPM_RC_INTEGRITY`: integrity check failed (e.g. a credential made for another key name).
    pub const INTEGRITY: Self = Self(RC_FMT1 + 0x01F);
    /// `TPM_RC_BAD_AUTH`: authorization failure without dictionary-attack implications.
    pub const BAD_AUTH: Self = Self(RC_FMT1 + 0x022);
    /// `TPM_RC_RETRY`: the TPM was busy; retry the command.
    pub const RETRY: Self = Self(RC_WARN + 0x022);

    /// The raw value.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// The TSS layer (bits 16–23); 0 for codes from the TPM itself.
    pub fn layer(self) -> u8 {
        u8::try_from((self.0 & LAYER_MASK) >> 16).unwrap_or(u8::MAX)
    }

    /// The format and, for format 1, the location.
    pub fn format(self) -> RcFormat {
        let v = self.0 & 0xffff;
        if v == 0 {
            return RcFormat::Success;
        }
        if v & FMT1_BIT != 0 {
            let n = u8::try_from((v >> 8) & 0x7).unwrap_or(0);
            let location = if v & P_BIT != 0 {
                RcLocation::Parameter(u8::try_from((v >> 8) & 0xf).unwrap_or(0))
            } else if n == 0 {
                RcLocation::Unspecified
            } else if v & SEVERITY_BIT != 0 {
                RcLocation::Session(n)
            } else {
                RcLocation::Handle(n)
            };
            return RcFormat::Format1(location);
        }
        if v & VER1_BIT == 0 {
            RcFormat::Tpm12
        } else if v & VENDOR_BIT != 0 {
            RcFormat::Vendor
        } else if v & SEVERITY_BIT != 0 {
            RcFormat::Warning
        } else {
            RcFormat::Error
        }
    }

    /// Where a format-1 error points; `Unspecified` otherwise.
    pub fn location(self) -> RcLocation {
        match self.format() {
            RcFormat::Format1(loc) => loc,
            _ => RcLocation::Unspecified,
        }
    }

    /// The code with the location bits removed (layer kept), comparable
    /// with the associated constants: `rc.base() == ResponseCode::POLICY_FAIL`.
    pub fn base(self) -> Self {
        match self.format() {
            RcFormat::Format1(_) => Self((self.0 & LAYER_MASK) | FMT1_BIT | (self.0 & 0x3f)),
            _ => self,
        }
    }

    /// The error number: bits 0–5 (format 1) or 0–6 (format 0).
    pub fn number(self) -> u8 {
        let mask = match self.format() {
            RcFormat::Format1(_) => 0x3f,
            _ => 0x7f,
        };
        u8::try_from(self.0 & mask).unwrap_or(0)
    }

    /// The specification's name, e.g. `"TPM_RC_POLICY_FAIL"`, for codes from
    /// the TPM itself (layer 0).
    pub fn name(self) -> Option<&'static str> {
        if self.layer() != 0 {
            return None;
        }
        let n = self.number();
        match self.format() {
            RcFormat::Success => Some("TPM_RC_SUCCESS"),
            RcFormat::Format1(_) => fmt1_name(n),
            RcFormat::Error => ver1_name(n),
            RcFormat::Warning => warn_name(n),
            RcFormat::Tpm12 | RcFormat::Vendor => None,
        }
    }
}

fn fmt1_name(n: u8) -> Option<&'static str> {
    Some(match n {
        0x01 => "TPM_RC_ASYMMETRIC",
        0x02 => "TPM_RC_ATTRIBUTES",
        0x03 => "TPM_RC_HASH",
        0x04 => "TPM_RC_VALUE",
        0x05 => "TPM_RC_HIERARCHY",
        0x07 => "TPM_RC_KEY_SIZE",
        0x08 => "TPM_RC_MGF",
        0x09 => "TPM_RC_MODE",
        0x0A => "TPM_RC_TYPE",
        0x0B => "TPM_RC_HANDLE",
        0x0C => "TPM_RC_KDF",
        0x0D => "TPM_RC_RANGE",
        0x0E => "TPM_RC_AUTH_FAIL",
        0x0F => "TPM_RC_NONCE",
        0x10 => "TPM_RC_PP",
        0x12 => "TPM_RC_SCHEME",
        0x15 => "TPM_RC_SIZE",
        0x16 => "TPM_RC_SYMMETRIC",
        0x17 => "TPM_RC_TAG",
        0x18 => "TPM_RC_SELECTOR",
        0x1A => "TPM_RC_INSUFFICIENT",
        0x1B => "TPM_RC_SIGNATURE",
        0x1C => "TPM_RC_KEY",
        0x1D => "TPM_RC_POLICY_FAIL",
        0x1F => "TPM_RC_INTEGRITY",
        0x20 => "TPM_RC_TICKET",
        0x21 => "TPM_RC_RESERVED_BITS",
        0x22 => "TPM_RC_BAD_AUTH",
        0x23 => "TPM_RC_EXPIRED",
        0x24 => "TPM_RC_POLICY_CC",
        0x25 => "TPM_RC_BINDING",
        0x26 => "TPM_RC_CURVE",
        0x27 => "TPM_RC_ECC_POINT",
        _ => return None,
    })
}

fn ver1_name(n: u8) -> Option<&'static str> {
    Some(match n {
        0x00 => "TPM_RC_INITIALIZE",
        0x01 => "TPM_RC_FAILURE",
        0x03 => "TPM_RC_SEQUENCE",
        0x0B => "TPM_RC_PRIVATE",
        0x19 => "TPM_RC_HMAC",
        0x20 => "TPM_RC_DISABLED",
        0x21 => "TPM_RC_EXCLUSIVE",
        0x24 => "TPM_RC_AUTH_TYPE",
        0x25 => "TPM_RC_AUTH_MISSING",
        0x26 => "TPM_RC_POLICY",
        0x27 => "TPM_RC_PCR",
        0x28 => "TPM_RC_PCR_CHANGED",
        0x2D => "TPM_RC_UPGRADE",
        0x2E => "TPM_RC_TOO_MANY_CONTEXTS",
        0x2F => "TPM_RC_AUTH_UNAVAILABLE",
        0x30 => "TPM_RC_REBOOT",
        0x31 => "TPM_RC_UNBALANCED",
        0x42 => "TPM_RC_COMMAND_SIZE",
        0x43 => "TPM_RC_COMMAND_CODE",
        0x44 => "TPM_RC_AUTHSIZE",
        0x45 => "TPM_RC_AUTH_CONTEXT",
        0x46 => "TPM_RC_NV_RANGE",
        0x47 => "TPM_RC_NV_SIZE",
        0x48 => "TPM_RC_NV_LOCKED",
        0x49 => "TPM_RC_NV_AUTHORIZATION",
        0x4A => "TPM_RC_NV_UNINITIALIZED",
        0x4B => "TPM_RC_NV_SPACE",
        0x4C => "TPM_RC_NV_DEFINED",
        0x50 => "TPM_RC_BAD_CONTEXT",
        0x51 => "TPM_RC_CPHASH",
        0x52 => "TPM_RC_PARENT",
        0x53 => "TPM_RC_NEEDS_TEST",
        0x54 => "TPM_RC_NO_RESULT",
        0x55 => "TPM_RC_SENSITIVE",
        _ => return None,
    })
}

fn warn_name(n: u8) -> Option<&'static str> {
    Some(match n {
        0x01 => "TPM_RC_CONTEXT_GAP",
        0x02 => "TPM_RC_OBJECT_MEMORY",
        0x03 => "TPM_RC_SESSION_MEMORY",
        0x04 => "TPM_RC_MEMORY",
        0x05 => "TPM_RC_SESSION_HANDLES",
        0x06 => "TPM_RC_OBJECT_HANDLES",
        0x07 => "TPM_RC_LOCALITY",
        0x08 => "TPM_RC_YIELDED",
        0x09 => "TPM_RC_CANCELED",
        0x0A => "TPM_RC_TESTING",
        0x10..=0x16 => "TPM_RC_REFERENCE_Hx",
        0x18..=0x1E => "TPM_RC_REFERENCE_Sx",
        0x20 => "TPM_RC_NV_RATE",
        0x21 => "TPM_RC_LOCKOUT",
        0x22 => "TPM_RC_RETRY",
        0x23 => "TPM_RC_NV_UNAVAILABLE",
        _ => return None,
    })
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}")?,
            None => write!(f, "TPM_RC {:#x}", self.base().0)?,
        }
        match self.location() {
            RcLocation::Unspecified => {}
            RcLocation::Parameter(n) => write!(f, " (parameter {n})")?,
            RcLocation::Handle(n) => write!(f, " (handle {n})")?,
            RcLocation::Session(n) => write!(f, " (session {n})")?,
        }
        if self.layer() != 0 {
            write!(f, " [layer {}]", self.layer())?;
        }
        write!(f, " [{:#010x}]", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_format1_locations() {
        // TPM_RC_POLICY_FAIL on session 1: 0x09D | S | (1 << 8).
        let rc = ResponseCode(0x99D);
        assert_eq!(rc.format(), RcFormat::Format1(RcLocation::Session(1)));
        assert_eq!(rc.base(), ResponseCode::POLICY_FAIL);
        assert_eq!(rc.name(), Some("TPM_RC_POLICY_FAIL"));
        assert_eq!(
            rc.to_string(),
            "TPM_RC_POLICY_FAIL (session 1) [0x0000099d]"
        );

        // TPM_RC_INTEGRITY on parameter 1.
        let rc = ResponseCode(0x1DF);
        assert_eq!(rc.location(), RcLocation::Parameter(1));
        assert_eq!(rc.base(), ResponseCode::INTEGRITY);

        // TPM_RC_HANDLE on handle 1.
        let rc = ResponseCode(0x18B);
        assert_eq!(rc.location(), RcLocation::Handle(1));
        assert_eq!(rc.base(), ResponseCode::HANDLE);

        // TPM_RC_VALUE on parameter 15 (four-bit parameter number).
        assert_eq!(ResponseCode(0xFC4).location(), RcLocation::Parameter(15));
    }

    #[test]
    fn decodes_format0() {
        assert_eq!(ResponseCode(0x100).format(), RcFormat::Error);
        assert_eq!(ResponseCode(0x100).name(), Some("TPM_RC_INITIALIZE"));
        assert_eq!(ResponseCode(0x922).format(), RcFormat::Warning);
        assert_eq!(ResponseCode(0x922).name(), Some("TPM_RC_RETRY"));
        assert_eq!(ResponseCode(0x14C), ResponseCode::NV_DEFINED);
        assert_eq!(ResponseCode(0x14C).name(), Some("TPM_RC_NV_DEFINED"));
        assert_eq!(ResponseCode(0x0001).format(), RcFormat::Tpm12);
        assert_eq!(ResponseCode(0x0500).format(), RcFormat::Vendor);
        assert_eq!(ResponseCode(0).format(), RcFormat::Success);
    }

    #[test]
    fn layered_codes_keep_the_layer() {
        // A resource-manager (layer 11) TPM_RC_HANDLE.
        let rc = ResponseCode(0x000b_018b);
        assert_eq!(rc.layer(), 11);
        assert_eq!(rc.name(), None);
        assert_eq!(rc.base(), ResponseCode(0x000b_008b));
        assert!(rc.to_string().contains("[layer 11]"));
    }
}
