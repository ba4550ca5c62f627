//! EFI_TIME (UEFI 2.10 §8.3) as stored in authenticated variable headers,
//! and a certificate's notBefore in that form.

use super::VarStoreError;

/// EFI_TIME (UEFI 2.10 §8.3), 16 bytes; all zero when unset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EfiTime {
    /// Year (1900-9999).
    pub year: u16,
    /// Month (1-12).
    pub month: u8,
    /// Day (1-31).
    pub day: u8,
    /// Hour.
    pub hour: u8,
    /// Minute.
    pub minute: u8,
    /// Second.
    pub second: u8,
    /// Pad1.
    pub pad1: u8,
    /// Nanosecond.
    pub nanosecond: u32,
    /// TimeZone (minutes from UTC, 0x07FF unspecified).
    pub timezone: i16,
    /// Daylight.
    pub daylight: u8,
    /// Pad2.
    pub pad2: u8,
}

/// `YYYY-MM-DD HH:MM:SS`, with `.NNNNNNNNN` when nanoseconds are set and
/// the time zone (minutes from UTC) when it is not UTC (0 or 2047,
/// EFI_UNSPECIFIED_TIMEZONE).
impl core::fmt::Display for EfiTime {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        if self.nanosecond != 0 {
            write!(f, ".{:09}", self.nanosecond)?;
        }
        if self.timezone != 0 && self.timezone != 2047 {
            write!(f, " (UTC{:+} min)", self.timezone)?;
        }
        Ok(())
    }
}

impl EfiTime {
    /// A UTC time with zero nanoseconds.
    pub const fn utc(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Self {
        EfiTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            pad1: 0,
            nanosecond: 0,
            timezone: 0,
            daylight: 0,
            pad2: 0,
        }
    }

    /// virt-fw-vars' `initial_ts`: 2010-01-01 00:00:00 UTC.
    pub const INITIAL: EfiTime = EfiTime::utc(2010, 1, 1, 0, 0, 0);

    /// True when all fields are zero (no timestamp).
    pub fn is_zero(&self) -> bool {
        *self == EfiTime::default()
    }

    /// Decodes 16 bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let [y0, y1, month, day, hour, minute, second, pad1, n0, n1, n2, n3, t0, t1, daylight, pad2] =
            b;
        EfiTime {
            year: u16::from_le_bytes([y0, y1]),
            month,
            day,
            hour,
            minute,
            second,
            pad1,
            nanosecond: u32::from_le_bytes([n0, n1, n2, n3]),
            timezone: i16::from_le_bytes([t0, t1]),
            daylight,
            pad2,
        }
    }

    /// Encodes 16 bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let [y0, y1] = self.year.to_le_bytes();
        let [n0, n1, n2, n3] = self.nanosecond.to_le_bytes();
        let [t0, t1] = self.timezone.to_le_bytes();
        [
            y0,
            y1,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.pad1,
            n0,
            n1,
            n2,
            n3,
            t0,
            t1,
            self.daylight,
            self.pad2,
        ]
    }

    pub(crate) fn key(&self) -> (u16, u8, u8, u8, u8, u8, u32) {
        (
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.nanosecond,
        )
    }
}

/// The notBefore of a DER X.509 certificate as an EFI_TIME (UTC).
pub fn cert_not_before(der: &[u8]) -> Result<EfiTime, VarStoreError> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| VarStoreError::BadCertificate(e.to_string()))?;
    let t = cert.tbs_certificate.validity.not_before.to_date_time();
    Ok(EfiTime::utc(
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minutes(),
        t.seconds(),
    ))
}
