//! An application that depends on the newest rusqlite (0.43) beside
//! `sqlite-hybrid` builds and runs: one libsqlite3-sys in its graph, and
//! the client's closures take the app's own rusqlite types. (With the
//! client on rusqlite 0.39 such an app failed to resolve: `links =
//! "sqlite3"` allows one libsqlite3-sys per graph.)

use std::process::Command;

use sqlite_hybrid_tests::workspace_root;

const APP_MANIFEST: &str = r#"[package]
name = "beside-rusqlite"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
rusqlite = "0.43"
sqlite-hybrid = { path = "CLIENT" }

[workspace]
"#;

const APP_MAIN: &str = r#"use rusqlite::Connection;

fn main() {
    let path = std::env::args().nth(1).expect("database path");
    let db = sqlite_hybrid::Database::open(&path).unwrap();
    db.write(|tx| {
        tx.execute_batch("CREATE TABLE t(x)")?;
        Ok(())
    })
    .unwrap();
    // The app's own rusqlite connection on the same file.
    let own = Connection::open(&path).unwrap();
    own.execute("INSERT INTO t VALUES (1)", []).unwrap();
    // The client's closures take the app's rusqlite types.
    let rows: i64 = db
        .read(|c: &Connection| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
        .unwrap();
    let mode: String = db.lock_metrics().unwrap().mode.to_string();
    println!("rows {rows} mode {mode} rusqlite-sqlite {}", rusqlite::version());
}
"#;

#[test]
fn an_app_on_rusqlite_0_43_beside_the_client_builds_and_runs() {
    let root = workspace_root();
    let app = tempfile::tempdir().unwrap();
    let client = root.join("client");
    std::fs::write(
        app.path().join("Cargo.toml"),
        APP_MANIFEST.replace("CLIENT", client.to_str().unwrap()),
    )
    .unwrap();
    std::fs::create_dir(app.path().join("src")).unwrap();
    std::fs::write(app.path().join("src/main.rs"), APP_MAIN).unwrap();
    // The workspace's lockfile: the same versions, resolved offline.
    std::fs::copy(root.join("Cargo.lock"), app.path().join("Cargo.lock")).unwrap();
    let db = app.path().join("app.db");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // Not the variables cargo set for this test (the package's, the library
    // path): the app is built as a user's shell would.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name == "LD_LIBRARY_PATH" {
            cargo.env_remove(name);
        }
    }
    let out = cargo
        .args(["run", "--quiet", "--offline", "--manifest-path"])
        .arg(app.path().join("Cargo.toml"))
        .arg("--")
        .arg(&db)
        // Its own target dir, kept between runs (later runs are quick), so
        // this build's features never touch the workspace's artifacts.
        .env(
            "CARGO_TARGET_DIR",
            root.join("target").join("beside-rusqlite"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("rows 1 mode futex "), "{stdout}");
}
