#!/usr/bin/env python3
"""Capacity and cost model of DevConnect (issue 14, docs/CAPACITY.md).

Reads the saved benchmark outputs and template.yaml, and rewrites the generated section
of docs/CAPACITY.md (between the two marker comments). Standard library only.

    python3 docs/capacity.py            # rewrite docs/CAPACITY.md
    python3 docs/capacity.py --check    # exit 1 if docs/CAPACITY.md is not what the inputs give

Inputs:
  docs/bench/cpu_cost*.txt   stdout of `BENCH_SECS=5 cargo bench -p devconnect-tests --bench cpu_cost`
  docs/bench/consumers*.txt  stdout of `cargo bench -p devconnect-tests --bench consumers`
  template.yaml              MemorySize per function, route -> function, HTTP API throttle default

Several files (or several runs in one file) give ranges; the model takes the costlier end
of each range (most CPU per request, fewest records/s), so more runs only make it safer.
The parser finds tables by their header words, not by position, so a bench that gains a
column or reorders its columns still parses; a route the model needs that is missing from
every run is an error that names the routes it did find.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "CAPACITY.md"
BENCH = ROOT / "docs" / "bench"
TEMPLATE = ROOT / "template.yaml"
BEGIN = "<!-- capacity.py: generated from docs/bench/*.txt and template.yaml; edit the script, not this section -->"
END = "<!-- capacity.py: end of generated section -->"

# --------------------------------------------------------------------------------------
# Prices: us-east-1, read 2026-11-28. `verified` = found in the source named; anything
# else is an assumption and is printed as one.
# --------------------------------------------------------------------------------------
PRICES_READ = "2026-11-28"


@dataclass(frozen=True)
class Price:
    value: float
    unit: str
    source: str
    verified: bool


PRICES = {
    "lambda_gbs_arm": Price(
        0.0000133334,
        "per GB-second, arm64, first 7.5 billion GB-s/month",
        "aws.amazon.com/lambda/pricing (web.archive.org copy of 2026-06-18: billing model); "
        "rate from cloudchipr.com/blog/aws-lambda-pricing (US East tiers)",
        True,
    ),
    "lambda_request": Price(
        0.20 / 1e6,
        "requests, x86 and arm64",
        "same as above",
        True,
    ),
    "apigw_http_first": Price(
        1.00 / 1e6,
        "HTTP API requests, the first 300 million a month",
        "docs.aws.amazon.com whitepaper best-practices-api-gateway-private-apis-integration/"
        "cost-optimization (Table 4, us-east-1); aws.amazon.com/api-gateway/pricing",
        True,
    ),
    "apigw_http_next": Price(
        0.90 / 1e6,
        "HTTP API requests above 300 million a month",
        "same as above",
        True,
    ),
    "cache_node_hour": Price(
        0.350,
        "cache.r7g.xlarge Valkey node-hour (Redis OSS $0.437, Valkey 20% lower)",
        "not found in a readable copy of aws.amazon.com/elasticache/pricing (its table is "
        "rendered client-side); third-party figures found disagree by up to 30%",
        False,
    ),
    "cache_serverless_gb_hour": Price(
        0.084,
        "ElastiCache Serverless Valkey, per GB-hour stored",
        "usage.ai ElastiCache Serverless pricing (US East, June 2026), citing AWS",
        True,
    ),
    "msk_broker_hour": Price(
        0.204,
        "kafka.m7g.large Standard broker-hour",
        "three independent cost write-ups in public repositories agree ($0.204/h us-east-1); "
        "not read from aws.amazon.com/msk/pricing itself",
        False,
    ),
    "msk_storage_gb_month": Price(
        0.10,
        "per GB-month of provisioned broker storage",
        "same write-ups; docs/DEPLOY.md",
        False,
    ),
    "esm_poller_hour": Price(
        0.185,
        "per Event Poller Unit-hour (Kafka event source mapping, provisioned mode)",
        "not found; AWS docs (API ProvisionedPollerConfig) say provisioned mode is billed in EPUs, "
        "one per mapping unless mappings share a PollerGroupName",
        False,
    ),
    "ec2_m7g_large_hour": Price(
        0.0816,
        "m7g.large on-demand instance-hour (for Lambda Managed Instances)",
        "not verified (AWS EC2 on-demand list price as remembered)",
        False,
    ),
    "lmi_management_fee": Price(
        0.15,
        "Lambda Managed Instances management fee, fraction of the EC2 price",
        "edjgeek.com/blog/lambda-managed-instances and packetsensei.com (both: EC2 + 15%)",
        True,
    ),
    "cw_logs_gb": Price(
        0.50,
        "CloudWatch Logs ingestion per GB",
        "docs/DEPLOY.md ('about $0.50/GB'); not re-read",
        False,
    ),
}

# --------------------------------------------------------------------------------------
# Assumptions: every number the benches do not give. Printed in the document.
# --------------------------------------------------------------------------------------
DAU = 1_000_000
DAYS_PER_MONTH = 30
HOURS_PER_MONTH = 730
PEAK_FACTOR = 3.0  # peak-hour request rate / daily average rate
REDIS_TARGET = 0.70  # Redis main-thread utilisation we size for
REDIS_RTT_MS = 0.5  # one Redis round trip inside the VPC (same region, maybe another AZ)
MSK_PRODUCE_MS = 5.0  # an awaited produce to MSK (acks from the in-sync replicas across AZs)
CPU_SPEED = 1.0  # Lambda arm64 vCPU time per µs of this machine's core
VCPU_MB = 1769  # Lambda: 1,769 MB of memory = one full vCPU
LAMBDA_ACCOUNT_CONCURRENCY = 1000  # default regional quota (adjustable)
APIGW_ACCOUNT_RPS = 10_000  # API Gateway default account throttle per region (adjustable)
EVENTS_PER_DAU = 20  # MSK records produced per DAU per day (messages, reads, logins, presence, notifications)
EVENT_BYTES = 600  # one envelope on the wire
CONSUMER_FANOUT = 2.5  # consumer functions that read an average record
MSK_PARTITIONS = 3  # per topic (docs/DEPLOY.md: 3+)
MSK_TOPICS = 8  # user, connection, message, notification, analytics, email, sms, dead-letter
MSK_RETENTION_DAYS = 7
MSK_REPLICATION = 3
MSK_BROKERS = 3
MSK_STORAGE_HEADROOM = 2.0  # provisioned storage / retained bytes
ESM_BATCH_WINDOW_S = 0.5  # default MSK batching window: at most 2 invocations/s per partition
CONSUMER_FIXED_MS = 3.0  # per consumer invocation: its pipelined Redis round trips and produce
POLLER_MB_S = 5.0  # one event poller: up to 5 MB/s (AWS docs, kafka-scaling-modes)
LOGIN_CPU_MS = 29.6  # argon2id login, README routes bench p50 (treated as all CPU)
LOGIN_REDIS_US = 60.0
LOG_LINES_PER_REQUEST = 2  # the function's request line + the API access log line
LOG_LINE_BYTES = 350
LMI_TARGET = 0.6  # vCPU utilisation Lambda Managed Instances are sized for
LMI_MIN_INSTANCES = 3  # one per AZ
LMI_VCPUS = 2  # m7g.large

# Redis memory, measured on redis-server 7.0 with MEMORY USAGE (docs/CAPACITY.md, "Memory").
BYTES_PER_MESSAGE = 185  # one XADD entry (from, to, 70-character text) in a 1,000-entry stream
BYTES_PER_EVENT_ID = 88  # one UUID in the analytics dedupe set (200,000-member set)
BYTES_NOTIFICATIONS_FULL = 34_088  # 100 notification JSONs (274 B) + the 100-id dedupe zset
BYTES_USER_BASE = 2_000  # user hash, profile cache, sessions, presence, counters (estimate)
ANALYTICS_DEDUPE_DAYS = 8  # functions/analytics/src/store.rs DEDUPE_WINDOW
MEMORY_HORIZON_DAYS = 30  # message history kept in the model (it grows until MESSAGE_HISTORY_CAP)
CACHE_NODE = "cache.r7g.xlarge"
CACHE_NODE_GIB = 26.32
CACHE_USABLE = 0.75  # ElastiCache reserves 25% of a node's memory by default
CACHE_REPLICAS = 1  # per shard, Multi-AZ
# Share of messages whose receiver is offline: such a message also creates a notification,
# a NOTIFICATION_CREATED and (once per conversation burst) an email. The saved table runs
# measured receivers online only; the offline row is scaled from them by the
# offline/online ratio of a run that measured both on one VM.
OFFLINE_MESSAGE_SHARE = 0.3
OFFLINE_RATIO_RUNS = BENCH / "other-vm" / "cpu_cost-8feca3e.txt"
MESSAGES = "POST /messages/{}"
OFFLINE_MESSAGES = "POST /messages/{} (receiver offline)"


@dataclass(frozen=True)
class MixRow:
    """One line of the request mix: what a daily active user does per day."""

    label: str
    per_dau: float
    measured: str  # cpu_cost route key (method + path) whose costs it uses
    route: str  # template route (method + path) that says which function serves it
    round_trips: int  # Redis round trips (README, Performance; routes bench)
    produces: bool  # awaits a produce to MSK


MIX = [
    MixRow("POST /presence/heartbeat", 30, "POST /presence/heartbeat", "POST /presence/heartbeat", 2, False),
    MixRow("GET /presence (10 ids)", 20, "GET /presence", "GET /presence", 1, False),
    MixRow("GET /profile", 5, "GET /profile", "GET /profile", 1, False),
    MixRow("GET /users/{id}", 10, "GET /users/{}", "GET /users/{}", 1, False),
    MixRow("POST /messages/{id}, receiver online", 10 * (1 - OFFLINE_MESSAGE_SHARE), MESSAGES,
           "POST /messages/{}", 2, True),
    MixRow("POST /messages/{id}, receiver offline", 10 * OFFLINE_MESSAGE_SHARE, OFFLINE_MESSAGES,
           "POST /messages/{}", 2, True),
    MixRow("other reads: feed, notifications, conversations, history", 20, "GET /presence", "GET /feed", 3, False),
    MixRow("POST /auth/login (argon2id)", 1, "", "POST /auth/login", 4, True),
]
CONSUMERS = ("NotificationsConsumerFunction", "AnalyticsConsumerFunction")


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def number(text: str) -> float | None:
    """The first number in a cell ("8,711 (p99 3 ms)" -> 8711.0)."""
    m = NUMBER.search(text)
    return float(m.group().replace(",", "")) if m else None


def route_key(name: str) -> str:
    """Method and path with path parameters blanked: "GET /presence (10 ids)" -> "GET /presence";
    a message to an offline receiver (a notification and an email more) keeps its own key."""
    parts = name.split()
    path = re.sub(r"\{[^}]*\}", "{}", parts[1].split("?")[0]) if len(parts) > 1 else ""
    offline = " (receiver offline)" if "receiver offline" in name else ""
    return f"{parts[0].upper()} {path}{offline}" if parts else ""


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(text: str, first_header: str) -> list[tuple[list[str], list[list[str]], str]]:
    """Markdown tables whose first header cell is `first_header`, each with the text
    that follows it up to the next such table: (header, rows, trailing text)."""
    lines = text.splitlines()
    starts = [
        i
        for i, line in enumerate(lines)
        if line.lstrip().startswith("|") and cells(line)[0].lower() == first_header
    ]
    out = []
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else len(lines)
        header, rows, i = cells(lines[start]), [], start + 1
        while i < stop and lines[i].lstrip().startswith("|"):
            row = cells(lines[i])
            if not all(set(c) <= set("-: ") for c in row):
                rows.append(row)
            i += 1
        out.append((header, rows, "\n".join(lines[i:stop])))
    return out


def column(header: list[str], *choices: tuple[str, ...]) -> int | None:
    """Index of the first column whose header contains every word of the first choice
    that any column matches (most specific choice first)."""
    for words in choices:
        for i, h in enumerate(header):
            if all(w in h.lower() for w in words):
                return i
    return None


@dataclass
class RouteRun:
    req_s: float
    gateway_us: float
    redis_us: float
    p99_ms: float | None
    errors: str


@dataclass
class CpuRun:
    source: str
    routes: dict[str, RouteRun] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    drained: bool | None = None
    drained_gateway_us: float | None = None
    drained_redis_us: float | None = None
    idle: tuple[float, float, float] | None = None
    plain_us: float | None = None
    broker_us: float | None = None
    broker_lower_bound: bool = False


def parse_cpu_cost(text: str, source: str) -> list[CpuRun]:
    runs = []
    for header, rows, rest in tables(text, "route"):
        run = CpuRun(source)
        c_rps = column(header, ("req/s",))
        c_gw = column(header, ("gateway", "cpu"), ("gateway",))
        c_redis = column(header, ("redis", "cpu"), ("redis",))
        if None in (c_rps, c_gw, c_redis):
            raise SystemExit(f"{source}: a route table without req/s, gateway and Redis columns: {header}")
        for row in rows:
            if len(row) <= max(c_rps, c_gw, c_redis):
                continue
            key = route_key(row[0])
            if any("refused" in c.lower() for c in row[1:]):
                run.refused.append(row[0])
                continue
            values = [number(row[c]) for c in (c_rps, c_gw, c_redis)]
            if None in values:
                continue
            p99 = re.search(r"p99\s+([\d.,]+)\s*ms", row[c_rps])
            errors = re.search(r"\[([\d,]+) of ([\d,]+) non-2xx\]", row[c_rps])
            run.routes[key] = RouteRun(
                *values,
                float(p99.group(1).replace(",", "")) if p99 else None,
                f"{errors.group(1)} of {errors.group(2)}" if errors else "",
            )
            run.names[key] = row[0]
        for line in rest.splitlines():
            low = line.lower()
            if "drained:" in low and "receiver offline" not in low:
                # The online row's line: what the model's drained Redis figure stands for.
                run.drained = "drained: true" in low
                gw = re.search(r"gateway[^:]*?([\d.,]+)\s*µs", line.split("):", 1)[-1])
                redis = re.search(r"redis\s+([\d.,]+)\s*µs", low)
                run.drained_gateway_us = number(gw.group(1)) if gw else None
                run.drained_redis_us = number(redis.group(1)) if redis else None
            elif low.startswith("idle"):
                m = re.search(r"gateway ([\d.]+)%.*?broker ([\d.]+)%.*?total ([\d.]+)%", low)
                run.idle = tuple(float(x) for x in m.groups()) if m else None
            elif "plain producer" in low:
                m = re.search(r"([\d.,]+)\s*µs per record", line)
                run.plain_us = number(m.group(1)) if m else None
            elif "per post /messages" in low:
                m = re.search(r":\s*([\d.,]+)\s*µs", line)
                run.broker_us = number(m.group(1)) if m else None
                run.broker_lower_bound = "lower bound" in low
        runs.append(run)
    return runs


@dataclass
class ConsumerRun:
    source: str
    rows: dict[str, tuple[float, float | None, float | None]] = field(default_factory=dict)
    e2e: tuple[float, float] | None = None


def parse_consumers(text: str, source: str) -> list[ConsumerRun]:
    runs = []
    for header, rows, rest in tables(text, "consumer"):
        run = ConsumerRun(source)
        c_rate, c_trips = column(header, ("records/s",)), column(header, ("round trip",))
        c_records = next((i for i, h in enumerate(header) if h.lower().strip() == "records"), None)
        if c_rate is None:
            raise SystemExit(f"{source}: a consumer table without a records/s column: {header}")
        for row in rows:
            rate = number(row[c_rate]) if len(row) > c_rate else None
            if rate is None:
                continue
            trips = number(row[c_trips]) if c_trips is not None and len(row) > c_trips else None
            records = number(row[c_records]) if c_records is not None and len(row) > c_records else None
            if records is None and (m := re.search(r"rounds of (\d+) records", text)):
                records = float(m.group(1))  # the bench's "N rounds of M records" line
            run.rows[row[0].strip()] = (rate, trips, records)
        m = re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms", rest)
        run.e2e = (float(m.group(1)), float(m.group(2))) if m else None
        runs.append(run)
    return runs


@dataclass
class Template:
    default_memory: int
    memory: dict[str, int]
    route_function: dict[str, str]
    http_rate_limit: float | None
    esm_count: int
    esm_windows: list[float]  # each MSK mapping's MaximumBatchingWindowInSeconds (default 0.5)


def parse_template(text: str) -> Template:
    """Just enough of template.yaml: Globals MemorySize, each function's MemorySize and
    HTTP routes, and the default of HttpApiThrottlingRateLimit."""
    section, resource, param = "", "", ""
    default_memory, memory, routes, rate, esms = 128, {}, {}, None, 0
    windows: list[float] = []
    for line in text.splitlines():
        top = re.match(r"^([A-Za-z]+):\s*$", line)
        if top:
            section, resource, param = top.group(1), "", ""
            continue
        second = re.match(r"^  ([A-Za-z0-9]+):\s*$", line)
        if second:
            resource = param = second.group(1)
            continue
        # A plain number, or the Managed Instances switch `!If [HttpOnManagedInstances, 2048,
        # N]`: the default deploy (switch off) is N, and `!Ref AWS::NoValue` there means the
        # Globals value.
        mem = re.match(r"^\s+MemorySize:\s*(?:(\d+)|!If \[\w+, \d+, (?:(\d+)|!Ref AWS::NoValue)\])\s*$", line)
        size = mem and (mem.group(1) or mem.group(2))
        if size and section == "Globals":
            default_memory = int(size)
        elif size and section == "Resources":
            memory[resource] = int(size)
        event = re.search(r'Method:\s*(\w+),\s*Path:\s*(?:"([^"]+)"|([^\s,}]+))', line)
        if event and section == "Resources":
            routes[route_key(f"{event.group(1)} {event.group(2) or event.group(3)}")] = resource
        if re.match(r"^\s+Type:\s*MSK\s*$", line) and section == "Resources":
            esms += 1
            windows.append(ESM_BATCH_WINDOW_S)
        window = re.match(r"^\s+MaximumBatchingWindowInSeconds:\s*([\d.]+)\s*$", line)
        if window and section == "Resources" and windows:
            windows[-1] = float(window.group(1))
        default = re.match(r"^\s+Default:\s*\"?([\d.]+)\"?\s*$", line)
        if default and section == "Parameters" and param == "HttpApiThrottlingRateLimit":
            rate = float(default.group(1))
    return Template(default_memory, memory, routes, rate, esms, windows)


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------
def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def money(x: float) -> str:
    return f"${x:,.0f}" if x >= 100 else f"${x:,.2f}"


def span(values: list[float], digits: int = 0, unit: str = "") -> str:
    lo, hi = min(values), max(values)
    text = fmt(lo, digits) if fmt(lo, digits) == fmt(hi, digits) else f"{fmt(lo, digits)}–{fmt(hi, digits)}"
    return f"{text} {unit}".strip()


def price_text(price: Price) -> str:
    if "fraction" in price.unit:
        return f"{price.value:.0%}"
    if price.value < 1e-5:
        return f"${price.value * 1e6:.2f} per million:"
    return "$" + f"{price.value:.10f}".rstrip("0").rstrip(".")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------
@dataclass
class Costed:
    row: MixRow
    basis: str  # what its figures come from
    function: str
    memory: int
    gateway_us: float
    redis_us: float
    cpu_ms: float
    duration_ms: float
    billed_ms: int
    gbs: float


def runs_of(cpu: list[CpuRun], key: str) -> list[RouteRun]:
    """Every run's figures for one route; an error naming what was found if none has it."""
    values = [run.routes[key] for run in cpu if key in run.routes]
    if not values:
        found = sorted({k for run in cpu for k in run.routes})
        raise SystemExit(f"no cpu_cost run measured {key!r}; routes found: {', '.join(found) or 'none'}")
    return values


