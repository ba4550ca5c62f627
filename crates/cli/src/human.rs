//! Times for people: every date the command line prints in its text output
//! comes from here, as a date and time in UTC, never as Unix seconds.
//! Machine output (`--json`, the API's answers passed through) does not
//! come here: it keeps the numbers.

use serde_json::Value;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::UtcDateTime;

/// RFC 3339's date and time with the space the RFC allows between them
/// for readability, and the zone spelled out.
const DATE: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

/// A Unix time (seconds) as people read it: `2026-12-07 09:25:33 UTC`.
/// A time no calendar date holds (outside the years -9999 to 9999) comes
/// out as the number, saying so, rather than as a panic or a wrong date.
pub(crate) fn date(unix: i64) -> String {
    UtcDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(DATE).ok())
        .unwrap_or_else(|| out_of_range(unix))
}

/// [`date`] for an unsigned count of seconds.
pub(crate) fn date_u64(unix: u64) -> String {
    i64::try_from(unix).map_or_else(|_| out_of_range(unix), date)
}

/// A time as the API gives it (Unix seconds in a JSON number) as people
/// read it; `absent` where there is none (null or missing). A value that is
/// not whole seconds is printed as it came.
pub(crate) fn when(v: &Value, absent: &str) -> String {
    match v {
        Value::Null => absent.to_owned(),
        Value::String(s) => s.clone(),
        _ => match (v.as_i64(), v.as_u64()) {
            (Some(t), _) => date(t),
            (None, Some(t)) => date_u64(t),
            (None, None) => v.to_string(),
        },
    }
}

fn out_of_range(unix: impl std::fmt::Display) -> String {
    format!("{unix} (Unix time, outside the dates this prints)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_utc_with_the_zone_named() {
        assert_eq!(date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date(1_796_635_533), "2026-12-07 09:25:33 UTC");
        // A leap day.
        assert_eq!(date(1_709_210_096), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn times_before_1970_are_dates_too() {
        assert_eq!(date(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(date(-86_400), "1969-12-31 00:00:00 UTC");
    }

    #[test]
    fn the_edges_of_the_calendar() {
        // X.509's "no expiry" (RFC 5280 §4.1.2.5), the last second this prints.
        assert_eq!(date(253_402_300_799), "9999-12-31 23:59:59 UTC");
        assert_eq!(date(-377_705_116_800), "-9999-01-01 00:00:00 UTC");
    }

    #[test]
    fn huge_and_tiny_values_come_out_as_numbers() {
        for t in [253_402_300_800, i64::MAX, -377_705_116_801, i64::MIN] {
            assert_eq!(
                date(t),
                format!("{t} (Unix time, outside the dates this prints)")
            );
        }
        assert_eq!(
            date_u64(u64::MAX),
            format!("{} (Unix time, outside the dates this prints)", u64::MAX)
        );
        assert_eq!(date_u64(1_796_635_533), "2026-12-07 09:25:33 UTC");
    }

    #[test]
    fn api_values() {
        assert_eq!(
            when(&json!(1_796_635_533), "never"),
            "2026-12-07 09:25:33 UTC"
        );
        assert_eq!(when(&json!(-1), "never"), "1969-12-31 23:59:59 UTC");
        assert_eq!(when(&Value::Null, "never"), "never");
        assert_eq!(when(&json!({})["missing"], "-"), "-");
        assert_eq!(
            when(&json!(u64::MAX), "never"),
            format!("{} (Unix time, outside the dates this prints)", u64::MAX)
        );
        assert_eq!(when(&json!(1.5), "never"), "1.5");
        assert_eq!(
            when(&json!("2026-12-07T09:25:33Z"), "never"),
            "2026-12-07T09:25:33Z"
        );
    }
}
