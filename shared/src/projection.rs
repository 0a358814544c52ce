//! Projection generations: which copy of the notifications and analytics keys is live.
//!
//! The consumers' Redis state is a projection of the topics, so it can be rebuilt from
//! them (see [`crate::rebuild`]). A rebuild writes a fresh *generation* of the keys
//! (`notifications@2:{u:…}` beside `notifications:{u:…}`, see [`crate::keys`]) while the
//! live consumer keeps writing the current one, then switches readers with one script.
//! Generation 0 is the key names used before generations existed, so a deploy keeps its
//! data. Each projection has one small pointer hash ([`crate::keys::projection`]):
//! `live` (absent = 0) and, during a rebuild, `building`.
//!
//! Readers must not pay a round trip for the pointer. Each container remembers the
//! pointer it last saw ([`Generations`], in the [`Store`]), names its keys from it, and
//! appends `HMGET pointer live building` to the pipeline it sends anyway
//! ([`read_pointer`]). If the reply differs from what it assumed ([`Generations::observe`])
//! the keys were stale: it sends the pipeline again with the new names. That costs a
//! second round trip once per container per switch, never in the steady state.
//!
//! Why a stale write is safe: a consumer that applied a record to generation N and then
//! read `live = N` read the pointer before the switch, so the record was in the topic
//! before the switch, and the rebuild drains every record produced before the switch
//! into N+1 after switching. A consumer that reads `live = N+1` after writing N applies
//! the record again to N+1 (dedupe markers are per generation, so that is harmless).

use std::sync::atomic::{AtomicU64, Ordering};

use redis::Pipeline;

use crate::{keys, store::Store, AppError};

/// A projection that can be rebuilt from the topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projection {
    /// Per-user notification lists and unread counts.
    Notifications,
    /// Daily/hourly counters, DAU and MAU.
    Analytics,
}

impl Projection {
    /// Every projection.
    pub const ALL: [Projection; 2] = [Projection::Notifications, Projection::Analytics];

    /// `notifications` or `analytics`: the name in commands, events and the pointer key.
    pub fn name(self) -> &'static str {
        match self {
            Self::Notifications => "notifications",
            Self::Analytics => "analytics",
        }
    }

    /// The projection called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The pointer hash naming the live (and building) generation.
    pub fn pointer_key(self) -> String {
        keys::projection(self.name())
    }

    /// The key held by the one rebuild running.
    pub fn lock_key(self) -> String {
        keys::projection_lock(self.name())
    }

    /// Glob matching every key of generation `generation` of this projection.
    pub fn pattern(self, generation: u64) -> String {
        match self {
            Self::Notifications => keys::notifications_pattern(generation),
            Self::Analytics => keys::analytics_pattern(generation),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the pointer says: the generation readers use, and the one a rebuild is writing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pointer {
    /// The generation readers and the live consumer use.
    pub live: u64,
    /// The generation a rebuild is filling, if one runs (always > 0).
    pub building: Option<u64>,
}

impl Pointer {
    /// Parses the reply of `HMGET pointer live building`.
    pub fn from_reply(reply: (Option<String>, Option<String>)) -> Result<Self, AppError> {
        let number = |v: Option<String>| -> Result<u64, AppError> {
            match v {
                None => Ok(0),
                Some(s) => s
                    .parse()
                    .map_err(|_| AppError::bug(format!("projection pointer holds {s:?}, not a generation"))),
            }
        };
        let live = number(reply.0)?;
        let building = Some(number(reply.1)?).filter(|g| *g > 0);
        Ok(Self { live, building })
    }
}

/// The pointers one container last saw, one per projection; lock-free.
#[derive(Debug, Default)]
pub struct Generations {
    live: [AtomicU64; 2],
    building: [AtomicU64; 2],
}

impl Generations {
    /// The pointer as last seen (all zero before the first read: generation 0).
    pub fn cached(&self, projection: Projection) -> Pointer {
        let i = projection.index();
        Pointer {
            live: self.live[i].load(Ordering::Relaxed),
            building: Some(self.building[i].load(Ordering::Relaxed)).filter(|g| *g > 0),
        }
    }

    /// Remembers what Redis said; `true` if it differs from `assumed`, i.e. the keys
    /// named from `assumed` were not the live ones and the operation must be redone.
    pub fn observe(&self, projection: Projection, assumed: Pointer, seen: Pointer) -> bool {
        let i = projection.index();
        self.live[i].store(seen.live, Ordering::Relaxed);
        self.building[i].store(seen.building.unwrap_or(0), Ordering::Relaxed);
        seen != assumed
    }
}

/// Appends the pointer read to `pipe`; its reply is the last one and parses with
/// [`Pointer::from_reply`].
pub fn read_pointer(pipe: &mut Pipeline, projection: Projection) {
    pipe.cmd("HMGET")
        .arg(projection.pointer_key())
        .arg("live")
        .arg("building");
}

/// Reads the pointer on its own (one round trip): for the rebuild, not for readers.
pub async fn pointer(store: &Store, projection: Projection) -> Result<Pointer, AppError> {
    let mut pipe = redis::pipe();
    read_pointer(&mut pipe, projection);
    let (reply,): ((Option<String>, Option<String>),) = pipe.query_async(&mut store.conn()).await?;
    Pointer::from_reply(reply)
}

/// How many times a reader re-sends its pipeline after finding the pointer moved: a
/// switch happens once per rebuild, so a second move within one request means someone
/// is flipping it in a loop; the last answer is then served as it is.
pub const MAX_REDIRECTS: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_pointer_is_generation_0_with_no_rebuild() {
        assert_eq!(Pointer::from_reply((None, None)).unwrap(), Pointer::default());
        let p = Pointer::from_reply((Some("3".into()), Some("4".into()))).unwrap();
        assert_eq!((p.live, p.building), (3, Some(4)));
    }

    #[test]
    fn a_garbled_pointer_is_an_error_not_generation_0() {
        assert!(Pointer::from_reply((Some("x".into()), None)).is_err());
    }

    #[test]
    fn observing_a_moved_pointer_says_so_once() {
        let g = Generations::default();
        let assumed = g.cached(Projection::Analytics);
        let seen = Pointer {
            live: 2,
            building: None,
        };
        assert!(g.observe(Projection::Analytics, assumed, seen));
        assert!(!g.observe(Projection::Analytics, g.cached(Projection::Analytics), seen));
        assert_eq!(g.cached(Projection::Notifications), Pointer::default());
    }

    #[test]
    fn projections_parse_by_name() {
        assert_eq!(Projection::parse("analytics"), Some(Projection::Analytics));
        assert_eq!(Projection::parse("notifications"), Some(Projection::Notifications));
        assert_eq!(Projection::parse("users"), None);
    }
}