def measured_section(cpu: list[CpuRun], consumers: list[ConsumerRun], provenance: list[str]) -> list[str]:
    """The inputs as read: ranges over the runs, and where each file came from."""
    out: list[str] = []
    say = out.append
    found = sorted({k for run in cpu for k in run.routes})
    drained = [r for r in cpu if r.drained_redis_us is not None]
    say("### Measured (the inputs)")
    say("")
    for line in provenance:
        say(f"- {line}")
    if provenance:
        say("")
    say(f"`cpu_cost` ({len(cpu)} run{'s' * (len(cpu) != 1)}: {', '.join(sorted({r.source for r in cpu}))}); "
        "a range is the lowest–highest over the runs:")
    say("")
    rows = []
    for key in found:
        rs = runs_of(cpu, key)
        name = next(run.names[key] for run in cpu if key in run.names)
        p99 = [r.p99_ms for r in rs if r.p99_ms is not None]
        rows.append([
            name,
            span([r.req_s for r in rs]) + (f" (p99 {span(p99)} ms)" if p99 else ""),
            span([r.gateway_us for r in rs], unit="µs"),
            span([r.redis_us for r in rs], unit="µs"),
        ])
    out += table(["route", "req/s", "gateway CPU per request", "Redis CPU per request"], rows)
    say("")
    notes = []
    if drained:
        notes.append(
            "POST /messages counted until the consumers had worked the messages off: Redis "
            f"{span([r.drained_redis_us for r in drained], unit='µs')} per message "
            f"(drained: {', '.join(str(r.drained).lower() for r in drained)})."
        )
    idle = [r.idle for r in cpu if r.idle]
    if idle:
        notes.append(f"Local stack idle: {span([i[2] for i in idle], 1)} % of a core (gateway + broker).")
    plain = [r.plain_us for r in cpu if r.plain_us]
    broker = [r for r in cpu if r.broker_us]
    if plain and broker:
        notes.append(
            f"Local broker (tansu) CPU: {span(plain, unit='µs')} per plainly produced record, "
            f"{span([r.broker_us for r in broker], unit='µs')} per POST /messages with the emulated "
            f"triggers{' (a lower bound in some runs)' if any(r.broker_lower_bound for r in broker) else ''}. "
            "tansu is not Kafka: these size nothing on MSK."
        )
    refused = sorted({n for r in cpu for n in r.refused})
    if refused:
        notes.append(f"Refused by the bench (mostly non-2xx) in some run: {', '.join(refused)}.")
    for n in notes:
        say(f"- {n}")
    say("")
    cons_names = sorted({k for run in consumers for k in run.rows})
    say(f"`consumers` ({len(consumers)} run{'s' * (len(consumers) != 1)}: "
        f"{', '.join(sorted({r.source for r in consumers}))}), one batch in-process on this machine:")
    say("")
    rows = []
    for name in cons_names:
        vals = [run.rows[name] for run in consumers if name in run.rows]
        trips = [v[1] for v in vals if v[1] is not None]
        records = [v[2] for v in vals if v[2] is not None]
        rows.append([name, span(records) if records else "?", span([v[0] for v in vals]),
                     span(trips) if trips else "?"])
    out += table(["consumer", "records per batch", "records/s", "Redis round trips per batch"], rows)
    e2e = [r.e2e for r in consumers if r.e2e]
    if e2e:
        say("")
        say(f"- HTTP request to visible notification (local stack): p50 {span([e[0] for e in e2e], 1)} ms, "
            f"p99 {span([e[1] for e in e2e], 1)} ms.")
    say("")

    return out


