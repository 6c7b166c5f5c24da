//! The JSON form of a [`BackoffPolicy`], as read and written by the SQL
//! function `hybrid_busy_config`.
//!
//! Pure Rust. A JSON patch changes only the keys it names; every key is
//! checked (type, range, unknown names) and the first problem is reported
//! with the key and the allowed values, so a typo never silently keeps the
//! old value.

use serde_json::{Map, Value, json};

use crate::policy::backoff::{BackoffPolicy, Jitter};
use crate::text::truncate;

/// The keys `hybrid_busy_config` accepts, in the order they are printed.
pub(crate) const KEYS: [&str; 8] = [
    "base_ms",
    "cap_ms",
    "jitter",
    "timeout_ms",
    "max_retries",
    "aging_ms",
    "handoff_ms",
    "max_wait_ms",
];

/// Largest accepted `max_retries`.
pub(crate) const MAX_RETRIES_LIMIT: u64 = 1_000_000_000;

/// The policy as a JSON object with every key, e.g.
/// `{"base_ms":0.1,"cap_ms":2.0,"jitter":"full","timeout_ms":5000.0,"max_retries":null}`.
pub(crate) fn policy_to_json(policy: &BackoffPolicy) -> String {
    json!({
        "base_ms": policy.base_ms,
        "cap_ms": policy.cap_ms,
        "jitter": policy.jitter.name(),
        "timeout_ms": policy.timeout_ms,
        "max_retries": policy.max_retries,
        "aging_ms": policy.aging_ms,
        "handoff_ms": policy.handoff_ms,
        "max_wait_ms": policy.max_wait_ms,
    })
    .to_string()
}

/// Applies a JSON object of changes to `current` and returns the new,
/// validated policy. On error `current` is untouched and the message names
/// the offending key.
pub(crate) fn apply_json_patch(
    current: &BackoffPolicy,
    patch: &str,
) -> Result<BackoffPolicy, String> {
    let value: Value = serde_json::from_str(patch)
        .map_err(|e| format!("hybrid_busy_config: argument is not valid JSON ({e})"))?;
    let Value::Object(fields) = value else {
        return Err(format!(
            "hybrid_busy_config: argument must be a JSON object with keys {}, got {}",
            KEYS.join(", "),
            kind_of(&value)
        ));
    };
    apply_fields(current, &fields).map_err(|e| format!("hybrid_busy_config: {e}"))
}

fn apply_fields(
    current: &BackoffPolicy,
    fields: &Map<String, Value>,
) -> Result<BackoffPolicy, String> {
    let mut next = *current;
    for (key, value) in fields {
        match key.as_str() {
            "base_ms" => next.base_ms = number(key, value)?,
            "cap_ms" => next.cap_ms = number(key, value)?,
            "timeout_ms" => next.timeout_ms = number(key, value)?,
            "handoff_ms" => next.handoff_ms = number(key, value)?,
            "max_wait_ms" => next.max_wait_ms = number(key, value)?,
            "aging_ms" => {
                next.aging_ms = match value {
                    Value::Null => None,
                    other => Some(number(key, other)?),
                }
            }
            "jitter" => {
                let name = value.as_str().ok_or_else(|| {
                    format!(
                        "jitter must be one of {}, got {}",
                        Jitter::NAMES.join(", "),
                        kind_of(value)
                    )
                })?;
                next.jitter = Jitter::from_name(name).ok_or_else(|| {
                    format!(
                        "unknown jitter '{}'; use one of {}",
                        truncate(name, 40),
                        Jitter::NAMES.join(", ")
                    )
                })?;
            }
            "max_retries" => {
                next.max_retries = match value {
                    Value::Null => None,
                    Value::Number(n) => {
                        let retries =
                            n.as_u64()
                                .filter(|r| *r <= MAX_RETRIES_LIMIT)
                                .ok_or_else(|| {
                                    format!(
                                        "max_retries must be null or a whole number from 0 to \
                                     {MAX_RETRIES_LIMIT}, got {n}"
                                    )
                                })?;
                        Some(retries as u32)
                    }
                    other => {
                        return Err(format!(
                            "max_retries must be null or a whole number, got {}",
                            kind_of(other)
                        ));
                    }
                }
            }
            unknown => {
                return Err(format!(
                    "unknown key '{}'; allowed keys are {}",
                    truncate(unknown, 40),
                    KEYS.join(", ")
                ));
            }
        }
    }
    next.validated().map_err(|e| e.to_string())
}

