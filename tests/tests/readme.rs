//! The examples of the README and of `docs/*.md` run: every ```sql block in
//! the sqlite3 shell with the extension loaded, the one-line examples of the
//! function table in `docs/sql-reference.md`, and every ```python block with
//! Debian's python3. (Their Rust examples are doctests of this crate, see
//! `src/lib.rs`.)

use std::path::PathBuf;
use std::process::Command;

use sqlite_hybrid_tests::{docs_pages, ext_load_arg, python, run_shell, workspace_root};

/// README.md and every page under docs/, in a stable order.
fn documents() -> Vec<PathBuf> {
    let mut docs = docs_pages();
    docs.insert(0, workspace_root().join("README.md"));
    docs
}

/// Every ```lang block of every document, with the document's name.
fn blocks(lang: &str) -> Vec<(String, String)> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    for path in documents() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path
            .strip_prefix(workspace_root())
            .unwrap_or(&path)
            .display()
            .to_string();
        let mut rest = text.as_str();
        while let Some(start) = rest.find(&fence) {
            let body = &rest[start + fence.len()..];
            let end = body.find("```").expect("closed fence");
            out.push((name.clone(), body[..end].to_string()));
            rest = &body[end..];
        }
    }
    out
}

#[test]
fn readme_sql_examples_run_without_errors() {
    let sql = blocks("sql");
    for wanted in ["README.md", "docs/sql-reference.md"] {
        assert!(
            sql.iter().any(|(name, _)| name == wanted),
            "{wanted} has sql examples"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("readme.db");
    for (name, block) in sql {
        let out = run_shell(&db, &format!(".load {}\n{block}", ext_load_arg()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{name}: block failed:\n{block}\n{stderr}"
        );
    }
}

/// The one-line examples in the SQL reference's function table run too.
#[test]
fn readme_function_table_examples_run() {
    let readme = std::fs::read_to_string(workspace_root().join("docs/sql-reference.md")).unwrap();
    let examples: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `hybrid_"))
        .filter_map(|l| l.split('`').find(|part| part.starts_with("SELECT ")))
        .collect();
    assert!(examples.len() >= 8, "found {} examples", examples.len());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("table.db");
    let script = examples.join("\n");
    let out = run_shell(&db, &format!(".load {}\n{script}\n", ext_load_arg()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        examples.len()
    );
}

/// Blocks that use the Python package run it from the source tree
/// (`python/`) with the library `make ext` built; a block needing a driver
/// this python3 lacks (apsw) is skipped with a message (`make hosts` runs
/// every driver against the installed wheel).
#[test]
fn readme_python_examples_run() {
    let python_blocks = blocks("python");
    for wanted in ["README.md", "docs/hosts.md"] {
        assert!(
            python_blocks.iter().any(|(name, _)| name == wanted),
            "{wanted} has python examples"
        );
    }
    for (name, block) in python_blocks {
        if block.contains("import apsw") && !python_has("apsw") {
            eprintln!("skipped (no apsw in {}):\n{block}", python().display());
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = block.replace("./dist/libhybrid", &ext_load_arg());
        let out = Command::new(python())
            .arg("-c")
            .arg(&script)
            .env("PYTHONPATH", workspace_root().join("python"))
            .env("SQLITE_HYBRID_LIBRARY", ext_load_arg())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}:\n{block}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn python_has(module: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|out| out.status.success())
}