def offline_ratio(paired: list[CpuRun]) -> tuple[float, float]:
    """Gateway and Redis CPU of a message to an offline receiver over one to an online
    receiver, the largest over runs that measured both on one VM."""
    both = [r for r in paired if MESSAGES in r.routes and OFFLINE_MESSAGES in r.routes]
    if not both:
        raise SystemExit(f"no run in {OFFLINE_RATIO_RUNS} measured both {MESSAGES!r} and {OFFLINE_MESSAGES!r}")
    return (max(r.routes[OFFLINE_MESSAGES].gateway_us / r.routes[MESSAGES].gateway_us for r in both),
            max(r.routes[OFFLINE_MESSAGES].redis_us / r.routes[MESSAGES].redis_us for r in both))


def measured_cost(cpu: list[CpuRun], key: str, produces: bool) -> tuple[float, float]:
    """Gateway and Redis CPU per request of one cpu_cost route, the costlier end of the runs."""
    rs = runs_of(cpu, key)
    gw = max(r.gateway_us for r in rs)
    redis = max(r.redis_us for r in rs)
    drained = [r.drained_redis_us for r in cpu if r.drained_redis_us is not None]
    if produces and drained:
        # Counted until the consumers worked the messages off: their Redis work too.
        redis = max(redis, max(drained))
    return gw, redis


