//! The docs keep up with the code and with themselves:
//!
//! * every SQL function and every table the extension registers, as a live
//!   connection lists them (`pragma_function_list`, `pragma_module_list`),
//!   is documented in `docs/sql-reference.md` (a function as a row of the
//!   function table, a table under a heading of its own), and that page
//!   documents no function the extension does not register;
//! * every relative link in README.md, docs/*.md, python/README.md and
//!   CHANGELOG.md resolves: the file exists, and a `#anchor` names a heading
//!   of the target (GitHub's slugs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sqlite_hybrid_tests::{docs_pages, ext_load_arg, run_shell, workspace_root};

/// The names a query prints, one per line, in the sqlite3 shell with the
/// extension loaded.
fn registered(query: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = run_shell(
        &dir.path().join("names.db"),
        &format!(".load {}\n{query}\n", ext_load_arg()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{query}: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn sql_reference() -> String {
    std::fs::read_to_string(workspace_root().join("docs/sql-reference.md"))
        .expect("docs/sql-reference.md exists")
}

/// The function names of the function table's rows (`| \`name(...)\` |`).
fn documented_functions(reference: &str) -> BTreeSet<String> {
    reference
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('(').map(|(name, _)| name.to_string()))
        .filter(|name| name.starts_with("hybrid_"))
        .collect()
}

#[test]
fn every_registered_function_is_in_the_sql_reference() {
    let functions = registered(
        "SELECT DISTINCT name FROM pragma_function_list WHERE name LIKE 'hybrid%' ORDER BY 1;",
    );
    assert!(
        functions.contains("hybrid_version") && functions.contains("hybrid_busy_config"),
        "the query lists the extension's functions: {functions:?}"
    );
    let documented = documented_functions(&sql_reference());
    let missing: Vec<_> = functions.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "registered but not in the function table of docs/sql-reference.md: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&functions).collect();
    assert!(
        stale.is_empty(),
        "in docs/sql-reference.md but not registered: {stale:?}"
    );
}

#[test]
fn every_registered_table_is_in_the_sql_reference() {
    let tables =
        registered("SELECT name FROM pragma_module_list WHERE name LIKE 'hybrid%' ORDER BY 1;");
    assert!(
        tables.contains("hybrid_lock_metrics"),
        "the query lists the extension's tables: {tables:?}"
    );
    let headings = headings(&sql_reference());
    let missing: Vec<_> = tables
        .iter()
        .filter(|table| !headings.iter().any(|h| h == &format!("`{table}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "registered but without a `### \\`name\\`` heading in docs/sql-reference.md: {missing:?}"
    );
}

/// The documents whose relative links must resolve.
fn linked_documents() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut docs = docs_pages();
    for file in ["README.md", "python/README.md", "CHANGELOG.md"] {
        docs.push(root.join(file));
    }
    docs
}

/// The text outside fenced code blocks and inline code spans, where
/// Markdown links and headings live.
fn prose(markdown: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if !fenced {
            out.push_str(&strip_code_spans(line));
        }
        out.push('\n');
    }
    out
}

/// `line` with every inline code span replaced by `code` (a span may hold
/// `](`, which is not a link).
fn strip_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[start..start + ticks];
        match rest[start + ticks..].find(fence) {
            Some(len) => {
                out.push_str(&rest[..start]);
                out.push_str("code");
                rest = &rest[start + ticks + len + ticks..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// The raw text of every ATX heading outside code blocks (`## Text` ->
/// `Text`).
fn headings(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            out.push(line[level..].trim().to_string());
        }
    }
    out
}

/// GitHub's anchor for a heading: the rendered text (link targets and code
/// ticks dropped), lower-cased, with everything but letters, digits, `-`,
/// `_` and spaces removed and spaces turned into `-`.
fn slug(heading: &str) -> String {
    let text = drop_link_targets(heading);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `[text](target)` -> `text`.
fn drop_link_targets(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        match rest[at..].find(')') {
            Some(close) => {
                out.push_str(&rest[..at]);
                rest = &rest[at + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.replace('[', "")
}

/// Every anchor a document's headings give, with GitHub's `-1`, `-2`
/// suffixes for repeated ones.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for heading in headings(markdown) {
        let base = slug(&heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The targets of every inline link and image: `[text](target)`.
fn link_targets(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find([')', ' ', '\n']).unwrap_or(after.len());
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

/// Why `target`, linked from `document`, does not resolve (None if it does).
fn broken(document: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        document.to_path_buf()
    } else {
        document
            .parent()
            .expect("a document has a folder")
            .join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let anchor = anchor?;
    if file.extension().is_none_or(|ext| ext != "md") {
        return Some(format!(
            "#{anchor} into {}, not a Markdown file",
            file.display()
        ));
    }
    let text = std::fs::read_to_string(&file).expect("the target reads");
    if anchors(&text).contains(anchor) {
        None
    } else {
        Some(format!("no heading #{anchor} in {}", file.display()))
    }
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for document in linked_documents() {
        let text = std::fs::read_to_string(&document)
            .unwrap_or_else(|e| panic!("{}: {e}", document.display()));
        for target in link_targets(&text) {
            checked += 1;
            if let Some(problem) = broken(&document, &target) {
                problems.push(format!("{}: ({target}): {problem}", document.display()));
            }
        }
    }
    assert!(checked >= 30, "found only {checked} links");
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// The checker itself: GitHub's slugs, links in code ignored, a missing
/// file and a missing heading found.
#[test]
fn the_link_checker_finds_what_github_would_not() {
    assert_eq!(
        slug("Two modes: futex hand-off, or jittered backoff"),
        "two-modes-futex-hand-off-or-jittered-backoff"
    );
    assert_eq!(slug("What a \"wait\" is"), "what-a-wait-is");
    assert_eq!(slug("`hybrid_lock_metrics`"), "hybrid_lock_metrics");
    assert_eq!(
        slug("Build facts (why these versions)"),
        "build-facts-why-these-versions"
    );
    assert_eq!(slug("See [the docs](docs/x.md)"), "see-the-docs");
    let page = "# Title\n## Same\n## Same\n```rust\n# fn main() {}\n[a](nowhere.md)\n```\n`[b](nowhere.md)` [c](#same-1) [d](#title)\n";
    assert_eq!(
        anchors(page),
        ["title", "same", "same-1"].map(String::from).into()
    );
    assert_eq!(link_targets(page), ["#same-1", "#title"]);

    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("page.md");
    std::fs::write(&doc, page).unwrap();
    assert_eq!(broken(&doc, "#same-1"), None);
    assert_eq!(broken(&doc, "page.md#title"), None);
    assert!(broken(&doc, "#missing").is_some());
    assert!(broken(&doc, "other.md").is_some());
    assert_eq!(broken(&doc, "https://example.com/x#y"), None);
}
