//! The extension's scalar SQL functions. Each validates its arguments and
//! reports a problem as an SQL error naming the function, the argument and
//! what is allowed; none can crash the host (rusqlite wraps every call in
//! `catch_unwind`).
//!
//! Functions that change state are registered `SQLITE_DIRECTONLY`: they run
//! only from top-level SQL, never from a view or trigger of a database
//! someone else prepared.

use std::sync::Arc;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Error, Result};

use crate::backoff::MAX_TIMEOUT_MS;
use crate::config::{apply_json_patch, policy_to_json, truncate};
use crate::handler::ConnState;
use crate::handoff::Priority;
use crate::metrics::{self, MAX_EVENT_CAPACITY};
use crate::sidefile::SideFile;
use crate::sql::{health, tune};

/// The extension's version, as `hybrid_version()` returns it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error message for the caller of an SQL function.
fn user_error(message: String) -> Error {
    Error::UserFunctionError(message.into())
}

/// Describes a value for an error message without echoing huge inputs.
fn describe(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(i) => format!("integer {i}"),
        ValueRef::Real(r) => format!("real {r}"),
        ValueRef::Text(t) => format!("text '{}'", truncate(&String::from_utf8_lossy(t), 40)),
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

fn arity_error(name: &str, allowed: &str, got: usize) -> Error {
    user_error(format!("{name}() takes {allowed}, got {got}"))
}

/// The connection running the current function call.
fn connection<'a>(ctx: &'a Context<'_>) -> Result<rusqlite::functions::ConnectionRef<'a>> {
    // SAFETY: we only run queries on the calling connection, on its own
    // thread, during the call; we never close it or keep the reference.
    unsafe { ctx.get_connection() }
}

/// Registers every function on `conn`; each closure owns a reference to
/// `state`, which is how the state lives exactly as long as the connection.
pub fn register(conn: &Connection, state: &Arc<ConnState>) -> Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    let direct = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;

    let s = Arc::clone(state);
    conn.create_scalar_function("hybrid_version", 0, pure, move |_ctx| {
        let _owner = &s;
        Ok(VERSION)
    })?;

    let s = Arc::clone(state);
    conn.create_scalar_function("hybrid_busy_config", -1, direct, move |ctx| {
        busy_config(ctx, &s)
    })?;

    let s = Arc::clone(state);
    conn.create_scalar_function("hybrid_busy_timeout", -1, direct, move |ctx| {
        busy_timeout(ctx, &s)
    })?;

    let s = Arc::clone(state);
    conn.create_scalar_function("hybrid_lock_metrics_reset", -1, direct, move |ctx| {
        let also_file = match ctx.len() {
            0 => false,
            1 => match ctx.get_raw(0) {
                ValueRef::Text(b"process") => false,
                ValueRef::Text(b"file") => true,
                other => {
                    return Err(user_error(format!(
                        "hybrid_lock_metrics_reset: scope must be 'process' or 'file', got {}",
                        describe(other)
                    )));
                }
            },
            n => {
                return Err(arity_error(
                    "hybrid_lock_metrics_reset",
                    "0 or 1 argument",
                    n,
                ));
            }
        };
        s.refresh(&*connection(ctx)?)?;
        let files = metrics::global().files();
        if also_file {
            for file in &files {
                if let Some(side) = SideFile::existing(file.path()) {
                    side.reset_counters();
                }
            }
        }
        metrics::global().reset();
        Ok(files.len() as i64)
    })?;

    let s = Arc::clone(state);
    conn.create_scalar_function("hybrid_priority", -1, direct, move |ctx| {
        s.refresh(&*connection(ctx)?)?;
        match ctx.len() {
            0 => {}
            1 => {
                let priority = match ctx.get_raw(0) {
                    ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(Priority::from_name),
                    _ => None,
                };
                let Some(priority) = priority else {
                    return Err(user_error(format!(
                        "hybrid_priority: class must be 'interactive' or 'background', got {}",
                        describe(ctx.get_raw(0))
                    )));
                };
                s.set_priority(priority);
            }
            n => return Err(arity_error("hybrid_priority", "0 or 1 argument", n)),
        }
        Ok(s.priority().name())
    })?;

    let s = Arc::clone(state);
    conn.create_scalar_function("hybrid_lock_events_capacity", -1, direct, move |ctx| {
        s.refresh(&*connection(ctx)?)?;
        match ctx.len() {
            0 => {}
            1 => {
                let wanted = match ctx.get_raw(0) {
                    ValueRef::Integer(n) => usize::try_from(n)
                        .ok()
                        .filter(|n| (1..=MAX_EVENT_CAPACITY).contains(n)),
                    _ => None,
                };
                let Some(wanted) = wanted else {
                    return Err(user_error(format!(
                        "hybrid_lock_events_capacity: capacity must be an integer from 1 to \
                         {MAX_EVENT_CAPACITY}, got {}",
                        describe(ctx.get_raw(0))
                    )));
                };
                metrics::global()
                    .set_event_capacity(wanted)
                    .map_err(user_error)?;
            }
            n => {
                return Err(arity_error(
                    "hybrid_lock_events_capacity",
                    "0 or 1 argument",
                    n,
                ));
            }
        }
        Ok(metrics::global().event_capacity() as i64)
    })?;

    let s = Arc::clone(state);
    conn.create_scalar_function("hybrid_health_check", -1, direct, move |ctx| {
        let conn = connection(ctx)?;
        let conn: &Connection = &conn;
        s.refresh(conn)?;
        let schema = match ctx.len() {
            0 => None,
            1 => match ctx.get_raw(0) {
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                other => {
                    return Err(user_error(format!(
                        "hybrid_health_check: schema must be text (e.g. 'main'), got {}",
                        describe(other)
                    )));
                }
            },
            n => return Err(arity_error("hybrid_health_check", "0 or 1 argument", n)),
        };
        health::health_check(conn, schema.as_deref()).map_err(user_error)
    })?;

    let s = Arc::clone(state);
    conn.create_scalar_function("hybrid_tune", -1, direct, move |ctx| {
        if !ctx.is_empty() {
            return Err(arity_error("hybrid_tune", "no arguments", ctx.len()));
        }
        let conn = connection(ctx)?;
        let conn: &Connection = &conn;
        s.refresh(conn)?;
        tune::tune(conn)
    })?;
    Ok(())
}

