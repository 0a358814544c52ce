//! Derived events: what the analytics consumer announces on analytics-events.
//!
//! - MILESTONE: a user's first connection (CONNECTION_ACCEPTED, for both users) and first
//!   message (MESSAGE_SENT, for its sender), once per user and kind.
//! - DAILY_SUMMARY: a UTC day's counters, DAU and funnel, once per day, when the day closes.
//!
//! **Exactly once.** Each derived event is pushed to the outbox by the same script that
//! records it was emitted (SADD to the milestone's set, SET NX of the day's marker), in the
//! outbox's `{events}` slot, after checking every key's type. A redelivered batch, or two
//! consumers racing (the four topics have their own event source mappings), find the
//! marker and write nothing. The outbox relay (every minute in AWS, every second locally)
//! produces them: a broker outage delays derived events, never loses or doubles them, and
//! this consumer needs no produce grant for analytics-events.
//!
//! **What closes a day.** Stream progress, not the wall clock: when a batch holds an event
//! stamped at least [`CLOSE_GRACE`] into a later day, the days before are due, and the
//! last [`LOOKBACK_DAYS`] of them not closed yet are closed now. The event time is capped
//! at the wall clock, so a producer with a clock ahead cannot close today early; and a
//! consumer catching up on a backlog closes a day only once its stream got past it, not
//! when the clock says so. The grace leaves the other partitions and topics time to
//! deliver the day's last events. An event of a day that arrives after its close is still
//! counted (GET /analytics/daily shows it) but not in the summary, which is what the day
//! held when it closed. A day without events is marked closed with no summary. No
//! schedule is needed: with traffic every few minutes the stream passes midnight as soon
//! as a schedule would; after a silence, a day closes with the first event after it (up
//! to [`LOOKBACK_DAYS`] back).
//!
//! **Round trips per batch**, besides counting (one, which the first of these travels
//! beside): one asking which of the batch's milestones are new and which due days are
//! open; one for the milestone script, only when some are new; and only when a day is due
//! and not closed yet, one read of the due days' counters and one for their closing
//! scripts. After Redis lost its scripts (a failover), each script costs one more, once.
//!
//! Markers are not projections: a rebuild of the analytics counters (which applies records
//! with `store::count`, not through here) keeps them, and they outlive topic retention, so
//! replayed history never announces a milestone or a day twice.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::LazyLock,
};

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use devconnect::{
    clock,
    consumer::{Failure, Incoming},
    events::Envelope,
    keys, metrics,
    payloads::{DailyFunnel, DailySummary, Event, Milestone, MilestoneKind},
    script, AppError, AppState,
};
use redis::Script;

use crate::{store, FUNCTION_NAME};

/// How far into the next day the stream must be before a day closes.
pub const CLOSE_GRACE: TimeDelta = TimeDelta::minutes(15);

/// How many due days one batch may close: the day just ended and the one before it (a day
/// of silence in between still gets its summary).
pub const LOOKBACK_DAYS: u64 = 2;

/// The record key of every DAILY_SUMMARY: no user acts, and one key keeps the summaries on
/// one partition, in day order. (A UUID, because every event key is a user id on the wire.)
pub const SUMMARY_KEY: &str = "00000000-0000-0000-0000-000000000000";

/// The close marker of a day that had no events: closed, with no summary.
const EMPTY_DAY: &str = "empty";

/// KEYS: outbox, the firstConnection set, the firstMessage set, then each day's milestone
/// counter hash. ARGV[1]: the counters' retention (ms); then per candidate: the index of its
/// set in KEYS, its counter field, the user, the index of its day hash in KEYS, the outbox
/// entry. A user joins the set, the entry the outbox and the day's counter its increment,
/// all three or none. Returns how many milestones were reached now.
static MILESTONES: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local spec = {KEYS[1], 'list', KEYS[2], 'set', KEYS[3], 'set'}
for k = 4, #KEYS do spec[#spec + 1] = KEYS[k]; spec[#spec + 1] = 'hash' end
local bad = wrong_types(spec)
if bad then return redis.error_reply(bad) end
local fields = {}
for i = 2, #ARGV, 5 do fields[ARGV[i + 1]] = true end
local names = {}
for name in pairs(fields) do names[#names + 1] = name end
for k = 4, #KEYS do
  bad = not_integers(KEYS[k], names)
  if bad then return redis.error_reply(bad) end
end
local reached = 0
for i = 2, #ARGV, 5 do
  if redis.call('SADD', KEYS[tonumber(ARGV[i])], ARGV[i + 2]) == 1 then
    local day = KEYS[tonumber(ARGV[i + 3])]
    redis.call('RPUSH', KEYS[1], ARGV[i + 4])
    redis.call('HINCRBY', day, ARGV[i + 1], 1)
    redis.call('PEXPIRE', day, ARGV[1])
    reached = reached + 1
  end
end
return reached
"#,
    )
});