def costed_mix(cpu: list[CpuRun], tpl: Template, paired: list[CpuRun]) -> list[Costed]:
    """Each mix row's Lambda duration, GB-s and Redis CPU, from the costlier end of the runs."""
    costed = []
    for row in MIX:
        function = tpl.route_function.get(route_key(row.route), "")
        mem = tpl.memory.get(function, tpl.default_memory)
        if row.measured == OFFLINE_MESSAGES and not any(OFFLINE_MESSAGES in r.routes for r in cpu):
            gw, redis = measured_cost(cpu, MESSAGES, row.produces)
            gw_x, redis_x = offline_ratio(paired)
            gw, redis = gw * gw_x, redis * redis_x
            basis = (f"{MESSAGES.replace('{}', '{id}')} × the offline/online ratio of "
                     f"`{OFFLINE_RATIO_RUNS.relative_to(ROOT)}` "
                     f"(gateway ×{gw_x:.2f}, Redis ×{redis_x:.2f})")
        elif row.measured:
            gw, redis = measured_cost(cpu, row.measured, row.produces)
            basis = next(n for r in cpu for k, n in r.names.items() if k == row.measured)
        else:
            gw, redis = LOGIN_CPU_MS * 1000, LOGIN_REDIS_US
            basis = f"{LOGIN_CPU_MS:g} ms CPU (README routes bench p50)"
        cpu_ms = gw / 1000 * CPU_SPEED * max(1.0, VCPU_MB / mem)
        duration = cpu_ms + row.round_trips * REDIS_RTT_MS + (MSK_PRODUCE_MS if row.produces else 0)
        billed = math.ceil(duration)
        costed.append(Costed(row, basis, function or "(Globals)", mem, gw, redis, cpu_ms, duration, billed,
                             billed / 1000 * mem / 1024))
    return costed


