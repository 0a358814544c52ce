//! "Now" and the formats time is stored and shown in, in one place.
//!
//! The wire format is RFC 3339 in UTC with milliseconds (`2026-03-09T14:05:00.123Z`);
//! time-ordered sorted sets score by Unix milliseconds; per-day keys use the UTC day
//! (`YYYY-MM-DD`). Code that must be tested at a chosen instant takes a
//! `DateTime<Utc>` or milliseconds as an argument and calls these only at the edge.

use chrono::{DateTime, SecondsFormat, Utc};

/// The format of a [`day_key`], for parsing one back (`NaiveDate::parse_from_str`).
pub const DAY_FORMAT: &str = "%Y-%m-%d";

/// Milliseconds since the epoch, now (scores of time-ordered sorted sets).
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Now, in the format every stored and returned timestamp uses.
pub fn now_rfc3339() -> String {
    rfc3339(&Utc::now())
}

/// `t` in the one timestamp format on the wire: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stored millisecond timestamp in the API's format (the epoch if out of range).
pub fn rfc3339_from_ms(ms: i64) -> String {
    rfc3339(&DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// The UTC day `t` falls on, as `YYYY-MM-DD`: the day part of per-day keys.
pub fn day_key(t: &DateTime<Utc>) -> String {
    t.format(DAY_FORMAT).to_string()
}

/// Today's [`day_key`] (UTC).
pub fn today() -> String {
    day_key(&Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_exactly_three_fraction_digits() {
        let t = DateTime::from_timestamp_millis(1_773_064_800_120).unwrap();
        assert_eq!(rfc3339(&t), "2026-03-09T14:00:00.120Z");
    }

    #[test]
    fn milliseconds_format_like_the_instant_they_name() {
        assert_eq!(rfc3339_from_ms(1_773_064_800_120), "2026-03-09T14:00:00.120Z");
        assert_eq!(rfc3339_from_ms(i64::MAX), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_day_key_is_the_utc_day() {
        let late = DateTime::parse_from_rfc3339("2026-03-09T23:59:59.999-05:00")
            .unwrap()
            .to_utc();
        assert_eq!(day_key(&late), "2026-03-10");
    }
}
