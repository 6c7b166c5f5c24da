//! The extension's scalar SQL functions, registered from one declarative
//! table ([`FUNCTIONS`]): name, the arities it accepts, flags, body.
//!
//! Each body validates its arguments and reports a problem as an SQL error
//! naming the function, the argument and what is allowed; a wrong number of
//! arguments is refused by SQLite itself when the statement is prepared.
//! Functions that change state are `SQLITE_DIRECTONLY`: they run only from
//! top-level SQL, never from a view or trigger of a database someone else
//! prepared. rusqlite runs every body under `catch_unwind`.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Error, Result};

use crate::busy;
use crate::conn::ConnState;
use crate::policy::backoff::{BackoffPolicy, MAX_TIMEOUT_MS};
use crate::policy::json::{apply_json_patch, policy_to_json};
use crate::queue::priority::Priority;
use crate::shared::SideFile;
use crate::slow_waits::{self, MAX_THRESHOLD_MS};
use crate::sql::vtab::integer;
use crate::sql::{health, tune};
use crate::stats::registry::{self as stats_registry, MAX_EVENT_CAPACITY};
use crate::text::describe;

/// The extension's version, as `hybrid_version()` returns it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

type Body = fn(&Context<'_>, &ConnState) -> Result<Value>;

/// One SQL function.
pub(crate) struct FunctionSpec {
    pub(crate) name: &'static str,
    /// Every accepted argument count (one registration each).
    pub(crate) arities: &'static [i32],
    /// Deterministic and harmless (no state read or changed).
    pure: bool,
    /// Re-read whether our busy handler is still in force
    /// ([`ConnState::refresh`]) before the body runs.
    refresh: bool,
    body: Body,
}

/// Every function the extension adds.
pub(crate) const FUNCTIONS: &[FunctionSpec] = &[
    FunctionSpec {
        name: "hybrid_version",
        arities: &[0],
        pure: true,
        refresh: false,
        body: |_, _| Ok(Value::Text(VERSION.into())),
    },
    FunctionSpec {
        name: "hybrid_busy_config",
        arities: &[0, 1],
        pure: false,
        refresh: true,
        body: busy_config,
    },
    FunctionSpec {
        name: "hybrid_busy_timeout",
        arities: &[1],
        pure: false,
        refresh: false,
        body: busy_timeout,
    },
    FunctionSpec {
        name: "hybrid_lock_metrics_reset",
        arities: &[0, 1],
        pure: false,
        refresh: true,
        body: metrics_reset,
    },
    FunctionSpec {
        name: "hybrid_priority",
        arities: &[0, 1],
        pure: false,
        refresh: true,
        body: priority,
    },
    FunctionSpec {
        name: "hybrid_lock_events_capacity",
        arities: &[0, 1],
        pure: false,
        refresh: true,
        body: events_capacity,
    },
    FunctionSpec {
        name: "hybrid_log_waits",
        arities: &[0, 1],
        pure: false,
        refresh: true,
        body: log_waits,
    },
    FunctionSpec {
        name: "hybrid_health_check",
        arities: &[0, 1],
        pure: false,
        refresh: true,
        body: health_check,
    },
    FunctionSpec {
        name: "hybrid_note_retry",
        arities: &[0],
        pure: false,
        refresh: false,
        body: |_, state| Ok(integer(state.tracker.file().app_retry())),
    },
    FunctionSpec {
        name: "hybrid_tune",
        arities: &[0],
        pure: false,
        refresh: true,
        body: |ctx, _| tune::tune(&*connection(ctx)?).map(Value::Text),
    },
];

/// Registers `spec` with `arity` on `conn`; its closure owns a reference to
/// `state`, which is how the state lives exactly as long as the connection.
pub(crate) fn register(
    conn: &Connection,
    spec: &'static FunctionSpec,
    arity: i32,
    state: &Arc<ConnState>,
) -> Result<()> {
    let flags = if spec.pure {
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS
    } else {
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY
    };
    let state = Arc::clone(state);
    let (body, refresh) = (spec.body, spec.refresh);
    conn.create_scalar_function(spec.name, arity, flags, move |ctx| {
        let call = || {
            if refresh {
                state.refresh(&*connection(ctx)?)?;
            }
            body(ctx, &state)
        };
        call().map_err(keep_lock_code)
    })
}

/// A lock error from inside a function (`hybrid_tune()` switching a file to
/// WAL while another process does) must reach the caller as
/// `SQLITE_BUSY`/`SQLITE_LOCKED`, so it can retry: rusqlite reports an
/// error with a message as `SQLITE_ERROR`, so the message goes (SQLite
/// supplies its own for the code: "database is locked").
fn keep_lock_code(error: Error) -> Error {
    match error {
        Error::SqliteFailure(code, Some(_))
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Error::SqliteFailure(code, None)
        }
        other => other,
    }
}

/// An error message for the caller of an SQL function.
fn user_error(message: String) -> Error {
    Error::UserFunctionError(message.into())
}

/// The connection running the current function call.
fn connection<'a>(ctx: &'a Context<'_>) -> Result<rusqlite::functions::ConnectionRef<'a>> {
    // SAFETY: we only run queries on the calling connection, on its own
    // thread, during the call; we never close it or keep the reference.
    unsafe { ctx.get_connection() }
}

