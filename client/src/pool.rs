//! A fixed pool of read-only connections, handed out one per
//! [`crate::Database::read`] call.
//!
//! The pool is a bounded crossbeam channel holding the idle connections:
//! checkout is `recv`, return is `send`. A guard returns the connection even
//! if the caller's closure panics, so the pool never shrinks.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use rusqlite::Connection;

use crate::error::{Error, Result};

/// Idle read-only connections.
pub(crate) struct ReaderPool {
    idle_tx: Sender<Connection>,
    idle_rx: Receiver<Connection>,
    size: usize,
}

impl ReaderPool {
    pub(crate) fn new(connections: Vec<Connection>) -> ReaderPool {
        let size = connections.len();
        let (idle_tx, idle_rx) = bounded(size.max(1));
        for conn in connections {
            // Cannot fail: the channel holds exactly `size` slots.
            let _ = idle_tx.send(conn);
        }
        ReaderPool {
            idle_tx,
            idle_rx,
            size,
        }
    }

    /// Number of connections (0 for in-memory databases, which have no
    /// second connection to read through).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Waits up to `timeout` for an idle connection.
    pub(crate) fn checkout(&self, timeout: Duration) -> Result<PooledReader<'_>> {
        match self.idle_rx.recv_timeout(timeout) {
            Ok(conn) => Ok(PooledReader {
                conn: Some(conn),
                pool: self,
            }),
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout { waited: timeout }),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }
}

/// A checked-out reader; goes back to the pool when dropped.
pub(crate) struct PooledReader<'a> {
    conn: Option<Connection>,
    pool: &'a ReaderPool,
}

impl std::ops::Deref for PooledReader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl Drop for PooledReader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = self.pool.idle_tx.send(conn);
        }
    }
}
