//! Property tests: every SQL function of the extension, called with random
//! arities and values (NULL, extreme integers, NaN and infinities, bad and
//! huge JSON, long and non-UTF-8 text, blobs), never panics, never crashes,
//! answers every call with a value or a clear error, and leaves the
//! connection's policy valid.

use proptest::prelude::*;
use rusqlite::Connection;
use rusqlite::types::Value;

const FUNCTIONS: [&str; 9] = [
    "hybrid_version",
    "hybrid_busy_config",
    "hybrid_busy_timeout",
    "hybrid_lock_metrics_reset",
    "hybrid_lock_events_capacity",
    "hybrid_health_check",
    "hybrid_tune",
    "hybrid_priority",
    "hybrid_note_retry",
];

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1),
            Just(86_400_001)
        ]
        .prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Real),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(1e308)
        ]
        .prop_map(Value::Real),
        ".{0,40}".prop_map(Value::Text),
        json_text().prop_map(Value::Text),
        (1usize..200_000).prop_map(|n| Value::Text("x".repeat(n))),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::Blob),
        prop_oneof![
            Just("interactive"),
            Just("background"),
            Just("file"),
            Just("process"),
            Just("main")
        ]
        .prop_map(|s| Value::Text(s.to_string())),
    ]
}

/// Mostly-plausible JSON policies with wrong types, unknown keys, extremes.
fn json_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("base_ms"),
        Just("cap_ms"),
        Just("jitter"),
        Just("timeout_ms"),
        Just("max_retries"),
        Just("aging_ms"),
        Just("handoff_ms"),
        Just("bogus"),
        Just("")
    ];
    let json_value = prop_oneof![
        any::<f64>().prop_map(|f| if f.is_finite() {
            format!("{f}")
        } else {
            "1e999".into()
        }),
        any::<i64>().prop_map(|i| i.to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("\"full\"".to_string()),
        Just("\"decorrelated\"".to_string()),
        Just("\"nope\"".to_string()),
        Just("[1,2]".to_string()),
        Just("{}".to_string()),
    ];
    prop_oneof![
        prop::collection::vec((key, json_value), 0..5).prop_map(|pairs| {
            let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", body.join(","))
        }),
        Just("{".to_string()),
        Just("[]".to_string()),
        Just("\"text\"".to_string()),
        Just(format!("{{\"base_ms\":{}}}", "9".repeat(400))),
    ]
}

fn connection() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("p.db")).unwrap();
    hybrid::register(&conn).unwrap();
    (dir, conn)
}

proptest! {
    // PROPTEST_CASES raises the count (make soak uses 20000).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_function_answers_every_call(function in 0..FUNCTIONS.len(), args in prop::collection::vec(value(), 0..4)) {
        let (_dir, conn) = connection();
        let placeholders: Vec<String> = (1..=args.len()).map(|i| format!("?{i}")).collect();
        let sql = format!("SELECT {}({})", FUNCTIONS[function], placeholders.join(", "));
        let result = conn.query_row(&sql, rusqlite::params_from_iter(args.iter()), |r| r.get::<_, Value>(0));
        match result {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(_, Some(message))) => {
                prop_assert!(!message.is_empty());
                prop_assert!(message.len() < 1000, "message echoes input: {} bytes", message.len());
            }
            // Wrong arity of a fixed-arity function fails at prepare time.
            Err(rusqlite::Error::SqlInputError { msg, .. }) => prop_assert!(msg.contains("wrong number of arguments"), "{msg}"),
            Err(other) => prop_assert!(false, "unexpected error kind: {other:?}"),
        }
        // The connection still works and its policy is valid: it applies
        // cleanly to a fresh connection's default policy.
        let policy: String = conn.query_row("SELECT hybrid_busy_config()", [], |r| r.get(0)).unwrap();
        let (_dir2, fresh) = connection();
        let reparsed: rusqlite::Result<String> =
            fresh.query_row("SELECT hybrid_busy_config(?1)", [&policy], |r| r.get(0));
        prop_assert_eq!(reparsed.as_ref().ok(), Some(&policy), "{}", policy);
        let rows: i64 = conn.query_row("SELECT count(*) FROM hybrid_lock_metrics", [], |r| r.get(0)).unwrap();
        prop_assert!(rows >= 1);
    }

    #[test]
    fn any_json_patch_gives_a_valid_policy_or_an_error(patch in json_text()) {
        let (_dir, conn) = connection();
        let state = hybrid::register(&conn).unwrap();
        let applied: rusqlite::Result<String> =
            conn.query_row("SELECT hybrid_busy_config(?1)", [&patch], |r| r.get(0));
        if applied.is_ok() {
            let policy = state.policy();
            prop_assert_eq!(policy.validated(), Ok(policy));
        } else {
            prop_assert_eq!(state.policy(), hybrid::BackoffPolicy::default(), "unchanged on error");
        }
    }
}

/// Tables too: every eponymous table reads without error after random
/// configuration calls.
#[test]
fn tables_read_after_a_storm_of_bad_calls() {
    let (_dir, conn) = connection();
    for i in 0..200 {
        let _ = conn.query_row(
            "SELECT hybrid_busy_config(?1)",
            [format!("{{\"timeout_ms\": {}}}", i * 1000 - 50_000)],
            |r| r.get::<_, String>(0),
        );
        let _ = conn.query_row("SELECT hybrid_lock_events_capacity(?1)", [i - 100], |r| {
            r.get::<_, i64>(0)
        });
    }
    for table in [
        "hybrid_lock_metrics",
        "hybrid_lock_events",
        "hybrid_lock_waiters",
        "hybrid_health",
    ] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert!(n >= 0, "{table}");
    }
}

/// The value the property test above once found: a policy's JSON must
/// apply to a fresh connection unchanged (serde_json parses floats exactly
/// only with `float_roundtrip`).
#[test]
fn a_policy_survives_its_own_json() {
    let (_dir, conn) = connection();
    conn.query_row(
        "SELECT hybrid_busy_timeout(?1)",
        [5.1264724724084507e-172],
        |r| r.get::<_, Value>(0),
    )
    .unwrap();
    let policy: String = conn
        .query_row("SELECT hybrid_busy_config()", [], |r| r.get(0))
        .unwrap();
    let (_dir2, fresh) = connection();
    let reparsed: String = fresh
        .query_row("SELECT hybrid_busy_config(?1)", [&policy], |r| r.get(0))
        .unwrap();
    assert_eq!(reparsed, policy);
}
