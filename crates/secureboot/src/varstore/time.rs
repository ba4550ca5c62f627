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
    Ok(EfiTime::from_date_time(
        cert.tbs_certificate.validity.not_before.to_date_time(),
    ))
}

impl EfiTime {
    /// A UTC date and time.
    pub fn from_date_time(t: der::DateTime) -> Self {
        EfiTime::utc(
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minutes(),
            t.seconds(),
        )
    }

    /// Seconds since the Unix epoch (UTC), e.g. the caller's clock.
    pub fn from_unix_secs(secs: u64) -> Result<Self, VarStoreError> {
        der::DateTime::from_unix_duration(core::time::Duration::from_secs(secs))
            .map(Self::from_date_time)
            .map_err(|_| VarStoreError::BadTime(format!("{secs} s after 1970")))
    }
}

/// Parses what [`EfiTime`]'s `Display` prints for a UTC time:
/// `YYYY-MM-DD HH:MM:SS` (a `T` may separate date and time, a `Z` may end
/// it), checked to be a real date.
impl core::str::FromStr for EfiTime {
    type Err = VarStoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || VarStoreError::BadTime(text.to_owned());
        let (date, time) = text.trim().split_once([' ', 'T']).ok_or_else(bad)?;
        let mut d = date.split('-').map(str::parse::<u16>);
        let mut t = time.trim_end_matches('Z').split(':').map(str::parse::<u8>);
        let mut next_d = || d.next().and_then(Result::ok).ok_or_else(bad);
        let (year, month, day) = (next_d()?, next_d()?, next_d()?);
        let mut next_t = || t.next().and_then(Result::ok).ok_or_else(bad);
        let (hour, minute, second) = (next_t()?, next_t()?, next_t()?);
        if d.next().is_some() || t.next().is_some() {
            return Err(bad());
        }
        let month = u8::try_from(month).map_err(|_| bad())?;
        let day = u8::try_from(day).map_err(|_| bad())?;
        der::DateTime::new(year, month, day, hour, minute, second)
            .map(Self::from_date_time)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_real_dates_only() {
        let t: EfiTime = "2026-11-01 10:00:00".parse().unwrap();
        assert_eq!(t, EfiTime::utc(2026, 11, 1, 10, 0, 0));
        assert_eq!(t.to_string(), "2026-11-01 10:00:00");
        assert_eq!("2026-11-01T10:00:00Z".parse::<EfiTime>().unwrap(), t);
        for bad in [
            "",
            "2026-11-01",
            "2026-02-30 00:00:00",
            "2026-13-01 00:00:00",
            "2026-11-01 24:00:00",
            "2026-11-01 10:00",
            "2026-11-01 10:00:00:00",
            "1969-12-31 23:59:59",
            "x-11-01 10:00:00",
        ] {
            assert!(bad.parse::<EfiTime>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unix_seconds() {
        assert_eq!(
            EfiTime::from_unix_secs(0).unwrap(),
            EfiTime::utc(1970, 1, 1, 0, 0, 0)
        );
        assert_eq!(
            EfiTime::from_unix_secs(1_795_435_200).unwrap(),
            EfiTime::utc(2026, 11, 23, 12, 0, 0)
        );
    }
}
