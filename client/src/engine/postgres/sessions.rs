//! Sessions with the server: opening the writer's and a reader's, a lost
//! reader session reopened at checkout from the pool (`crate::pool`, the
//! same pool SQLite's readers use), and a URL made fit to show. A leaf of
//! the engine: the primary's sessions (`mod.rs`) and the standbys'
//! (`replicas.rs`) both come from here.

use std::time::Duration;

use postgres::{Client, Config, NoTls};

use super::errors::{connect_error, error};
use crate::error::Result;
use crate::pool::ReaderPool;
use crate::retry::RetryPolicy;

/// A writer session: a lock wait happens in the server's queue, bounded by
/// the retry deadline; past it, `55P03` and the retry loop gives up.
pub(super) fn connect_writer(config: &Config, retry: &RetryPolicy) -> Result<Client> {
    let mut client = config.connect(NoTls).map_err(connect_error)?;
    let ms = retry.deadline.as_millis().clamp(1, i32::MAX as u128);
    client
        .batch_execute(&format!("SET lock_timeout = {ms}"))
        .map_err(error)?;
    Ok(client)
}

/// A read-only session.
pub(super) fn connect_reader(config: &Config) -> Result<Client> {
    let mut client = config.connect(NoTls).map_err(connect_error)?;
    client
        .batch_execute("SET default_transaction_read_only = on")
        .map_err(error)?;
    Ok(client)
}

/// Runs `f` on a session of `pool` (waiting up to `deadline` for one),
/// reopened with `config` first if it was lost. A session goes back to the
/// pool whatever happens (a failed reopen returns the lost one, to be
/// reopened by the next caller).
pub(super) fn with_session<T>(
    pool: &ReaderPool<Client>,
    deadline: Duration,
    config: &Config,
    f: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    let mut session = pool.checkout(deadline)?;
    if session.is_closed() {
        *session = connect_reader(config)?;
    }
    f(&mut session)
}

/// `url` with any password replaced by `***`.
pub(super) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &authority[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgresql://h/db?x=1"), "postgresql://h/db?x=1");
    }
}
