//! The event source mapping's decisions, without a broker.

use super::*;

fn source(report: bool, bisect: bool, retries: Option<u32>) -> MskSource {
    MskSource {
        function: "ConsumerFn".into(),
        topic: "user-events".into(),
        group: "g".into(),
        batch_size: 100,
        batching_window: crate::template::DEFAULT_KAFKA_BATCHING_WINDOW,
        starting_position: "TRIM_HORIZON".into(),
        report_batch_item_failures: report,
        maximum_retry_attempts: retries,
        bisect_batch_on_function_error: bisect,
        maximum_record_age: Some(Duration::from_secs(60)),
        on_failure_topic: Some("dead-letter-events".into()),
    }
}

fn record(partition: i32, offset: i64, age_secs: i64) -> InFlight {
    in_flight(
        partition,
        offset,
        Record {
            key: Some(format!("user-{offset}").into_bytes()),
            value: Some(b"{}".to_vec()),
            headers: BTreeMap::new(),
            timestamp: Utc::now() - chrono::Duration::seconds(age_secs),
        },
    )
}

/// A user-events record in flight, invoked once.
fn in_flight(partition: i32, offset: i64, record: Record) -> InFlight {
    InFlight {
        partition,
        record: Fetched::new("user-events", partition, RecordAndOffset { record, offset }),
        invocations: 1,
    }
}

fn chunk(records: &[(i32, i64)]) -> Chunk {
    Chunk {
        records: records.iter().map(|(p, o)| record(*p, *o, 0)).collect(),
        retries: 0,
    }
}

fn offsets(records: &[InFlight]) -> Vec<(i32, i64)> {
    records.iter().map(|r| (r.partition, r.record.offset)).collect()
}

fn failures(items: &[(&str, i64)]) -> Result<Value, String> {
    let list: Vec<Value> = items
        .iter()
        .map(|(p, o)| json!({"itemIdentifier": {"partition": p, "offset": o}}))
        .collect();
    Ok(json!({ "received": 3, "batchItemFailures": list }))
}

#[test]
fn a_successful_invocation_commits_everything() {
    let s = source(true, true, Some(2));
    for response in [Ok(json!({})), Ok(json!({"batchItemFailures": []})), Ok(Value::Null)] {
        let d = decide(&s, chunk(&[(0, 1), (1, 4)]), &response);
        assert_eq!(offsets(&d.done), vec![(0, 1), (1, 4)]);
        assert!(d.retry.is_empty() && d.give_up.is_empty());
    }
}

#[test]
fn a_partial_response_commits_up_to_the_lowest_reported_offset_and_retries_the_rest() {
    let s = source(true, true, Some(2));
    let d = decide(
        &s,
        chunk(&[(0, 1), (0, 2), (0, 3), (0, 4), (1, 7)]),
        &failures(&[("user-events-0", 4), ("user-events-0", 3)]),
    );
    assert_eq!(offsets(&d.done), vec![(0, 1), (0, 2), (1, 7)]);
    assert_eq!(d.retry.len(), 1);
    assert_eq!(offsets(&d.retry[0].records), vec![(0, 3), (0, 4)]);
    assert_eq!(d.retry[0].retries, 1, "a retry from a checkpoint uses the budget");
    assert!(d.give_up.is_empty());
}

#[test]
fn a_partial_response_is_ignored_without_report_batch_item_failures() {
    let d = decide(
        &source(false, true, Some(2)),
        chunk(&[(0, 1), (0, 2)]),
        &failures(&[("user-events-0", 2)]),
    );
    assert_eq!(offsets(&d.done), vec![(0, 1), (0, 2)]);
}

#[test]
fn an_identifier_not_in_the_batch_fails_the_whole_batch() {
    for bad in [
        ("user-events-0", 9),
        ("user-events-5", 1),
        ("other-events-0", 1),
        ("user-events-x", 1),
    ] {
        let d = decide(
            &source(true, false, Some(2)),
            chunk(&[(0, 1), (0, 2)]),
            &failures(&[bad]),
        );
        assert!(d.done.is_empty(), "{bad:?}");
        assert_eq!(offsets(&d.retry[0].records), vec![(0, 1), (0, 2)], "{bad:?}");
    }
}

#[test]
fn a_function_error_bisects_into_halves_first_half_first_without_using_a_retry() {
    let d = decide(
        &source(true, true, Some(2)),
        chunk(&[(0, 1), (0, 2), (1, 1), (1, 2), (1, 3)]),
        &Err("boom".into()),
    );
    assert_eq!(d.retry.len(), 2);
    assert_eq!(offsets(&d.retry[0].records), vec![(0, 1), (0, 2)]);
    assert_eq!(offsets(&d.retry[1].records), vec![(1, 1), (1, 2), (1, 3)]);
    assert!(d.retry.iter().all(|c| c.retries == 0));
}

