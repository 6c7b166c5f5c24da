//! A fresh database per test on either engine, and a second session that
//! holds the write lock for a while.

use std::time::Duration;

use sqlite_hybrid::{Database, DatabaseBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
}

/// `HYBRID_PG_URL` (set by `scripts/postgres/with-postgres.sh`).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub fn postgres_url() -> Option<String> {
    std::env::var("HYBRID_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub struct Fixture {
    pub db: Database,
    pub kind: Kind,
    /// Where `reopen` and the lock holder connect.
    location: String,
    _dir: Option<tempfile::TempDir>,
    #[cfg(feature = "postgres")]
    _scratch: Option<pg::Scratch>,
}

impl Fixture {
    pub fn open(kind: Kind) -> Fixture {
        Fixture::open_with(kind, |b| b)
    }

    pub fn open_with(
        kind: Kind,
        configure: impl Fn(DatabaseBuilder) -> DatabaseBuilder,
    ) -> Fixture {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let location = dir.path().join("test.db").to_str().unwrap().to_string();
                Fixture {
                    db: configure(Database::builder(&location)).open().unwrap(),
                    kind,
                    location,
                    _dir: Some(dir),
                    #[cfg(feature = "postgres")]
                    _scratch: None,
                }
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                let scratch = pg::Scratch::create();
                let location = scratch.url.clone();
                Fixture {
                    db: configure(Database::builder(&location)).open().unwrap(),
                    kind,
                    location,
                    _dir: None,
                    _scratch: Some(scratch),
                }
            }
            #[cfg(not(feature = "postgres"))]
            Kind::Postgres => unreachable!("built without the postgres feature"),
        }
    }

    /// The file's path or the server's URL.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Another handle on the same database (another "process").
    pub fn reopen(&self) -> Database {
        Database::open(&self.location).unwrap()
    }

    /// A plain session of another program that takes `table`'s write lock
    /// and keeps it for `hold`; returns once the lock is held.
    pub fn hold_write_lock(&self, table: &str, hold: Duration) -> Blocker {
        let (held_tx, held) = std::sync::mpsc::channel();
        let location = self.location.clone();
        let table = table.to_string();
        let kind = self.kind;
        let thread = std::thread::spawn(move || match kind {
            Kind::Sqlite => {
                let conn = rusqlite::Connection::open(location).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                held_tx.send(()).unwrap();
                std::thread::sleep(hold);
                conn.execute_batch("COMMIT").unwrap();
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                let mut client = postgres::Client::connect(&location, postgres::NoTls).unwrap();
                client
                    .batch_execute(&format!("BEGIN; LOCK TABLE {table} IN EXCLUSIVE MODE"))
                    .unwrap();
                held_tx.send(()).unwrap();
                std::thread::sleep(hold);
                client.batch_execute("COMMIT").unwrap();
            }
            #[cfg(not(feature = "postgres"))]
            Kind::Postgres => {
                let _ = table;
                unreachable!()
            }
        });
        held.recv().unwrap();
        Blocker(thread)
    }
}

pub struct Blocker(std::thread::JoinHandle<()>);

impl Blocker {
    pub fn join(self) {
        self.0.join().unwrap();
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A database of its own on the test server, dropped afterwards.
    pub struct Scratch {
        pub url: String,
        name: String,
        admin: String,
    }

    impl Scratch {
        pub fn create() -> Scratch {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let url = super::postgres_url().expect("HYBRID_PG_URL");
            let admin = std::env::var("HYBRID_PG_ADMIN_URL").expect("HYBRID_PG_ADMIN_URL");
            let name = format!(
                "t_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            // The same server and user: only the database name differs.
            let base = url.rsplit_once('/').expect("a database in the URL").0;
            Scratch {
                url: format!("{base}/{name}"),
                name,
                admin,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
                let _ = client.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }
}