def render(cpu: list[CpuRun], consumers: list[ConsumerRun], tpl: Template, provenance: list[str],
           paired: list[CpuRun]) -> str:
    """The generated section: inputs, assumptions, per-unit capacity, limits, monthly cost."""
    out = measured_section(cpu, consumers, provenance)
    say = out.append
    costed = costed_mix(cpu, tpl, paired)

    per_dau = sum(c.row.per_dau for c in costed)
    req_day = DAU * per_dau
    req_month = req_day * DAYS_PER_MONTH
    avg_rps = req_day / 86400
    peak_rps = avg_rps * PEAK_FACTOR
    redis_us_dau = sum(c.row.per_dau * c.redis_us for c in costed)
    gbs_dau = sum(c.row.per_dau * c.gbs for c in costed)
    conc_dau_peak = sum(c.row.per_dau / 86400 * PEAK_FACTOR * c.duration_ms / 1000 for c in costed)

    say("### The request mix (assumed)")
    say("")
    out += table(
        ["request", "per DAU per day", "costed as (cpu_cost route)", "Redis round trips", "awaits an MSK produce"],
        [[c.row.label, fmt(c.row.per_dau), c.basis, str(c.row.round_trips), "yes" if c.row.produces else "no"] for c in costed]
        + [["**total**", f"**{fmt(per_dau)}**", "", "", ""]],
    )
    say("")
    say("Other assumptions (constants at the top of `docs/capacity.py`):")
    say("")
    out += table(["assumption", "value"], [
        ["daily active users", f"{DAU:,}"],
        ["peak-hour rate ÷ daily average rate", f"{PEAK_FACTOR:g}"],
        ["messages whose receiver is offline (a notification and an email more)", f"{OFFLINE_MESSAGE_SHARE:.0%}"],
        ["month", f"{DAYS_PER_MONTH} days of requests, {HOURS_PER_MONTH} h of running resources"],
        ["Redis main-thread utilisation sized for", f"{REDIS_TARGET:.0%}"],
        ["one Redis round trip in the VPC", f"{REDIS_RTT_MS:g} ms"],
        ["an awaited produce to MSK", f"{MSK_PRODUCE_MS:g} ms"],
        ["Lambda arm64 vCPU ÷ one core of this machine", f"{CPU_SPEED:g}"],
        ["MSK records per DAU per day; bytes each; consumers reading each",
         f"{EVENTS_PER_DAU}; {EVENT_BYTES} B; {CONSUMER_FANOUT:g}"],
        ["MSK topics × partitions, replication, retention, brokers",
         f"{MSK_TOPICS} × {MSK_PARTITIONS}, RF {MSK_REPLICATION}, {MSK_RETENTION_DAYS} days, {MSK_BROKERS}"],
        ["consumer invocation overhead; batching window", f"{CONSUMER_FIXED_MS:g} ms; {ESM_BATCH_WINDOW_S:g} s"],
        ["log lines per API request × bytes", f"{LOG_LINES_PER_REQUEST} × {LOG_LINE_BYTES} B"],
        ["message history counted in Redis memory", f"{MEMORY_HORIZON_DAYS} days"],
        ["cache node, usable memory, replicas per shard",
         f"{CACHE_NODE} ({CACHE_NODE_GIB} GiB), {CACHE_USABLE:.0%}, {CACHE_REPLICAS}"],
    ])
    say("")
    say("### One Lambda function and one Redis node, per route")
    say("")
    say("Lambda duration = gateway CPU × (1,769 MB ÷ configured memory) + Redis round trips × "
        f"{REDIS_RTT_MS} ms (+ {MSK_PRODUCE_MS:g} ms for an awaited produce), billed rounded up to 1 ms. "
        f"One execution environment serves one request at a time: 1,000 ÷ duration req/s. "
        f"Redis: one node's main thread at {REDIS_TARGET:.0%} ÷ Redis CPU per request.")
    say("")
    rows = []
    for c in costed:
        rows.append([
            c.row.label.split(":")[0],
            f"{c.function} {c.memory} MB",
            f"{fmt(c.gateway_us)} µs → {fmt(c.cpu_ms, 2)} ms",
            f"{fmt(c.duration_ms, 2)} ms ({c.billed_ms} billed)",
            fmt(c.gbs, 5),
            fmt(1000 / c.duration_ms),
            fmt(1000 / c.duration_ms * LAMBDA_ACCOUNT_CONCURRENCY),
            f"{fmt(c.redis_us)} µs",
            fmt(REDIS_TARGET * 1e6 / c.redis_us),
        ])
    out += table(
        ["request", "function, memory", "CPU: measured → at that memory", "duration", "GB-s per request",
         "req/s per environment", f"req/s per function at {LAMBDA_ACCOUNT_CONCURRENCY:,} concurrency",
         "Redis CPU per request", f"req/s per Redis node at {REDIS_TARGET:.0%}"],
        rows,
    )
    say("")

    # ---- one MSK partition ----
    say("### One MSK partition")
    say("")
    rows = []
    partition_rate = {}
    for name in CONSUMERS:
        vals = [run.rows[name][0] for run in consumers if name in run.rows]
        if not vals:
            continue
        mem = tpl.memory.get(name, tpl.default_memory)
        rate = min(vals) * min(1.0, mem / VCPU_MB)
        poller = POLLER_MB_S * 1e6 / EVENT_BYTES
        partition_rate[name] = min(rate, poller)
        rows.append([name, f"{mem} MB", fmt(min(vals)), fmt(rate), fmt(poller), fmt(min(rate, poller))])
    out += table(["consumer", "memory", "records/s measured (full core)", "records/s at its memory",
                  f"poller limit ({POLLER_MB_S:g} MB/s ÷ {EVENT_BYTES} B)", "records/s per partition"], rows)
    say("")
    say("A partition is read by one consumer invocation at a time (ordering), so its ceiling is the "
        "consumer's records/s at its memory, scaled as if all of it were CPU (an underestimate: part is "
        "waiting on Redis and the broker). The broker side of a partition (one leader appending "
        f"{EVENT_BYTES}-byte records) is not what limits it.")
    say("")

    # ---- memory ----
    msg_per_dau = sum(c.row.per_dau for c in costed if c.row.measured in (MESSAGES, OFFLINE_MESSAGES))
    mem_dau = (msg_per_dau * MEMORY_HORIZON_DAYS * BYTES_PER_MESSAGE
               + BYTES_NOTIFICATIONS_FULL
               + EVENTS_PER_DAU * ANALYTICS_DEDUPE_DAYS * BYTES_PER_EVENT_ID
               + BYTES_USER_BASE)
    usable = CACHE_NODE_GIB * CACHE_USABLE * 2**30
    say("### Redis memory")
    say("")
    out += table(["what", "per DAU", f"{DAU:,} DAU"], [
        [f"messages: {fmt(msg_per_dau)}/day × {MEMORY_HORIZON_DAYS} days × {BYTES_PER_MESSAGE} B",
         f"{fmt(msg_per_dau * MEMORY_HORIZON_DAYS * BYTES_PER_MESSAGE / 1e3, 1)} KB",
         f"{fmt(DAU * msg_per_dau * MEMORY_HORIZON_DAYS * BYTES_PER_MESSAGE / 1e9, 1)} GB"],
        ["notifications list (100) + dedupe set, full",
         f"{fmt(BYTES_NOTIFICATIONS_FULL / 1e3, 1)} KB", f"{fmt(DAU * BYTES_NOTIFICATIONS_FULL / 1e9, 1)} GB"],
        [f"analytics dedupe: {EVENTS_PER_DAU} events × {ANALYTICS_DEDUPE_DAYS} days × {BYTES_PER_EVENT_ID} B",
         f"{fmt(EVENTS_PER_DAU * ANALYTICS_DEDUPE_DAYS * BYTES_PER_EVENT_ID / 1e3, 1)} KB",
         f"{fmt(DAU * EVENTS_PER_DAU * ANALYTICS_DEDUPE_DAYS * BYTES_PER_EVENT_ID / 1e9, 1)} GB"],
        ["user, profile cache, sessions, presence (estimate)", f"{fmt(BYTES_USER_BASE / 1e3, 1)} KB",
         f"{fmt(DAU * BYTES_USER_BASE / 1e9, 1)} GB"],
        ["**total**", f"**{fmt(mem_dau / 1e3, 1)} KB**", f"**{fmt(DAU * mem_dau / 1e9, 1)} GB**"],
    ])
    say("")

    # ---- which saturates first ----
    dau_per = lambda rps_limit: rps_limit / (per_dau * PEAK_FACTOR / 86400)  # noqa: E731
    msg_partition = partition_rate.get("NotificationsConsumerFunction")
    limits = []
    if tpl.http_rate_limit:
        limits.append((dau_per(tpl.http_rate_limit),
                       f"HTTP API stage throttle (template.yaml `HttpApiThrottlingRateLimit` default "
                       f"{fmt(tpl.http_rate_limit)} req/s)", "raise the parameter"))
    limits.append((usable / mem_dau,
                   f"Redis memory of one {CACHE_NODE} shard ({CACHE_NODE_GIB} GiB × {CACHE_USABLE:.0%} usable)",
                   "more shards (cluster mode; every key is hash-tagged) or bigger nodes"))
    if msg_partition:
        limits.append((MSK_PARTITIONS * msg_partition / (msg_per_dau * PEAK_FACTOR / 86400),
                       f"message-events with {MSK_PARTITIONS} partitions: NotificationsConsumerFunction "
                       f"at {fmt(msg_partition)} records/s per partition",
                       "more partitions (the key is the user id)"))
    limits.append((APIGW_ACCOUNT_RPS / (per_dau * PEAK_FACTOR / 86400),
                   f"API Gateway account throttle ({APIGW_ACCOUNT_RPS:,} req/s per region, default quota)",
                   "quota increase"))
    limits.append((REDIS_TARGET * 86400 * 1e6 / (redis_us_dau * PEAK_FACTOR),
                   f"Redis CPU of one node's main thread at {REDIS_TARGET:.0%}", "shard (cluster mode)"))
    limits.append((LAMBDA_ACCOUNT_CONCURRENCY / conc_dau_peak,
                   f"Lambda concurrency ({LAMBDA_ACCOUNT_CONCURRENCY:,} per region, default quota)",
                   "quota increase"))
    limits.sort()
    say("### Which saturates first")
    say("")
    say(f"The mix is {fmt(per_dau)} requests per DAU per day; at a peak of {PEAK_FACTOR:g}× the daily "
        f"average that is {fmt(per_dau * PEAK_FACTOR / 86400 * 1000, 2)} req/s per 1,000 DAU "
        f"({fmt(avg_rps)} req/s on average, {fmt(peak_rps)} at peak for {DAU:,} DAU). Redis CPU per DAU per "
        f"day: {fmt(redis_us_dau)} µs, so {DAU:,} DAU keep a Redis main thread "
        f"{fmt(100 * DAU * redis_us_dau / 86400 / 1e6 * PEAK_FACTOR)}% busy at peak; Lambda needs "
        f"{fmt(DAU * conc_dau_peak)} concurrent executions at peak.")
    say("")
    out += table(["#", "limit", "reached at DAU", "fix"],
                 [[str(i + 1), what, fmt(round(d, -3) if d >= 1e4 else d), fix]
                  for i, (d, what, fix) in enumerate(limits)])
    say("")

    # ---- monthly cost ----
    p = {k: v.value for k, v in PRICES.items()}
    apigw = min(req_month, 300e6) * p["apigw_http_first"] + max(0.0, req_month - 300e6) * p["apigw_http_next"]
    http_gbs = DAU * gbs_dau * DAYS_PER_MONTH
    records_month = DAU * EVENTS_PER_DAU * DAYS_PER_MONTH * CONSUMER_FANOUT
    esms = tpl.esm_count
    # Records are split evenly over the mappings (assumed). A mapping invokes at most once per
    # batching window per partition, or, without a window, once per invocation's fixed cost.
    month_s = 86400 * DAYS_PER_MONTH
    consumer_inv = sum(min(records_month / esms,
                           MSK_PARTITIONS * month_s / max(w, CONSUMER_FIXED_MS / 1000))
                       for w in tpl.esm_windows)
    windowless = sum(1 for w in tpl.esm_windows if w == 0)
    slowest = min((min(run.rows[n][0] for run in consumers if n in run.rows) for n in CONSUMERS
                   if any(n in run.rows for run in consumers)), default=None)
    per_record_s = (1 / slowest) * max(1.0, VCPU_MB / tpl.default_memory) if slowest else 0.0
    consumer_gbs = (consumer_inv * CONSUMER_FIXED_MS / 1000 + records_month * per_record_s) * tpl.default_memory / 1024
    shards_memory = math.ceil(DAU * mem_dau / usable)
    shards_cpu = math.ceil(DAU * redis_us_dau / 86400 / 1e6 * PEAK_FACTOR / REDIS_TARGET)
    shards = max(shards_memory, shards_cpu)
    nodes = shards * (1 + CACHE_REPLICAS)
    msk_stored_gb = DAU * EVENTS_PER_DAU * EVENT_BYTES * MSK_RETENTION_DAYS * MSK_REPLICATION / 1e9
    log_gb = req_month * LOG_LINES_PER_REQUEST * LOG_LINE_BYTES / 1e9
    items = [
        ("API Gateway HTTP API requests",
         f"{fmt(req_month / 1e6)} M requests: 300 M × $1.00/M + {fmt(max(0, req_month - 300e6) / 1e6)} M × $0.90/M",
         apigw),
        ("Lambda requests (HTTP)", f"{fmt(req_month / 1e6)} M × $0.20/M", req_month * p["lambda_request"]),
        ("Lambda duration (HTTP, arm64)",
         f"{fmt(DAU)} DAU × {fmt(gbs_dau, 4)} GB-s/DAU/day × {DAYS_PER_MONTH} = {fmt(http_gbs)} GB-s × $0.0000133334",
         http_gbs * p["lambda_gbs_arm"]),
        ("Lambda requests (MSK consumers)",
         f"{fmt(records_month / 1e6)} M records over {esms} mappings; each min(its records, "
         f"{MSK_PARTITIONS} partitions × {1 / ESM_BATCH_WINDOW_S:g}/s), or up to one per record for the "
         f"{windowless} with no batching window = {fmt(consumer_inv / 1e6)} M × $0.20/M",
         consumer_inv * p["lambda_request"]),
        ("Lambda duration (MSK consumers)",
         f"({fmt(consumer_inv / 1e6)} M × {CONSUMER_FIXED_MS:g} ms + {fmt(records_month / 1e6)} M records × "
         f"{fmt(per_record_s * 1e6)} µs) × {tpl.default_memory} MB = {fmt(consumer_gbs)} GB-s",
         consumer_gbs * p["lambda_gbs_arm"]),
        ("Provisioned event pollers (assumed price)",
         f"{esms} mappings × 1 event poller unit each (no PollerGroupName) × {HOURS_PER_MONTH} h × "
         f"${p['esm_poller_hour']}",
         esms * HOURS_PER_MONTH * p["esm_poller_hour"]),
        (f"ElastiCache Valkey {CACHE_NODE} (assumed price)",
         f"{shards} shard{'s' * (shards != 1)} (for {'memory' if shards_memory >= shards_cpu else 'CPU'}) × "
         f"{1 + CACHE_REPLICAS} nodes = {nodes} × {HOURS_PER_MONTH} h × "
         f"${p['cache_node_hour']}",
         nodes * HOURS_PER_MONTH * p["cache_node_hour"]),
        ("MSK brokers kafka.m7g.large (assumed price)",
         f"{MSK_BROKERS} × {HOURS_PER_MONTH} h × ${p['msk_broker_hour']} ({MSK_TOPICS} topics × {MSK_PARTITIONS} "
         f"partitions × RF {MSK_REPLICATION} = {MSK_TOPICS * MSK_PARTITIONS * MSK_REPLICATION // MSK_BROKERS} "
         "partition replicas per broker)",
         MSK_BROKERS * HOURS_PER_MONTH * p["msk_broker_hour"]),
        ("MSK storage (assumed price)",
         f"{fmt(msk_stored_gb)} GB retained ({EVENTS_PER_DAU}/DAU/day × {EVENT_BYTES} B × {MSK_RETENTION_DAYS} d × "
         f"RF {MSK_REPLICATION}) × {MSK_STORAGE_HEADROOM:g} headroom × $0.10",
         msk_stored_gb * MSK_STORAGE_HEADROOM * p["msk_storage_gb_month"]),
        ("CloudWatch Logs ingestion (assumed price)",
         f"{fmt(req_month / 1e6)} M × {LOG_LINES_PER_REQUEST} lines × {LOG_LINE_BYTES} B = {fmt(log_gb)} GB × $0.50",
         log_gb * p["cw_logs_gb"]),
    ]
    total = sum(i[2] for i in items)
    ranked = sorted(items, key=lambda i: -i[2])
    say(f"### Monthly cost at {DAU:,} DAU (us-east-1, on-demand, {DAYS_PER_MONTH}-day month, no free tier)")
    say("")
    out += table(["item", "arithmetic", "per month"], [[a, b, money(c)] for a, b, c in items]
                 + [["**total**", "", f"**{money(total)}**"]])
    say("")
    say("Largest: " + ", ".join(f"{a.split(' (')[0]} {100 * c / total:.0f}%" for a, _, c in ranked[:4])
        + f"; all Lambda duration together is {100 * (http_gbs + consumer_gbs) * p['lambda_gbs_arm'] / total:.1f}%.")
    say("")
    say(f"Per 1,000 DAU: {money(total / DAU * 1000)} a month; per million API requests: "
        f"{money(total / req_month * 1e6)} all-in. ElastiCache Serverless (Valkey) instead of nodes: "
        f"{fmt(DAU * mem_dau / 1e9, 1)} GB × {HOURS_PER_MONTH} h × ${p['cache_serverless_gb_hour']} = "
        f"{money(DAU * mem_dau / 1e9 * HOURS_PER_MONTH * p['cache_serverless_gb_hour'])} for storage alone, "
        "before ECPUs.")
    say("")

    # ---- Lambda Managed Instances ----
    cpu_us_req = sum(c.row.per_dau * c.gateway_us for c in costed) / per_dau
    vcpus = peak_rps * cpu_us_req / 1e6 / LMI_TARGET
    instances = max(LMI_MIN_INSTANCES, math.ceil(vcpus / LMI_VCPUS))
    lmi = instances * HOURS_PER_MONTH * p["ec2_m7g_large_hour"] * (1 + p["lmi_management_fee"])
    on_demand = http_gbs * p["lambda_gbs_arm"]
    say("### Lambda Managed Instances instead (HTTP functions on a capacity provider)")
    say("")
    say(f"Mean CPU per request over the mix {fmt(cpu_us_req)} µs (login's argon2 included); peak "
        f"{fmt(peak_rps)} req/s needs {fmt(vcpus, 2)} vCPU at {LMI_TARGET:.0%}, so {instances} × m7g.large "
        f"({LMI_VCPUS} vCPU; at least one per AZ): {instances} × {HOURS_PER_MONTH} h × "
        f"${p['ec2_m7g_large_hour']} × {1 + p['lmi_management_fee']:.2f} = **{money(lmi)}** a month, against "
        f"**{money(on_demand)}** of on-demand duration it replaces (the $0.20/M request charge is paid either "
        "way). "
        + ("It does not pay at this size: duration is a small part of the Lambda bill." if lmi > on_demand
           else "It pays at this size."))
    say("")
    return "\n".join(out)