/// `hybrid_busy_config()` → the policy as JSON;
/// `hybrid_busy_config(json)` → applies the changes, returns the new policy.
fn busy_config(ctx: &Context<'_>, state: &ConnState) -> Result<String> {
    state.refresh(&*connection(ctx)?)?;
    match ctx.len() {
        0 => Ok(policy_to_json(&state.policy())),
        1 => {
            let patch = match ctx.get_raw(0) {
                ValueRef::Text(t) => std::str::from_utf8(t).map_err(|_| {
                    user_error("hybrid_busy_config: argument is not valid UTF-8".into())
                })?,
                other => {
                    return Err(user_error(format!(
                        "hybrid_busy_config: argument must be a JSON object as text, e.g. \
                         '{{\"timeout_ms\":2000}}', got {}",
                        describe(other)
                    )));
                }
            };
            let policy = apply_json_patch(&state.policy(), patch).map_err(user_error)?;
            state.set_policy(policy);
            Ok(policy_to_json(&policy))
        }
        n => Err(arity_error("hybrid_busy_config", "0 or 1 argument", n)),
    }
}

/// `hybrid_busy_timeout(ms)`: sets the deadline and (re)installs the hybrid
/// handler on this connection; returns the deadline in ms.
fn busy_timeout(ctx: &Context<'_>, state: &ConnState) -> Result<Value> {
    if ctx.len() != 1 {
        return Err(arity_error(
            "hybrid_busy_timeout",
            "1 argument (milliseconds)",
            ctx.len(),
        ));
    }
    let ms = match ctx.get_raw(0) {
        ValueRef::Integer(i) => Some(i as f64),
        ValueRef::Real(r) => Some(r),
        _ => None,
    }
    .filter(|ms| ms.is_finite() && (0.0..=MAX_TIMEOUT_MS).contains(ms));
    let Some(ms) = ms else {
        return Err(user_error(format!(
            "hybrid_busy_timeout: ms must be a number from 0 to {MAX_TIMEOUT_MS}, got {}",
            describe(ctx.get_raw(0))
        )));
    };
    let policy = crate::backoff::BackoffPolicy {
        timeout_ms: ms,
        ..state.policy()
    };
    state.set_policy(
        policy
            .validated()
            .map_err(|e| user_error(format!("hybrid_busy_timeout: {e}")))?,
    );
    state.install(&*connection(ctx)?)?;
    Ok(if ms.fract() == 0.0 {
        Value::Integer(ms as i64)
    } else {
        Value::Real(ms)
    })
}