#[test]
fn without_bisect_the_same_records_are_retried_until_the_budget_is_used_then_given_up() {
    let s = source(true, false, Some(2));
    let mut c = chunk(&[(0, 1), (0, 2)]);
    for expected in 1..=2 {
        let d = decide(&s, c, &Err("boom".into()));
        assert_eq!(d.retry.len(), 1);
        c = d.retry[0].clone();
        assert_eq!(c.retries, expected);
    }
    let d = decide(&s, c, &Err("boom".into()));
    assert!(d.retry.is_empty());
    assert_eq!(
        offsets(&d.give_up.iter().map(|g| g.record.clone()).collect::<Vec<_>>()),
        vec![(0, 1), (0, 2)]
    );
    assert!(d
        .give_up
        .iter()
        .all(|g| g.condition == Condition::RetriesExhausted && g.function_error));
}

#[test]
fn infinite_retries_without_a_destination_never_give_up() {
    let mut s = source(true, false, None);
    s.on_failure_topic = None;
    let c = Chunk {
        retries: 1_000,
        ..chunk(&[(0, 1)])
    };
    assert_eq!(decide(&s, c, &Err("boom".into())).retry.len(), 1);
}

/// Drives [`decide`] as the poll loop does, with a function that fails on `bad`:
/// returns each invocation's offsets and what was given up on.
fn simulate(s: &MskSource, fetched: Chunk, bad: i64) -> (Vec<Vec<i64>>, Vec<GiveUp>) {
    let mut queue = VecDeque::from([fetched]);
    let (mut invocations, mut given_up) = (Vec::new(), Vec::new());
    while let Some(mut c) = queue.pop_front() {
        assert!(invocations.len() < 1_000, "unbounded");
        c.records.iter_mut().for_each(|r| r.invocations += 1);
        let seen: Vec<i64> = c.records.iter().map(|r| r.record.offset).collect();
        let result = if seen.contains(&bad) {
            Err("boom".into())
        } else {
            Ok(json!({}))
        };
        invocations.push(seen);
        let d = decide(s, c, &result);
        given_up.extend(d.give_up);
        d.retry.into_iter().rev().for_each(|r| queue.push_front(r));
    }
    (invocations, given_up)
}

#[test]
fn bisection_isolates_one_bad_record_of_100_within_eight_invocations_and_gives_up_only_on_it() {
    let s = source(true, true, Some(2));
    let fetched = Chunk {
        records: (0..100)
            .map(|o| InFlight {
                invocations: 0,
                ..record(0, o, 0)
            })
            .collect(),
        retries: 0,
    };
    let (invocations, given_up) = simulate(&s, fetched, 37);
    let carrying: Vec<&Vec<i64>> = invocations.iter().filter(|i| i.contains(&37)).collect();
    let isolated = carrying.iter().position(|i| i.len() == 1).expect("isolated") + 1;
    assert!(isolated <= 8, "isolated after {isolated} invocations");
    assert_eq!(carrying.len(), isolated + 2, "then its two retries");
    assert_eq!(given_up.len(), 1);
    assert_eq!(given_up[0].record.record.offset, 37);
    assert_eq!(given_up[0].record.invocations as usize, carrying.len());
    let delivered: std::collections::BTreeSet<i64> = invocations.iter().flatten().copied().collect();
    assert_eq!(delivered.len(), 100, "every record was delivered");
}

#[test]
fn records_older_than_the_age_limit_expire_without_an_invocation() {
    let s = source(true, true, Some(2));
    let c = Chunk {
        records: vec![record(0, 1, 3_600), record(0, 2, 0)],
        retries: 1,
    };
    let (fresh, expired) = expire(&s, c, Utc::now());
    assert_eq!(offsets(&fresh.records), vec![(0, 2)]);
    assert_eq!(fresh.retries, 1);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].condition, Condition::RecordAgeExceeded);
    let unlimited = MskSource {
        maximum_record_age: None,
        ..s
    };
    let (fresh, expired) = expire(&unlimited, chunk(&[(0, 1)]), Utc::now() + chrono::Duration::days(30));
    assert_eq!((fresh.records.len(), expired.len()), (1, 0));
}

#[test]
fn partitions_commit_up_to_their_first_pending_record() {
    let ends = BTreeMap::from([(0, 10), (1, 5)]);
    let pending = chunk(&[(0, 6), (0, 7)]);
    assert_eq!(commit_points(&ends, &pending.records), BTreeMap::from([(0, 6), (1, 5)]));
    assert_eq!(commit_points(&ends, &[]), ends);
}

