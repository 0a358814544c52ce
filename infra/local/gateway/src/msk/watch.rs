//! The high watermarks of every watched partition, refreshed by one task for all
//! mappings: it wakes a mapping when records arrive past its offsets and tells it how
//! many there are, so a mapping reads the broker only when there is something to read
//! and its batch is full or its batching window is over.
//!
//! One Kafka Fetch request per refresh names every partition and asks for no bytes: the
//! broker reads no records and answers with each partition's high watermark. (rskafka
//! fetches one partition per request, and tansu answers a fetch only when its `max_wait`
//! is over, found or not, so a long poll per partition would cost latency, and short polls
//! per partition per mapping are what kept the broker busy when idle.) Refreshes come every
//! [`ACTIVE_INTERVAL_MS`] while the watermarks move and slow down to
//! [`IDLE_INTERVAL_MS`] once nothing has moved for [`IDLE_AFTER`]: each refresh costs the
//! broker CPU per watched partition, which is the idle stack's cost. Every function of the
//! local stack produces in this process, so a produce brings the next refresh forward (to
//! [`ACTIVE_INTERVAL_MS`] after the last one): the first record after a quiet spell is seen
//! at once, and only records from another process wait for the idle pace.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use devconnect::kafka_connection::KafkaConnection;
use tokio::time::Instant;

/// (topic, partition) → offset after the partition's last record.
pub type Marks = BTreeMap<(String, i32), i64>;

/// Refresh interval while records arrive (`LOCAL_MSK_WATCH_MS` overrides it): how late a
/// record is seen at most, before the batching window.
const ACTIVE_INTERVAL_MS: u64 = 50;
/// Refresh interval once nothing has moved for [`IDLE_AFTER`]: how late the first record
/// another process produces after a quiet spell is seen at most (`LOCAL_MSK_IDLE_WATCH_MS`
/// overrides it; this process's own produces wake the watch).
const IDLE_INTERVAL_MS: u64 = 1_000;
/// How long the watermarks must stand still before refreshes slow down.
const IDLE_AFTER: Duration = Duration::from_secs(2);
/// How long a watermark read (no bytes asked) waits on the broker: tansu answers a fetch
/// with no wait at all without reading, and waits the whole `max_wait` out when it finds
/// no bytes, so 1 ms. Fetches for records have their own budget (see [`super::feed`]).
pub const READ_WAIT_MS: i32 = 1;
/// Longest an idle mapping waits for a wake before reading again anyway (the watch knows
/// every partition it watches, so this is only a backstop).
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// How often the watch lists the topics again while one of them has no partitions yet.
const RELIST_MISSING: Duration = Duration::from_secs(5);
/// Longest the watch waits on the broker for a connection, a listing or one refresh's
/// answer; past it the watch starts over on a new connection (a hung broker would
/// otherwise hold it forever, and the mappings with it until their backstop read).
const BROKER_DEADLINE: Duration = Duration::from_secs(5);

/// `step` against the broker, or an error naming `what` after [`BROKER_DEADLINE`].
async fn within<T>(what: &str, step: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(BROKER_DEADLINE, step)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer from the broker within {BROKER_DEADLINE:?}"))?
}

fn env_ms(name: &str, default: u64) -> Duration {
    let ms = std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    Duration::from_millis(ms.clamp(1, 10_000))
}

/// The refresh intervals (active, idle), defaults or the environment's.
fn intervals() -> (Duration, Duration) {
    static INTERVALS: std::sync::OnceLock<(Duration, Duration)> = std::sync::OnceLock::new();
    *INTERVALS.get_or_init(|| {
        let active = env_ms("LOCAL_MSK_WATCH_MS", ACTIVE_INTERVAL_MS);
        (active, env_ms("LOCAL_MSK_IDLE_WATCH_MS", IDLE_INTERVAL_MS).max(active))
    })
}

/// The pause before the next refresh, given how long the watermarks have stood still.
pub fn next_interval(still_for: Duration, (active, idle): (Duration, Duration)) -> Duration {
    match still_for >= IDLE_AFTER {
        true => idle,
        false => active,
    }
}

/// Records past `offsets` (partition → next offset to read) in `topic`'s partitions.
pub fn available(marks: &Marks, topic: &str, offsets: &BTreeMap<i32, i64>) -> u64 {
    offsets
        .iter()
        .filter_map(|(p, at)| marks.get(&(topic.to_string(), *p)).map(|hw| (hw - at).max(0) as u64))
        .sum()
}

/// Watermark refreshes sent to the broker by this process.
static REFRESHES: AtomicU64 = AtomicU64::new(0);

/// Watermark refreshes sent to the broker so far (for the benchmarks).
pub fn refreshes() -> u64 {
    REFRESHES.load(Ordering::Relaxed)
}

/// What the watch last saw: the watermarks, and when the refresh before them was sent
/// (records new in `marks` arrived after it).
#[derive(Clone)]
struct Snapshot {
    marks: Marks,
    previous: Instant,
}