/// KEYS: outbox, the day's close marker. ARGV: marker TTL (ms), marker value (the
/// summary's event id, or `empty`), the outbox entry ('' for a day without events).
/// Returns 1 if this call closed the day, 0 if it was closed already.
static CLOSE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'list', KEYS[2], 'string'})
if bad then return redis.error_reply(bad) end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then return 0 end
if ARGV[3] ~= '' then redis.call('RPUSH', KEYS[1], ARGV[3]) end
return 1
"#,
    )
});

/// A milestone a record may reach.
struct Candidate<'a> {
    /// The record it comes from (index into the batch's records).
    record: usize,
    kind: MilestoneKind,
    /// The user who reaches it, and the other user of the connection or message.
    user: &'a str,
    with: &'a str,
}

/// The days a batch made due and found open, and the record that made them due: closed
/// by [`Due::close`] once the batch is counted.
#[derive(Debug, Default)]
#[must_use = "the due days are closed only by Due::close"]
pub struct Due {
    open: Vec<NaiveDate>,
    trigger: Option<(usize, DateTime<Utc>)>,
}

/// Announces what a batch's records make due: milestones now, and which days the stream
/// has moved past (as of `now`) are still open, to be closed by [`Due::close`] after the
/// batch is counted. Returns the records whose milestones could not be written (those
/// must fail), and the due days.
///
/// One round trip asks which of the batch's candidate milestones are not reached yet and
/// which due days are not closed; only the new milestones get an outbox entry and the
/// script (a second round trip), so a batch of users who reached theirs long ago (most
/// of them, once the product has run a while) costs one round trip and writes no entry.
/// The script checks each milestone again, so one reached meanwhile is not announced twice.
pub async fn announce(state: &AppState, records: &[Incoming], now: DateTime<Utc>) -> (Vec<(usize, Failure)>, Due) {
    let candidates = candidates(records);
    let trigger = records
        .iter()
        .enumerate()
        .max_by_key(|(_, r)| r.envelope.timestamp)
        .map(|(i, r)| (i, r.envelope.timestamp.min(now)));
    let due = trigger.map(|(_, latest)| due_days(latest)).unwrap_or_default();
    let mut failures = Vec::new();
    if candidates.is_empty() && due.is_empty() {
        return (failures, Due::default());
    }
    let (fresh, open) = match check(state, &candidates, &due).await {
        Ok(checked) => checked,
        Err(e) => {
            failures.extend(candidates.iter().map(|c| (c.record, Failure::from(&e))));
            failures.extend(trigger.map(|(i, _)| (i, Failure::from(&e))));
            return (failures, Due::default());
        }
    };
    let mut ready = Vec::with_capacity(fresh.len());
    for c in fresh {
        match milestone_entry(state, &records[c.record], c.kind, c.user, c.with) {
            Ok(entry) => ready.push((c, entry)),
            Err(e) => failures.push((c.record, Failure::from(&e))),
        }
    }
    if let Err(e) = reach(state, records, &ready).await {
        failures.extend(ready.iter().map(|(c, _)| (c.record, Failure::from(&e))));
    }
    (failures, Due { open, trigger })
}