#[test]
fn the_on_failure_message_has_lambdas_shape_and_the_original_record() {
    let s = source(true, true, Some(2));
    let mut r = record(2, 17, 0);
    r.invocations = 3;
    let g = GiveUp {
        record: r,
        condition: Condition::RetriesExhausted,
        function_error: true,
    };
    let m = on_failure_message(&s, &g, Utc::now());
    assert_eq!(m["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(m["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(
        m["requestContext"]["functionArn"],
        "arn:aws:lambda:local:000000000000:function:ConsumerFn"
    );
    assert_eq!(m["responseContext"]["functionError"], "Unhandled");
    assert_eq!(m["version"], "1.0");
    assert_eq!(m["KafkaBatchInfo"]["batchSize"], 1);
    assert_eq!(m["KafkaBatchInfo"]["recordInfo"]["offset"], "17");
    let original = &m["payload"]["records"]["user-events-2"][0];
    assert_eq!(original["offset"], 17);
    assert_eq!(original["key"], STANDARD.encode("user-17"));
    assert_eq!(
        m["KafkaBatchInfo"]["payloadSize"].as_u64(),
        Some(m["payload"].to_string().len() as u64)
    );
    let expired = GiveUp {
        record: InFlight {
            invocations: 0,
            ..g.record
        },
        condition: Condition::RecordAgeExceeded,
        function_error: false,
    };
    let m = on_failure_message(&s, &expired, Utc::now());
    assert_eq!(m["requestContext"]["condition"], "RecordAgeExceeded");
    assert!(m.get("responseContext").is_none(), "never invoked");
}

#[test]
fn retry_backoff_is_short_and_bounded() {
    assert_eq!(retry_backoff(0), Duration::ZERO);
    assert_eq!(retry_backoff(1), FIRST_BACKOFF);
    assert_eq!(retry_backoff(2), FIRST_BACKOFF * 2);
    assert_eq!(retry_backoff(10_000), MAX_BACKOFF);
}

/// Two records at a fixed time (its milliseconds survive the crate's float parse), one
/// without a key and with headers, and the JSON Lambda sends for them, written out.
fn records_and_lambdas_json() -> (Chunk, Value) {
    let timestamp = DateTime::from_timestamp_millis(1_764_345_600_500).unwrap();
    let value = Some(b"{}".to_vec());
    let keyed = Record {
        key: Some(b"user-5".to_vec()),
        value: value.clone(),
        headers: BTreeMap::new(),
        timestamp,
    };
    let headers = BTreeMap::from([
        ("eventType".to_string(), b"MESSAGE_SENT".to_vec()),
        ("x".to_string(), vec![0xff, 1]),
    ]);
    let keyed = in_flight(0, 5, keyed);
    let with_headers = in_flight(
        1,
        8,
        Record {
            key: None,
            value,
            headers,
            timestamp,
        },
    );
    let chunk = Chunk {
        records: vec![keyed, with_headers],
        retries: 0,
    };
    let signed = |bytes: &[u8]| bytes.iter().map(|b| *b as i8).collect::<Vec<i8>>();
    let json = json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": EVENT_SOURCE_ARN,
        "bootstrapServers": "local",
        "records": {
            "user-events-0": [{
                "topic": "user-events", "partition": 0, "offset": 5, "timestamp": 1_764_345_600_500_i64,
                "timestampType": "CREATE_TIME", "key": STANDARD.encode("user-5"), "value": STANDARD.encode("{}"),
                "headers": [],
            }],
            "user-events-1": [{
                "topic": "user-events", "partition": 1, "offset": 8, "timestamp": 1_764_345_600_500_i64,
                "timestampType": "CREATE_TIME", "key": null, "value": STANDARD.encode("{}"),
                "headers": [{"eventType": signed(b"MESSAGE_SENT")}, {"x": [-1, 1]}],
            }],
        },
    });
    (chunk, json)
}

#[test]
fn the_invoked_event_is_what_the_function_reads_from_lambdas_json() {
    let (chunk, lambda) = records_and_lambdas_json();
    let parsed: KafkaEvent = serde_json::from_value(lambda).unwrap();
    assert_eq!(chunk_event("user-events", &chunk), parsed);
}

#[test]
fn a_record_given_up_on_is_written_as_lambda_writes_it() {
    let (chunk, lambda) = records_and_lambdas_json();
    for r in &chunk.records {
        let key = format!("user-events-{}", r.partition);
        let written = record_json(&r.record.kafka);
        assert_eq!(written, lambda["records"][&key][0], "{key}");
    }
}