def generated() -> str:
    cpu, consumers, provenance = [], [], []
    inputs = (("cpu_cost*.txt", parse_cpu_cost, cpu), ("consumers*.txt", parse_consumers, consumers))
    for pattern, parse, runs in inputs:
        for path in sorted(BENCH.glob(pattern), key=lambda f: (len(f.name), f.name)):
            text = path.read_text(encoding="utf-8")
            runs += parse(text, path.name)
            # Lines starting with "# " are how the file was made (command, commit, date, machine).
            notes = [line[2:].strip() for line in text.splitlines() if line.startswith("# ")]
            if notes:
                provenance.append(f"`docs/bench/{path.name}`: " + " ".join(notes))
    if not cpu:
        raise SystemExit(f"no route table in {BENCH}/cpu_cost*.txt")
    if not consumers:
        raise SystemExit(f"no consumer table in {BENCH}/consumers*.txt")
    tpl = parse_template(TEMPLATE.read_text(encoding="utf-8"))
    paired = parse_cpu_cost(OFFLINE_RATIO_RUNS.read_text(encoding="utf-8"), OFFLINE_RATIO_RUNS.name)
    body = render(cpu, consumers, tpl, provenance, paired)
    prices = table(
        ["price", "value", "source", "status"],
        [[k, f"{price_text(v)} {v.unit}", v.source, "read" if v.verified else "**assumption**"]
         for k, v in PRICES.items()],
    )
    return "\n".join([body, f"### Prices used (us-east-1, read {PRICES_READ})", "", *prices, ""])