impl Snapshot {
    fn none() -> Self {
        Self {
            marks: BTreeMap::new(),
            previous: Instant::now(),
        }
    }
}

/// A handle on the watch; the task ends when every handle is gone.
#[derive(Clone)]
pub struct Watermarks {
    rx: tokio::sync::watch::Receiver<Snapshot>,
    alive: Arc<()>,
}

impl Watermarks {
    pub fn spawn(kafka: &KafkaConnection, mut topics: Vec<String>) -> Self {
        topics.sort();
        topics.dedup();
        let (tx, rx) = tokio::sync::watch::channel(Snapshot::none());
        let alive = Arc::new(());
        let weak = Arc::downgrade(&alive);
        let plaintext = matches!(kafka.security(), devconnect::config::KafkaSecurity::Plaintext);
        let broker = kafka.brokers().first().cloned().filter(|_| plaintext);
        let kafka = kafka.clone();
        tokio::spawn(async move {
            while weak.strong_count() > 0 {
                let result = match &broker {
                    Some(broker) => watch(&kafka, broker, &topics, &tx, &weak).await,
                    None => Err(anyhow::anyhow!("no plaintext broker to watch")),
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "watermark watch restarting");
                }
                // No watermarks: the mappings read at this pace (see `wait_for_records`).
                tx.send_replace(Snapshot::none());
                tokio::time::sleep(intervals().0).await;
            }
        });
        Self { rx, alive }
    }

    /// The latest watermarks (empty when the watch is down).
    pub fn marks(&self) -> Marks {
        self.rx.borrow().marks.clone()
    }

    /// Keeps the watch running while the caller lives.
    pub fn keep_alive(&self) -> Arc<()> {
        Arc::clone(&self.alive)
    }

    /// Waits until a partition of `topic` has records past `offsets` and returns when
    /// Lambda's batching window for them opened: `since` (when the caller started
    /// gathering) if they were already there, else the earliest they can have arrived.
    /// `None` if a refresh failed or [`IDLE_RECHECK`] passed without records: read anyway.
    pub async fn wait_for_records(
        &mut self,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
        since: Instant,
    ) -> Option<Instant> {
        let there = available(&self.rx.borrow_and_update().marks, topic, offsets) > 0;
        if there {
            return Some(since);
        }
        tokio::time::timeout(IDLE_RECHECK, async {
            loop {
                if self.rx.changed().await.is_err() {
                    return None;
                }
                let seen = self.rx.borrow_and_update().clone();
                if seen.marks.is_empty() {
                    // The watch failed: read now, at the watch's restart pace.
                    return None;
                }
                if available(&seen.marks, topic, offsets) > 0 {
                    return Some(seen.previous.max(since));
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until `topic`'s partitions hold `want` records past `offsets` or `until`
    /// passes (the end of the batching window); returns at once if the watch is down, as
    /// the count is then unknown.
    pub async fn wait_for_batch(&mut self, topic: &str, offsets: &BTreeMap<i32, i64>, want: usize, until: Instant) {
        let _ = tokio::time::timeout_at(until, async {
            loop {
                let done = {
                    let seen = self.rx.borrow_and_update();
                    seen.marks.is_empty() || available(&seen.marks, topic, offsets) >= want as u64
                };
                if done || self.rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

/// Refreshes the watermarks over one connection until it fails or nobody watches.
async fn watch(
    kafka: &KafkaConnection,
    broker: &str,
    topics: &[String],
    tx: &tokio::sync::watch::Sender<Snapshot>,
    alive: &Weak<()>,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = within("connecting", async {
        Ok(tokio::net::TcpStream::connect(broker).await?)
    })
    .await?;
    stream.set_nodelay(true)?;
    // tansu waits `max_wait` out before answering a fetch that finds no bytes: a 1 ms
    // wait and our own pace give watermarks as of the answer, not as of the interval's start.
    let (mut request, mut complete) = within("listing topics", watermarks_request(kafka, topics)).await?;
    let mut listed_at = Instant::now();
    let mut produced = devconnect::producer::subscribe_produced();
    let mut correlation = 0i32;
    let mut moved = Instant::now();
    let mut previous = Instant::now();
    while alive.strong_count() > 0 {
        if !complete && listed_at.elapsed() >= RELIST_MISSING {
            (request, complete) = within("listing topics", watermarks_request(kafka, topics)).await?;
            listed_at = Instant::now();
        }
        // Produces from here on are after this refresh's question: they wake the next one.
        produced.mark_unchanged();
        correlation = correlation.wrapping_add(1);
        let mut framed = request.clone();
        framed[8..12].copy_from_slice(&correlation.to_be_bytes());
        let sent = Instant::now();
        REFRESHES.fetch_add(1, Ordering::Relaxed);
        let body = within("refreshing watermarks", async {
            stream.write_all(&framed).await?;
            let size = stream.read_i32().await?;
            anyhow::ensure!((4..64 << 20).contains(&size), "bad response size {size}");
            let mut body = vec![0u8; size as usize];
            stream.read_exact(&mut body).await?;
            Ok(body)
        })
        .await?;
        let marks = parse_watermarks(&body, correlation)?;
        let changed = tx.send_if_modified(|old| {
            let changed = old.marks != marks;
            if changed {
                *old = Snapshot { marks, previous };
            }
            changed
        });
        previous = sent;
        if changed {
            moved = Instant::now();
        }
        let (active, idle) = intervals();
        tokio::select! {
            () = tokio::time::sleep(next_interval(moved.elapsed(), (active, idle))) => {}
            Ok(()) = produced.changed() => tokio::time::sleep_until(sent + active).await,
        }
    }
    Ok(())
}

/// The watermarks request for `topics`' partitions as the broker lists them now, and
/// whether every topic had partitions (a topic created later is watched once listed again).
async fn watermarks_request(kafka: &KafkaConnection, topics: &[String]) -> anyhow::Result<(Vec<u8>, bool)> {
    let listed = kafka.client_builder().build().await?.list_topics().await?;
    let partitions: Vec<(String, Vec<i32>)> = topics
        .iter()
        .map(|t| {
            let found = listed.iter().find(|l| &l.name == t);
            (
                t.clone(),
                found
                    .map(|l| l.partitions.iter().copied().collect())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let complete = partitions.iter().all(|(_, p)| !p.is_empty());
    Ok((fetch_watermarks_request(&partitions, READ_WAIT_MS), complete))
}

/// A Fetch v4 request (size-prefixed, correlation id at bytes 8..12) for the partitions
/// of `topics` with `max_bytes` 0 and the given wait.
pub fn fetch_watermarks_request(topics: &[(String, Vec<i32>)], max_wait_ms: i32) -> Vec<u8> {
    let mut b: Vec<u8> = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as i16).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(&1i16.to_be_bytes()); // api key: Fetch
    b.extend_from_slice(&4i16.to_be_bytes()); // api version
    b.extend_from_slice(&0i32.to_be_bytes()); // correlation id (set per request)
    string(&mut b, "local-gateway-msk-watch");
    b.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    b.extend_from_slice(&max_wait_ms.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    b.extend_from_slice(&0i32.to_be_bytes()); // max bytes: read no records
    b.push(0); // isolation level: read uncommitted
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (topic, partitions) in topics {
        string(&mut b, topic);
        b.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for p in partitions {
            b.extend_from_slice(&p.to_be_bytes());
            b.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
            b.extend_from_slice(&0i32.to_be_bytes()); // partition max bytes
        }
    }
    let mut framed = (b.len() as i32).to_be_bytes().to_vec();
    framed.extend(b);
    framed
}

/// The high watermarks of a Fetch v4 response (after its size), partitions with an
/// error left out.
pub fn parse_watermarks(body: &[u8], correlation: i32) -> anyhow::Result<Marks> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> anyhow::Result<&[u8]> {
            anyhow::ensure!(self.0.len() >= n, "short fetch response");
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn i16(&mut self) -> anyhow::Result<i16> {
            Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
        }
        fn i32(&mut self) -> anyhow::Result<i32> {
            Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
        }
        fn i64(&mut self) -> anyhow::Result<i64> {
            Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
        }
    }
    let mut r = Reader(body);
    anyhow::ensure!(r.i32()? == correlation, "fetch response out of order");
    r.i32()?; // throttle time
    let mut out = BTreeMap::new();
    for _ in 0..r.i32()?.max(0) {
        let len = r.i16()?.max(0) as usize;
        let topic = String::from_utf8_lossy(r.take(len)?).into_owned();
        for _ in 0..r.i32()?.max(0) {
            let partition = r.i32()?;
            let error = r.i16()?;
            let high_watermark = r.i64()?;
            r.i64()?; // last stable offset
            let aborted = r.i32()?;
            r.take(aborted.max(0) as usize * 16)?;
            let records = r.i32()?;
            r.take(records.max(0) as usize)?;
            if error == 0 {
                out.insert((topic.clone(), partition), high_watermark);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_counts_records_past_each_partitions_offset() {
        let marks: Marks = [
            (("t".to_string(), 0), 10),
            (("t".to_string(), 1), 5),
            (("u".to_string(), 0), 99),
        ]
        .into();
        let at: BTreeMap<i32, i64> = [(0, 4), (1, 5), (2, 0)].into();
        assert_eq!(available(&marks, "t", &at), 6, "partition 2 unknown counts nothing");
        assert_eq!(
            available(&marks, "t", &[(0, 12)].into()),
            0,
            "behind the offset is not negative"
        );
    }

    #[test]
    fn refreshes_slow_down_once_the_watermarks_stand_still() {
        let pair = (Duration::from_millis(50), Duration::from_millis(200));
        assert_eq!(next_interval(Duration::from_millis(300), pair), pair.0);
        assert_eq!(next_interval(IDLE_AFTER, pair), pair.1);
    }
}
