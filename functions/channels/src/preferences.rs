//! A user's channel preferences: per kind and channel on/off, quiet hours in their
//! IANA time zone, and a verified phone number. Pure: parsing, validation, defaults
//! and time arithmetic; [`crate::store`] keeps them in Redis.
//!
//! Stored as one hash per user (`keys::channel_preferences`), one field per choice, so
//! an unsubscribe or a verification changes one field and nothing else:
//! `email:<KIND>` and `sms:<KIND>` (`1`/`0`, absent = the default), `quietHours`
//! (JSON `{start, end, timeZone}`), `phone` (the verified E.164 number).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use devconnect::AppError;
use jiff::{
    tz::{AmbiguousOffset, Offset, TimeZone},
    Timestamp,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::kinds::{self, Kind};

/// Hash field of one kind's email choice.
pub fn email_field(kind: Kind) -> String {
    format!("email:{}", kind.as_str())
}

/// Hash field of one kind's SMS choice.
pub fn sms_field(kind: Kind) -> String {
    format!("sms:{}", kind.as_str())
}

/// Hash field of the quiet hours JSON.
pub const QUIET_HOURS_FIELD: &str = "quietHours";

/// Hash field of the verified phone number.
pub const PHONE_FIELD: &str = "phone";

/// A daily window, in the user's time zone, in which no SMS is sent (they wait for its end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuietHours {
    start: NaiveTime,
    end: NaiveTime,
    time_zone: TimeZone,
}

/// Quiet hours as they travel: `{"start": "22:00", "end": "07:00", "timeZone": "Europe/Paris"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHoursJson {
    /// `HH:MM`, 24 h.
    pub start: String,
    /// `HH:MM`, 24 h; before `start` means the window crosses midnight.
    pub end: String,
    /// IANA name, e.g. `Europe/Paris`.
    pub time_zone: String,
}

fn parse_hhmm(field: &str, raw: &str) -> Result<NaiveTime, AppError> {
    let ok = raw.len() == 5 && raw.as_bytes()[2] == b':';
    ok.then(|| NaiveTime::parse_from_str(raw, "%H:%M").ok())
        .flatten()
        .ok_or_else(|| AppError::Validation(format!("quietHours.{field} must be HH:MM (24 h), e.g. 22:00")))
}

impl QuietHours {
    /// Validates quiet hours: times `HH:MM`, a known IANA zone, a window that is not empty.
    pub fn parse(raw: &QuietHoursJson) -> Result<Self, AppError> {
        let start = parse_hhmm("start", &raw.start)?;
        let end = parse_hhmm("end", &raw.end)?;
        if start == end {
            return Err(AppError::Validation("quietHours.start and end must differ".into()));
        }
        let time_zone = TimeZone::get(&raw.time_zone).map_err(|_| {
            AppError::Validation(format!(
                "quietHours.timeZone must be an IANA time zone, e.g. Europe/Paris (got {:?})",
                raw.time_zone
            ))
        })?;
        Ok(Self { start, end, time_zone })
    }

    /// The JSON form (stored and returned).
    pub fn to_json(&self) -> QuietHoursJson {
        QuietHoursJson {
            start: self.start.format("%H:%M").to_string(),
            end: self.end.format("%H:%M").to_string(),
            time_zone: self.time_zone.iana_name().unwrap_or("UTC").to_string(),
        }
    }

    /// The user's time zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }

    /// If `at` falls inside the window, the instant it ends; `None` outside it.
    pub fn window_end(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = local_datetime(&self.time_zone, at);
        let t = local.time();
        let inside = if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        };
        if !inside {
            return None;
        }
        let day = if t < self.end {
            local.date()
        } else {
            local.date() + Duration::days(1)
        };
        Some(local_instant(&self.time_zone, day, self.end))
    }
}

/// The wall clock in `tz` at `at`.
fn local_datetime(tz: &TimeZone, at: DateTime<Utc>) -> NaiveDateTime {
    let offset = Timestamp::from_second(at.timestamp()).map_or(Offset::UTC, |ts| tz.to_offset(ts));
    at.naive_utc() + Duration::seconds(offset.seconds().into())
}