fn number(key: &str, value: &Value) -> Result<f64, String> {
    // JSON has no NaN or infinity literals, so a finite f64 is all that can
    // arrive here; range checks live in BackoffPolicy::validated.
    value.as_f64().ok_or_else(|| {
        format!(
            "{key} must be a number of milliseconds, got {}",
            kind_of(value)
        )
    })
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string \"{}\"", truncate(s, 40)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(patch: &str) -> Result<BackoffPolicy, String> {
        apply_json_patch(&BackoffPolicy::default(), patch)
    }

    #[test]
    fn round_trips_every_key() {
        let p = apply(
            r#"{"base_ms":0.25,"cap_ms":4,"jitter":"equal","timeout_ms":750,"max_retries":9,"aging_ms":30,"handoff_ms":2,"max_wait_ms":80}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            BackoffPolicy {
                base_ms: 0.25,
                cap_ms: 4.0,
                jitter: Jitter::Equal,
                timeout_ms: 750.0,
                max_retries: Some(9),
                aging_ms: Some(30.0),
                handoff_ms: 2.0,
                max_wait_ms: 80.0,
            }
        );
        assert_eq!(apply(&policy_to_json(&p)).unwrap(), p);
    }

    #[test]
    fn patch_keeps_unnamed_keys() {
        let p = apply(r#"{"timeout_ms": 100}"#).unwrap();
        assert_eq!(
            p,
            BackoffPolicy {
                timeout_ms: 100.0,
                ..BackoffPolicy::default()
            }
        );
        let p = apply("{}").unwrap();
        assert_eq!(p, BackoffPolicy::default());
    }

    #[test]
    fn max_retries_null_clears_the_limit() {
        let limited = apply(r#"{"max_retries": 3}"#).unwrap();
        let cleared = apply_json_patch(&limited, r#"{"max_retries": null}"#).unwrap();
        assert_eq!(cleared.max_retries, None);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("not json", "not valid JSON"),
            ("[1,2]", "must be a JSON object"),
            ("42", "must be a JSON object"),
            (r#"{"base_ms": -1}"#, "base_ms"),
            (r#"{"base_ms": "1"}"#, "base_ms must be a number"),
            (r#"{"cap_ms": 0.05}"#, "cap_ms: must be >= base_ms"),
            (r#"{"timeout_ms": -1}"#, "timeout_ms"),
            (r#"{"timeout_ms": 1e300}"#, "timeout_ms"),
            (r#"{"jitter": "fast"}"#, "unknown jitter 'fast'"),
            (r#"{"jitter": 1}"#, "jitter must be one of"),
            (r#"{"max_retries": -1}"#, "max_retries"),
            (r#"{"max_retries": 1.5}"#, "max_retries"),
            (r#"{"max_retries": 1e12}"#, "max_retries"),
            (
                r#"{"max_retries": "3"}"#,
                "max_retries must be null or a whole number",
            ),
            (r#"{"timeout": 5}"#, "unknown key 'timeout'"),
            (
                r#"{"jitter": [1, 2, 3]}"#,
                "jitter must be one of full, equal, decorrelated, none, got an array",
            ),
        ];
        for (patch, expected) in cases {
            let err = apply(patch).expect_err(patch);
            assert!(err.contains(expected), "{patch}: {err}");
            assert!(err.starts_with("hybrid_busy_config: "), "{err}");
        }
    }

    #[test]
    fn messages_never_echo_huge_input() {
        let long = "k".repeat(100_000);
        for patch in [
            format!(r#"{{"{long}": 1}}"#),
            format!(r#"{{"jitter": "{long}"}}"#),
        ] {
            let err = apply(&patch).unwrap_err();
            assert!(err.len() < 300, "{} bytes", err.len());
        }
    }
}