impl Due {
    /// Closes the due days, summing each from what is counted now: call it after the
    /// batch's count has returned. Overlapping the two could read a day before the batch
    /// lands in it: when a rebuild switched generations, the count is sent again into the
    /// new live one, which a read sent meanwhile would find without the batch. Returns the
    /// record that made the days due if the close must be retried.
    pub async fn close(self, state: &AppState, records: &[Incoming], now: DateTime<Utc>) -> Vec<(usize, Failure)> {
        let Err(e) = close(state, self.open, now, records, self.trigger).await else {
            return Vec::new();
        };
        match Failure::from(&e) {
            // Redis or the broker was away: the record that made the days due comes back.
            failure @ Failure::Transient(_) => {
                tracing::warn!(error = %e, "days not closed; the record that made them due will be retried");
                self.trigger.map(|(i, _)| (i, failure)).into_iter().collect()
            }
            // A day's keys can never be summed (e.g. a DAU key that is no HyperLogLog). The
            // trigger was counted fine, so it is not dead-lettered; the day stays open, every
            // later attempt is counted and logged for a person to repair the keys.
            Failure::Permanent(reason) => {
                state.metrics.count(metrics::SUMMARIES_FAILED, 1);
                tracing::error!(%reason, "a due day cannot be summarised; it stays open until its keys are repaired");
                Vec::new()
            }
        }
    }
}

/// The days an event stamped `latest` makes due, oldest first: the [`LOOKBACK_DAYS`] before
/// the day that `latest` is [`CLOSE_GRACE`] into. `latest` must already be capped at now.
pub fn due_days(latest: DateTime<Utc>) -> Vec<NaiveDate> {
    let Some(last) = (latest - CLOSE_GRACE).date_naive().pred_opt() else {
        return Vec::new();
    };
    (0..LOOKBACK_DAYS)
        .rev()
        .filter_map(|back| last.checked_sub_days(Days::new(back)))
        .collect()
}

/// The milestones the records may reach: the first per user and kind within the batch.
fn candidates(records: &[Incoming]) -> Vec<Candidate<'_>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        // (kind, the user who reaches it, the other user)
        let reached: [Option<(MilestoneKind, &str, &str)>; 2] = match &r.event {
            Event::ConnectionAccepted(c) => [
                Some((MilestoneKind::FirstConnection, &c.from_user_id, &c.to_user_id)),
                Some((MilestoneKind::FirstConnection, &c.to_user_id, &c.from_user_id)),
            ],
            Event::MessageSent(m) => [
                Some((MilestoneKind::FirstMessage, &m.from_user_id, &m.to_user_id)),
                None,
            ],
            _ => [None, None],
        };
        for (kind, user, with) in reached.into_iter().flatten() {
            if seen.insert((kind, user)) {
                out.push(Candidate {
                    record: i,
                    kind,
                    user,
                    with,
                });
            }
        }
    }
    out
}

/// The outbox entry of `user`'s MILESTONE `kind`, reached by `record`: stamped with the
/// record's time and carrying its correlation id.
fn milestone_entry(
    state: &AppState,
    record: &Incoming,
    kind: MilestoneKind,
    user: &str,
    with: &str,
) -> Result<String, AppError> {
    let source = &record.envelope;
    let payload = Milestone {
        user_id: user.to_string(),
        milestone: kind,
        with_user_id: with.to_string(),
        source_event_id: source.event_id.to_string(),
        at: clock::rfc3339(&source.timestamp),
    };
    let mut envelope = Envelope::of(FUNCTION_NAME, user, &source.correlation_id, payload)?;
    envelope.timestamp = source.timestamp;
    state.publisher.outbox_entry(envelope)
}