/// `day` at `time` in `tz`, as UTC: the earlier instant when the clock repeats, the first
/// instant after the gap when it skips (a window ending at 02:30 on a spring-forward
/// night ends at 03:00).
fn local_instant(tz: &TimeZone, day: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut naive = day.and_time(time);
    for _ in 0..4 {
        let offset = match civil(naive).map(|dt| tz.to_ambiguous_timestamp(dt).offset()) {
            Some(AmbiguousOffset::Unambiguous { offset } | AmbiguousOffset::Fold { before: offset, .. }) => offset,
            Some(AmbiguousOffset::Gap { .. }) => {
                naive += Duration::minutes(30);
                continue;
            }
            None => break,
        };
        return (naive - Duration::seconds(offset.seconds().into())).and_utc();
    }
    day.and_time(time).and_utc()
}

/// The same wall clock as jiff's civil time; `None` past jiff's years (-9999 to 9999).
fn civil(naive: NaiveDateTime) -> Option<jiff::civil::DateTime> {
    let small = |n: u32| i8::try_from(n).ok();
    jiff::civil::DateTime::new(
        i16::try_from(naive.year()).ok()?,
        small(naive.month())?,
        small(naive.day())?,
        small(naive.hour())?,
        small(naive.minute())?,
        small(naive.second())?,
        0,
    )
    .ok()
}

/// The user's day that `at` falls in (`YYYY-MM-DD` in `tz`) and the instant it ends.
pub fn local_day(at: DateTime<Utc>, tz: &TimeZone) -> (String, DateTime<Utc>) {
    let day = local_datetime(tz, at).date();
    let next = day + Duration::days(1);
    (
        day.format("%Y-%m-%d").to_string(),
        local_instant(tz, next, NaiveTime::MIN),
    )
}

/// What a user chose, with the defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Preferences {
    fields: HashMap<String, String>,
    quiet_hours: Option<QuietHours>,
}

impl Preferences {
    /// Reads the stored hash (empty = all defaults). Unreadable quiet hours count as none
    /// (they were validated when written; a hand-edited value must not stop deliveries).
    pub fn from_fields(fields: HashMap<String, String>) -> Self {
        let quiet_hours = fields
            .get(QUIET_HOURS_FIELD)
            .and_then(|raw| serde_json::from_str::<QuietHoursJson>(raw).ok())
            .and_then(|json| QuietHours::parse(&json).ok());
        Self { fields, quiet_hours }
    }

    fn flag(&self, field: String, default: bool) -> bool {
        self.fields.get(&field).map_or(default, |v| v == "1")
    }

    /// Whether `kind` may be emailed (for a low-priority kind: added to the digest).
    pub fn email_on(&self, kind: Kind) -> bool {
        self.flag(email_field(kind), kind.default_email())
    }

    /// Whether SMS is chosen for `kind` (off unless chosen).
    pub fn sms_on(&self, kind: Kind) -> bool {
        kind.allows_sms() && self.flag(sms_field(kind), false)
    }

    /// The verified phone number, if any.
    pub fn phone(&self) -> Option<&str> {
        self.fields
            .get(PHONE_FIELD)
            .map(String::as_str)
            .filter(|p| !p.is_empty())
    }

    /// The quiet hours, if set.
    pub fn quiet_hours(&self) -> Option<&QuietHours> {
        self.quiet_hours.as_ref()
    }

    /// The user's time zone: the quiet hours' zone, else UTC. Their digest day runs in it.
    pub fn time_zone(&self) -> &TimeZone {
        static UTC: TimeZone = TimeZone::UTC;
        self.quiet_hours.as_ref().map_or(&UTC, QuietHours::time_zone)
    }

    /// The body of GET /notifications/preferences; `pending_phone` is a number waiting
    /// for its code.
    pub fn view(&self, pending_phone: Option<&str>) -> PreferencesView {
        let kinds = kinds::ALL
            .iter()
            .map(|&kind| {
                let channels = KindChannels {
                    email: self.email_on(kind),
                    sms: kind.allows_sms().then(|| self.sms_on(kind)),
                };
                (kind.as_str().to_string(), channels)
            })
            .collect();
        let phone = match (self.phone(), pending_phone) {
            (_, Some(pending)) => Some(Phone {
                number: pending.into(),
                verified: false,
            }),
            (Some(number), None) => Some(Phone {
                number: number.into(),
                verified: true,
            }),
            (None, None) => None,
        };
        PreferencesView {
            kinds,
            quiet_hours: self.quiet_hours.as_ref().map(QuietHours::to_json),
            phone,
            low_priority_kinds: kinds::ALL
                .iter()
                .filter(|k| k.is_low_priority())
                .map(|k| k.as_str().to_string())
                .collect(),
        }
    }
}

