//! The one-line start-up: `install_logger` makes plain `log::info!` calls
//! land in the log database (its own test binary: the `log` logger is
//! process-global and can be installed once).

use std::time::Duration;

use sqlite_hybrid::{Database, Error, LogOptions};

#[test]
fn install_logger_routes_the_log_macros() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path().join("g.db"))
        .log_database(LogOptions::default())
        .open()
        .unwrap();
    db.log().unwrap().install_logger().unwrap();
    log::info!(target: "startup", "listening on {}", 8080);
    log::debug!("below the default Info level: not stored");
    log::logger().flush();
    let stored: (String, String, String) = db
        .read(|c| {
            Ok(
                c.query_row("SELECT level, target, message FROM log.entries", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?,
            )
        })
        .unwrap();
    assert_eq!(
        stored,
        ("INFO".into(), "startup".into(), "listening on 8080".into())
    );
    assert_eq!(db.log().unwrap().stats().written, 1);
    let again = db.log().unwrap().install_logger().unwrap_err();
    assert!(
        matches!(again, Error::InvalidInput(ref m) if m.contains("already installed")),
        "{again}"
    );
    // After the database closes, logging is harmless: dropped and counted.
    drop(db);
    log::info!("after close");
    std::thread::sleep(Duration::from_millis(10));
}