/// One round trip: which candidates have not reached their milestone yet (SMISMEMBER of
/// each kind's set), and which due days have no close marker. A set that cannot be read
/// (a key of the wrong type) leaves its candidates in: the script refuses them with the
/// reason.
async fn check<'c, 'a>(
    state: &AppState,
    candidates: &'c [Candidate<'a>],
    due: &[NaiveDate],
) -> Result<(Vec<&'c Candidate<'a>>, Vec<NaiveDate>), AppError> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let by_kind: Vec<Vec<&Candidate>> = MilestoneKind::ALL
        .iter()
        .map(|kind| candidates.iter().filter(|c| c.kind == *kind).collect())
        .filter(|of_kind: &Vec<&Candidate>| !of_kind.is_empty())
        .collect();
    for of_kind in &by_kind {
        let mut smismember = redis::cmd("SMISMEMBER");
        smismember.arg(keys::milestone_reached(of_kind[0].kind.as_str()));
        for c in of_kind {
            smismember.arg(c.user);
        }
        pipe.add_command(smismember);
    }
    for day in due {
        pipe.get(keys::daily_summary_closed(&day.to_string()));
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(&mut state.store.conn()).await?;
    let mut replies = replies.into_iter();
    let mut fresh = Vec::new();
    for of_kind in by_kind {
        match take(&mut replies)?.map(|v| store::parse::<Vec<bool>>(v, "milestones reached")) {
            Ok(Ok(reached)) if reached.len() == of_kind.len() => {
                fresh.extend(of_kind.into_iter().zip(reached).filter(|(_, r)| !r).map(|(c, _)| c));
            }
            _ => fresh.extend(of_kind),
        }
    }
    fresh.sort_by_key(|c| c.record);
    let mut open = Vec::new();
    for day in due {
        let marker: Option<String> = store::parse(take(&mut replies)??, "close marker")?;
        if marker.is_none() {
            open.push(*day);
        }
    }
    Ok((fresh, open))
}