/// The optional first argument (the registered arities guarantee 0 or 1).
fn argument<'a>(ctx: &'a Context<'_>) -> Option<ValueRef<'a>> {
    (!ctx.is_empty()).then(|| ctx.get_raw(0))
}

/// `hybrid_busy_config()` → the policy as JSON;
/// `hybrid_busy_config(json)` → applies the changes, returns the new policy.
fn busy_config(ctx: &Context<'_>, state: &ConnState) -> Result<Value> {
    if let Some(argument) = argument(ctx) {
        let patch = match argument {
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
        state
            .set_policy(policy)
            .map_err(|e| user_error(format!("hybrid_busy_config: {e}")))?;
    }
    Ok(Value::Text(policy_to_json(&state.policy())))
}

/// `hybrid_busy_timeout(ms)`: sets the deadline and (re)installs the hybrid
/// handler on this connection; returns the deadline in ms.
fn busy_timeout(ctx: &Context<'_>, state: &ConnState) -> Result<Value> {
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
    let policy = BackoffPolicy {
        timeout_ms: ms,
        ..state.policy()
    };
    state
        .set_policy(policy)
        .map_err(|e| user_error(format!("hybrid_busy_timeout: {e}")))?;
    let conn = connection(ctx)?;
    busy::install_handler(&conn, state)?;
    Ok(if ms.fract() == 0.0 {
        Value::Integer(ms as i64)
    } else {
        Value::Real(ms)
    })
}

/// `hybrid_lock_metrics_reset(['process' | 'file'])`.
fn metrics_reset(ctx: &Context<'_>, _state: &ConnState) -> Result<Value> {
    let also_file = match argument(ctx) {
        None | Some(ValueRef::Text(b"process")) => false,
        Some(ValueRef::Text(b"file")) => true,
        Some(other) => {
            return Err(user_error(format!(
                "hybrid_lock_metrics_reset: scope must be 'process' or 'file', got {}",
                describe(other)
            )));
        }
    };
    let files = stats_registry::global().files();
    if also_file {
        for file in &files {
            if let Some(side) = SideFile::existing(file.path()) {
                side.reset_counts();
            }
        }
    }
    stats_registry::global().reset();
    Ok(Value::Integer(files.len() as i64))
}

/// `hybrid_priority(['interactive' | 'background'])`.
fn priority(ctx: &Context<'_>, state: &ConnState) -> Result<Value> {
    if let Some(argument) = argument(ctx) {
        let priority = match argument {
            ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(Priority::from_name),
            _ => None,
        };
        let Some(priority) = priority else {
            return Err(user_error(format!(
                "hybrid_priority: class must be 'interactive' or 'background', got {}",
                describe(argument)
            )));
        };
        state.set_priority(priority);
    }
    Ok(Value::Text(state.priority().name().into()))
}

/// `hybrid_lock_events_capacity([n])`.
fn events_capacity(ctx: &Context<'_>, _state: &ConnState) -> Result<Value> {
    let registry = stats_registry::global();
    if let Some(argument) = argument(ctx) {
        let wanted = match argument {
            ValueRef::Integer(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_EVENT_CAPACITY).contains(n)),
            _ => None,
        };
        let Some(wanted) = wanted else {
            return Err(user_error(format!(
                "hybrid_lock_events_capacity: capacity must be an integer from 1 to \
                 {MAX_EVENT_CAPACITY}, got {}",
                describe(argument)
            )));
        };
        registry.set_event_capacity(wanted).map_err(user_error)?;
    }
    Ok(Value::Integer(registry.event_capacity() as i64))
}

/// `hybrid_log_waits([ms])`: the slow-wait log's threshold (process-wide;
/// 0: off), set when given; returns the threshold in force.
fn log_waits(ctx: &Context<'_>, _state: &ConnState) -> Result<Value> {
    if let Some(argument) = argument(ctx) {
        let ms = match argument {
            ValueRef::Integer(n) => Some(n as f64),
            ValueRef::Real(r) => Some(r),
            _ => None,
        }
        .filter(|ms| ms.is_finite() && (0.0..=MAX_THRESHOLD_MS as f64).contains(ms));
        let Some(ms) = ms else {
            return Err(user_error(format!(
                "hybrid_log_waits: the threshold must be a number of milliseconds from 0 (off) \
                 to {MAX_THRESHOLD_MS}, got {}",
                describe(argument)
            )));
        };
        slow_waits::set_log_waits(Some(Duration::from_secs_f64(ms / 1000.0)));
    }
    let ms = slow_waits::log_waits().map_or(0.0, |t| t.as_secs_f64() * 1000.0);
    Ok(Value::Real(ms))
}

/// `hybrid_health_check([schema])`.
fn health_check(ctx: &Context<'_>, _state: &ConnState) -> Result<Value> {
    let conn = connection(ctx)?;
    let schema = match argument(ctx) {
        None => None,
        Some(ValueRef::Text(t)) => Some(String::from_utf8_lossy(t).into_owned()),
        Some(other) => {
            return Err(user_error(format!(
                "hybrid_health_check: schema must be text (e.g. 'main'), got {}",
                describe(other)
            )));
        }
    };
    health::health_check(&conn, schema.as_deref())
        .map(Value::Text)
        .map_err(user_error)
}
