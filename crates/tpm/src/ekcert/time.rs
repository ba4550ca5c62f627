//! Certificate time: whole seconds since the Unix epoch, UTC.

use core::fmt;
use core::time::Duration;

use der::asn1::{GeneralizedTime, UtcTime};
use der::DateTime;
use x509_cert::time::Time;

/// A point in time as certificates carry it: whole seconds since
/// 1970-01-01T00:00:00Z.
///
/// The crate reads no clock: callers pass "now" as a `UnixTime` (for example
/// `UnixTime::from_secs(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    /// The latest time X.509 can express, 9999-12-31T23:59:59Z: the
    /// `notAfter` of a certificate that does not expire (RFC 5280 §4.1.2.5).
    pub const NO_EXPIRY: UnixTime = UnixTime(253_402_300_799);

    /// The time `secs` seconds after the Unix epoch.
    pub const fn from_secs(secs: u64) -> Self {
        UnixTime(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// Converts a decoded certificate time.
    pub(crate) fn from_x509(time: &Time) -> Self {
        UnixTime(time.to_unix_duration().as_secs())
    }

    /// Encodes as RFC 5280 requires: UTCTime through 2049, GeneralizedTime
    /// from 2050. `None` if the time is past [`UnixTime::NO_EXPIRY`].
    pub(crate) fn to_x509(self) -> Option<Time> {
        let date = DateTime::from_unix_duration(Duration::from_secs(self.0)).ok()?;
        if date.year() <= UtcTime::MAX_YEAR {
            UtcTime::from_date_time(date).ok().map(Time::UtcTime)
        } else {
            Some(Time::GeneralTime(GeneralizedTime::from_date_time(date)))
        }
    }
}

impl fmt::Display for UnixTime {
    /// RFC 3339 (`2026-11-23T11:34:23Z`), or the raw seconds past year 9999.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::from_unix_duration(Duration::from_secs(self.0)) {
            Ok(date) => write!(f, "{date}"),
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_utc_before_2050_and_generalized_after() {
        let t = UnixTime::from_secs(1_700_000_000);
        assert!(matches!(t.to_x509(), Some(Time::UtcTime(_))));
        assert_eq!(UnixTime::from_x509(&t.to_x509().unwrap()), t);
        assert!(matches!(
            UnixTime::NO_EXPIRY.to_x509(),
            Some(Time::GeneralTime(_))
        ));
        assert_eq!(UnixTime::from_secs(u64::MAX).to_x509(), None);
        assert_eq!(UnixTime::NO_EXPIRY.to_string(), "9999-12-31T23:59:59Z");
    }
}