SELF_TEST_CPU = """
| route | gateway CPU per request (target) | req/s | Redis round trips | Redis CPU per request |
|---|---|---|---|---|
| GET /profile | 40 µs (≤ 50: met) | 12,345 | 1 | 14 µs |
| POST /messages/{id} | REFUSED: 9 of 10 answers non-2xx, the figures would not be per request served | - | - | - |
| POST /messages/{id} | 120 µs | 2,000 (p99 9 ms) [1 of 10,000 non-2xx] | 3 | 40 µs |
| POST /messages/{id} (receiver offline) | 250 µs | 1,500 (p99 12 ms) | 3 | 85 µs |
idle (before the load) over 10 s: gateway 0.10% of a core, broker 1.00%, total 1.10%
| route | req/s | gateway CPU per request | Redis CPU per request |
|---|---|---|---|
| GET /profile | 11,000 | 45 µs | 15 µs |
"""
SELF_TEST_CONSUMERS = """
| consumer | records | time | records/s | Redis round trips | note |
|---|---|---|---|---|---|
| NotificationsConsumerFunction | 10000 | 90.0 ms | 111,111 | 3 | x |
"""


def self_test() -> None:
    """The parser keeps working when a bench reorders or adds columns, refuses a row, or
    prints several runs; fails loudly otherwise."""
    runs = parse_cpu_cost(SELF_TEST_CPU, "self-test")
    assert len(runs) == 2, runs
    first = runs[0].routes
    assert first["GET /profile"].gateway_us == 40 and first["GET /profile"].redis_us == 14, first
    assert first["POST /messages/{}"].req_s == 2000 and first["POST /messages/{}"].p99_ms == 9, first
    assert first["POST /messages/{}"].errors == "1 of 10,000", first
    assert first["POST /messages/{} (receiver offline)"].gateway_us == 250, first
    assert runs[0].refused == ["POST /messages/{id}"] and runs[0].idle == (0.1, 1.0, 1.1), runs[0]
    assert runs[1].routes["GET /profile"].req_s == 11000, runs[1]
    (cons,) = parse_consumers(SELF_TEST_CONSUMERS, "self-test")
    assert cons.rows["NotificationsConsumerFunction"] == (111111, 3, 10000), cons.rows
    tpl = parse_template(
        "Parameters:\n  HttpApiThrottlingRateLimit:\n    Type: Number\n    Default: 500\n"
        "Globals:\n  Function:\n    MemorySize: 256\nResources:\n  AuthFunction:\n    Properties:\n"
        "      MemorySize: !If [HttpOnManagedInstances, 2048, 512]\n      Events:\n        P:\n          Type: HttpApi\n"
        '          Properties: { ApiId: !Ref HttpApi, Method: GET, Path: "/users/{userId}" }\n'
        "        K:\n          Type: MSK\n"
        "  OpsFunction:\n    Properties:\n      MemorySize: !If [HttpOnManagedInstances, 2048, !Ref AWS::NoValue]\n"
        "  RebuildFunction:\n    Properties:\n      MemorySize: 1024\n"
    )
    assert (tpl.default_memory, tpl.memory, tpl.http_rate_limit, tpl.esm_count) == (
        256, {"AuthFunction": 512, "RebuildFunction": 1024}, 500, 1), tpl
    assert tpl.route_function == {"GET /users/{}": "AuthFunction"}, tpl.route_function


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/CAPACITY.md is out of date")
    args = parser.parse_args()
    doc = DOC.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        print(f"{DOC}: the marker comments are missing", file=sys.stderr)
        return 1
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    want = f"{head}{BEGIN}\n{generated()}{END}{tail}"
    if args.check:
        self_test()
        if want == doc:
            return 0
        sys.stderr.writelines(difflib.unified_diff(
            doc.splitlines(keepends=True), want.splitlines(keepends=True), str(DOC), "python3 docs/capacity.py"))
        print(f"{DOC} is out of date: run python3 docs/capacity.py", file=sys.stderr)
        return 1
    if want != doc:
        DOC.write_text(want, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
