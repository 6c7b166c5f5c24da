//! A fixed pool of read-only connections, one checked out per read: SQLite
//! connections for [`crate::Database::read`], PostgreSQL sessions on the
//! primary and on each standby.
//!
//! The pool is a bounded crossbeam channel holding the idle connections:
//! checkout is `recv`, return is `send`. A guard returns the connection even
//! if the caller's closure panics, so the pool never shrinks.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use crate::error::{Error, Result};

/// Idle read-only connections of type `C`.
pub(crate) struct ReaderPool<C> {
    idle_tx: Sender<C>,
    idle_rx: Receiver<C>,
    size: usize,
}

impl<C> ReaderPool<C> {
    pub(crate) fn new(connections: Vec<C>) -> ReaderPool<C> {
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
    /// second connection to read through, and for a PostgreSQL handle
    /// opened with no readers: reads then use the writer).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Waits up to `timeout` for an idle connection.
    pub(crate) fn checkout(&self, timeout: Duration) -> Result<PooledReader<'_, C>> {
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
pub(crate) struct PooledReader<'a, C> {
    conn: Option<C>,
    pool: &'a ReaderPool<C>,
}

impl<C> std::ops::Deref for PooledReader<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.conn.as_ref().expect("present until drop")
    }
}

impl<C> std::ops::DerefMut for PooledReader<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn.as_mut().expect("present until drop")
    }
}

impl<C> Drop for PooledReader<'_, C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = self.pool.idle_tx.send(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_comes_back_even_when_its_user_panics() {
        let pool = ReaderPool::new(vec![1u8]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut reader = pool.checkout(Duration::from_secs(1)).unwrap();
            *reader = 2;
            panic!("the caller's closure");
        }));
        assert!(outcome.is_err());
        assert_eq!(*pool.checkout(Duration::from_secs(1)).unwrap(), 2);
    }

    #[test]
    fn an_empty_pool_times_out() {
        let pool = ReaderPool::new(vec![1u8]);
        let _held = pool.checkout(Duration::from_secs(1)).unwrap();
        assert!(matches!(
            pool.checkout(Duration::from_millis(10)),
            Err(Error::Timeout { .. })
        ));
    }
}