/// GET and PUT /notifications/preferences: every kind's channels, defaults filled in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesView {
    /// Per kind (wire name, e.g. `CONNECTION_REQUEST`).
    pub kinds: BTreeMap<String, KindChannels>,
    /// Null when none are set.
    pub quiet_hours: Option<QuietHoursJson>,
    /// Null when no number is set or waiting for its code.
    pub phone: Option<Phone>,
    /// Kinds emailed only in the daily digest.
    pub low_priority_kinds: Vec<String>,
}

/// One kind's channels.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KindChannels {
    /// Email on/off.
    pub email: bool,
    /// SMS on/off; absent for kinds that never go by SMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<bool>,
}

/// The phone number SMS goes to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Phone {
    /// E.164.
    pub number: String,
    /// False while it waits for its code.
    pub verified: bool,
}

/// One kind's change in a PUT.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelChoice {
    /// Email on/off (absent: unchanged).
    pub email: Option<bool>,
    /// SMS on/off (absent: unchanged).
    pub sms: Option<bool>,
}

/// The body of PUT /notifications/preferences: every field optional; `null` clears
/// quiet hours or the phone number.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Update {
    /// Per kind (wire name) the channels to change.
    #[serde(default)]
    pub kinds: HashMap<String, ChannelChoice>,
    /// New quiet hours, or `null` to remove them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<QuietHoursJson>)]
    pub quiet_hours: Option<Option<QuietHoursJson>>,
    /// A phone number to verify (E.164, e.g. `+33612345678`), or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone_number: Option<Option<String>>,
}

/// Tells a field set to `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A validated update: hash fields to set and to delete, and what to do with the phone.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Fields to write.
    pub set: Vec<(String, String)>,
    /// Fields to delete.
    pub delete: Vec<String>,
    /// `Some(Some(n))`: start verifying `n`; `Some(None)`: remove the phone; `None`: keep.
    pub phone: Option<Option<String>>,
}

/// Validates the whole body before anything is written (bad input changes nothing).
pub fn validate(update: Update) -> Result<Changes, AppError> {
    let mut changes = Changes::default();
    let mut names: Vec<_> = update.kinds.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, choice) in names {
        let kind = Kind::parse(&name).ok_or_else(|| {
            let known: Vec<_> = kinds::ALL.iter().map(|k| k.as_str()).collect();
            AppError::Validation(format!(
                "unknown notification kind {name:?}; known: {}",
                known.join(", ")
            ))
        })?;
        if let Some(on) = choice.email {
            changes.set.push((email_field(kind), flag(on)));
        }
        if let Some(on) = choice.sms {
            if !kind.allows_sms() && on {
                return Err(AppError::Validation(format!("{name} is delivered by email only")));
            }
            changes.set.push((sms_field(kind), flag(on)));
        }
    }
    match update.quiet_hours {
        Some(Some(raw)) => {
            let parsed = QuietHours::parse(&raw)?;
            changes
                .set
                .push((QUIET_HOURS_FIELD.into(), serde_json::to_string(&parsed.to_json())?));
        }
        Some(None) => changes.delete.push(QUIET_HOURS_FIELD.into()),
        None => {}
    }
    changes.phone = match update.phone_number {
        Some(Some(raw)) => Some(Some(parse_phone(&raw)?)),
        Some(None) => Some(None),
        None => None,
    };
    Ok(changes)
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.into()
}