/// One round trip, when any milestone is new: the milestone script for `ready`
/// (candidates with their outbox entries); a second one only if Redis lost the script.
async fn reach(state: &AppState, records: &[Incoming], ready: &[(&Candidate<'_>, String)]) -> Result<u64, AppError> {
    if ready.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors().add_command(milestones_call(records, ready));
    let mut replies = script::query_loaded(&state.store, &pipe, &[&MILESTONES]).await?;
    script::reply(
        replies
            .pop()
            .ok_or_else(|| AppError::bug("milestone script returned no reply"))?,
    )
}

/// The next reply of a pipeline, in order.
fn take(
    replies: &mut impl Iterator<Item = redis::RedisResult<redis::Value>>,
) -> Result<redis::RedisResult<redis::Value>, AppError> {
    replies
        .next()
        .ok_or_else(|| AppError::bug("derived events pipeline returned too few replies"))
}

/// The milestone script's call for `ready` (candidates with their outbox entries).
fn milestones_call(records: &[Incoming], ready: &[(&Candidate<'_>, String)]) -> redis::Cmd {
    let set_index = |kind: MilestoneKind| 2 + MilestoneKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    let day_of = |c: &Candidate| store::day_of(&records[c.record]);
    let days: BTreeSet<String> = ready.iter().map(|(c, _)| day_of(c)).collect();
    let first_day = 2 + MilestoneKind::ALL.len();
    let day_index: BTreeMap<&str, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), first_day + i))
        .collect();
    let mut call = script::evalsha(&MILESTONES, 1 + MilestoneKind::ALL.len() + days.len());
    call.arg(keys::OUTBOX);
    for kind in MilestoneKind::ALL {
        call.arg(keys::milestone_reached(kind.as_str()));
    }
    for day in &days {
        call.arg(keys::milestones_of_day(day));
    }
    call.arg(store::RETENTION.as_millis() as i64);
    for (c, entry) in ready {
        call.arg(set_index(c.kind))
            .arg(c.kind.as_str())
            .arg(c.user)
            .arg(day_index[day_of(c).as_str()])
            .arg(entry);
    }
    call
}

/// Closes the open days: reads their counters and milestone counts (one round trip, from
/// the live generation, after this batch's counts and milestones), then runs one close
/// script per day, pipelined (one round trip; a second only if Redis lost the script).
async fn close(
    state: &AppState,
    open: Vec<NaiveDate>,
    now: DateTime<Utc>,
    records: &[Incoming],
    trigger: Option<(usize, DateTime<Utc>)>,
) -> Result<(), AppError> {
    if open.is_empty() {
        return Ok(());
    }
    let correlation = trigger
        .map(|(i, _)| records[i].envelope.event_id.to_string())
        .unwrap_or_default();
    let dates: Vec<String> = open.iter().map(NaiveDate::to_string).collect();
    let dates: Vec<&str> = dates.iter().map(String::as_str).collect();
    let read = store::days_with_milestones(&state.store, &dates).await?;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (date, ((counters, dau, _mau), milestones)) in dates.iter().zip(read) {
        let (marker, entry) = match summary(date, &counters, dau, &milestones, now) {
            Some(summary) => {
                let envelope = Envelope::of(FUNCTION_NAME, SUMMARY_KEY, &correlation, summary)?;
                (envelope.event_id.to_string(), state.publisher.outbox_entry(envelope)?)
            }
            None => (EMPTY_DAY.to_string(), String::new()),
        };
        let mut call = script::evalsha(&CLOSE, 2);
        call.arg(keys::OUTBOX)
            .arg(keys::daily_summary_closed(date))
            .arg(store::RETENTION.as_millis() as i64)
            .arg(marker)
            .arg(entry);
        pipe.add_command(call);
    }
    let closed = script::query_loaded(&state.store, &pipe, &[&CLOSE])
        .await?
        .into_iter()
        .map(script::reply::<i64>)
        .collect::<Result<Vec<i64>, AppError>>()?;
    tracing::info!(days = ?open, closed = ?closed, "due days closed");
    Ok(())
}

/// The summary of `date` from its counter hash, DAU and milestone counts; `None` for a day
/// without events.
pub fn summary(
    date: &str,
    counters: &HashMap<String, i64>,
    dau: i64,
    milestones: &HashMap<String, u64>,
    now: DateTime<Utc>,
) -> Option<DailySummary> {
    let total_events = counters.get("events").copied().unwrap_or(0).max(0) as u64;
    if total_events == 0 {
        return None;
    }
    // `<TYPE>` fields are the day's counts; `<HH>:<TYPE>` the hourly ones.
    let counts: BTreeMap<String, u64> = counters
        .iter()
        .filter(|(field, _)| !field.contains(':') && field.as_str() != "events")
        .map(|(field, n)| (field.clone(), (*n).max(0) as u64))
        .collect();
    let count = |t: &str| counts.get(t).copied().unwrap_or(0);
    let reached = |k: MilestoneKind| milestones.get(k.as_str()).copied().unwrap_or(0);
    Some(DailySummary {
        date: date.to_string(),
        total_events,
        dau: dau.max(0) as u64,
        funnel: DailyFunnel {
            signups: count("USER_SIGNUP"),
            requests_sent: count("CONNECTION_REQUEST_SENT"),
            accepted: count("CONNECTION_ACCEPTED"),
            first_connections: reached(MilestoneKind::FirstConnection),
            first_messages: reached(MilestoneKind::FirstMessage),
        },
        counts,
        closed_at: clock::rfc3339(&now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn days(v: &[NaiveDate]) -> Vec<String> {
        v.iter().map(NaiveDate::to_string).collect()
    }

    #[test]
    fn a_day_is_due_once_the_stream_is_the_grace_period_into_the_next() {
        assert_eq!(
            days(&due_days(at("2026-03-10T00:14:59Z"))),
            ["2026-03-07", "2026-03-08"]
        );
        assert_eq!(
            days(&due_days(at("2026-03-10T00:15:00Z"))),
            ["2026-03-08", "2026-03-09"]
        );
    }

    #[test]
    fn a_summary_takes_the_days_counts_and_leaves_the_hourly_ones_out() {
        let counters = HashMap::from([
            ("events".to_string(), 5),
            ("USER_SIGNUP".to_string(), 2),
            ("CONNECTION_ACCEPTED".to_string(), 1),
            ("MESSAGE_SENT".to_string(), 2),
            ("09:USER_SIGNUP".to_string(), 2),
        ]);
        let milestones = HashMap::from([("firstConnection".to_string(), 2)]);
        let s = summary("2026-03-09", &counters, 2, &milestones, at("2026-03-10T00:20:00Z")).unwrap();
        assert_eq!((s.total_events, s.dau, s.counts.len()), (5, 2, 3));
        assert_eq!(
            s.funnel,
            DailyFunnel {
                signups: 2,
                requests_sent: 0,
                accepted: 1,
                first_connections: 2,
                first_messages: 0
            }
        );
    }

    #[test]
    fn a_day_without_events_has_no_summary() {
        assert!(summary("2026-03-09", &HashMap::new(), 0, &HashMap::new(), Utc::now()).is_none());
    }
}