/// An E.164 number: `+`, a non-zero digit, then 7 to 14 digits (no spaces).
pub fn parse_phone(raw: &str) -> Result<String, AppError> {
    let digits = raw.strip_prefix('+').unwrap_or_default();
    let ok = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    ok.then(|| raw.to_string())
        .ok_or_else(|| AppError::Validation("phoneNumber must be E.164, e.g. +33612345678".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(start: &str, end: &str, time_zone: &str) -> Result<QuietHours, AppError> {
        QuietHours::parse(&QuietHoursJson {
            start: start.into(),
            end: end.into(),
            time_zone: time_zone.into(),
        })
    }

    fn paris(start: &str, end: &str) -> QuietHours {
        quiet(start, end, "Europe/Paris").unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_time_inside_a_window_across_midnight_waits_for_the_next_morning() {
        // 23:30 in Paris (CET, UTC+1) on 15 January is 22:30 UTC; 07:00 Paris is 06:00 UTC.
        let q = paris("22:00", "07:00");
        assert_eq!(
            q.window_end(utc("2026-01-15T22:30:00Z")),
            Some(utc("2026-01-16T06:00:00Z"))
        );
        assert_eq!(
            q.window_end(utc("2026-01-16T05:00:00Z")),
            Some(utc("2026-01-16T06:00:00Z"))
        );
    }

    #[test]
    fn a_time_outside_the_window_is_not_delayed() {
        let q = paris("22:00", "07:00");
        assert_eq!(q.window_end(utc("2026-01-15T12:00:00Z")), None);
        assert_eq!(
            q.window_end(utc("2026-01-16T06:00:00Z")),
            None,
            "the end itself is outside"
        );
    }

    #[test]
    fn a_daytime_window_ends_the_same_day() {
        let q = paris("13:00", "14:00");
        assert_eq!(
            q.window_end(utc("2026-07-01T11:30:00Z")),
            Some(utc("2026-07-01T12:00:00Z"))
        );
    }

    #[test]
    fn bad_times_zones_and_empty_windows_are_refused() {
        let bad = |start: &str, end: &str, tz: &str| quiet(start, end, tz).is_err();
        assert!(bad("25:00", "07:00", "Europe/Paris"));
        assert!(bad("7:00", "08:00", "Europe/Paris"));
        assert!(bad("22:00", "07:00", "Mars/Olympus"));
        assert!(bad("22:00", "22:00", "Europe/Paris"));
    }

    #[test]
    fn defaults_email_high_priority_kinds_and_never_sms() {
        let p = Preferences::from_fields(HashMap::new());
        assert!(p.email_on(Kind::ConnectionRequest));
        assert!(!p.email_on(Kind::ConnectionAccepted));
        assert!(!p.sms_on(Kind::ConnectionRequest));
        assert_eq!(p.time_zone(), &TimeZone::UTC);
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        assert!(parse_phone("+33612345678").is_ok());
        for bad in [
            "0612345678",
            "+0612345678",
            "+33 612345678",
            "+1",
            "+123456789012345678",
        ] {
            assert!(parse_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_window_ending_in_the_spring_forward_gap_ends_when_the_clock_resumes() {
        // Paris skips 02:00-03:00 on 29 March 2026: 02:30 never happens, 03:00 CEST is 01:00 UTC.
        let q = paris("01:00", "02:30");
        assert_eq!(
            q.window_end(utc("2026-03-29T00:15:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn a_window_ending_in_the_repeated_hour_ends_at_its_first_occurrence() {
        // Paris repeats 02:00-03:00 on 25 October 2026: 02:30 is first 00:30 UTC (CEST).
        let q = paris("01:00", "02:30");
        assert_eq!(
            q.window_end(utc("2026-10-24T23:15:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn a_time_zone_is_found_in_any_case_and_named_as_iana_spells_it() {
        let q = quiet("22:00", "07:00", "america/new_york").unwrap();
        assert_eq!(q.to_json().time_zone, "America/New_York");
        assert_eq!(
            q.window_end(utc("2026-07-01T03:00:00Z")),
            Some(utc("2026-07-01T11:00:00Z")),
            "EDT is UTC-4 in July"
        );
    }

    #[test]
    fn the_user_day_ends_at_local_midnight() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let (day, end) = local_day(utc("2026-01-15T23:30:00Z"), &tz);
        assert_eq!(day, "2026-01-16");
        assert_eq!(end, utc("2026-01-16T23:00:00Z"));
    }
}
