//! The shape the codebase keeps (issue 12), checked on the sources so that it stays:
//! no dependency cycle between top-level modules of `src/`, and no function over 80
//! lines outside test code unless it is listed here as a flat list of cases.
//!
//! Both checks read the text, not the compiler's view: a `crate::<module>` path outside
//! comments and `#[cfg(test)]` code is a dependency, and a function's length runs from
//! its `fn` line to the brace that closes its body.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Functions allowed over the limit, each a flat `match` with one arm per case.
const FLAT_LISTS: &[(&str, &str)] = &[
    // one arm per refusal reason: its message
    ("src/sql/refusal.rs", "render"),
    // one arm per refusal reason: its log text
    ("src/sql/refusal.rs", "text"),
];

const MAX_LINES: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's text before its first `#[cfg(test)]`, comments removed and string and
/// char literals blanked (so that neither braces nor paths inside them count).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    blank(text.split("#[cfg(test)]").next().unwrap_or(""))
}

/// `code` with comments removed and literals emptied; line breaks are kept.
fn blank(code: &str) -> String {
    let c: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let keep_newlines = |from: &[char], out: &mut String| {
        out.extend(from.iter().filter(|&&ch| ch == '\n'));
    };
    while i < c.len() {
        let rest = &c[i..];
        if rest.starts_with(&['/', '/']) {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let end = find(&c, i + 2, &['*', '/']).map_or(c.len(), |e| e + 2);
            keep_newlines(&c[i..end], &mut out);
            i = end;
        } else if c[i] == 'r' && matches!(rest.get(1), Some('"' | '#')) && !ident_before(&c, i) {
            // r"..." or r#"..."#
            let hashes = rest[1..].iter().take_while(|&&ch| ch == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let mut close = vec!['"'];
            close.extend(std::iter::repeat_n('#', hashes));
            let body = i + 2 + hashes;
            let end = find(&c, body, &close).map_or(c.len(), |e| e + close.len());
            keep_newlines(&c[i..end], &mut out);
            out.push_str("\"\"");
            i = end;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            keep_newlines(&c[i..j.min(c.len())], &mut out);
            out.push_str("\"\"");
            i = j + 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{7f}') or a lifetime ('a).
            let lit_end = if rest.get(1) == Some(&'\\') {
                find(&c, i + 3, &['\'']).filter(|e| e - i <= 10)
            } else if rest.get(2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match lit_end {
                Some(e) => {
                    out.push_str("' '");
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Where `pat` next starts in `c` at or after `from`.
fn find(c: &[char], from: usize, pat: &[char]) -> Option<usize> {
    (from..c.len()).find(|&k| c[k..].starts_with(pat))
}

/// Whether `c[i]` continues an identifier (the `r` of `for` is not a raw string).
fn ident_before(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// Top-level module of a file under src/ (`src/sql/analyze/mod.rs` -> `sql`).
fn module_of(path: &Path, src: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "main" | "lib")).then(|| name.to_string())
}

#[test]
fn no_dependency_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f, &src)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(f, &src) else {
            continue;
        };
        let code = code_of(f);
        let mut add = |name: &str| {
            if name != m && modules.contains(name) {
                edges.entry(m.clone()).or_default().insert(name.to_string());
            }
        };
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + 7..];
            if let Some(group) = rest.strip_prefix('{') {
                // use crate::{a::X, b, c::{..}}: the first segment of each path
                let mut depth = 0;
                let mut segment_start = true;
                let mut word = String::new();
                for ch in group.chars() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => segment_start = true,
                        c if c.is_alphanumeric() || c == '_' => {
                            if segment_start {
                                word.push(c)
                            }
                        }
                        _ => {
                            if !word.is_empty() {
                                add(&word);
                                word.clear();
                                segment_start = false;
                            }
                        }
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                add(&name);
            }
        }
    }
    // A module reaching itself through another is a cycle.
    let mut cycles = Vec::new();
    for start in &modules {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    cycles.push(path.join(" -> ") + " -> " + start);
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "module cycles (each starting module once):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_long_function_outside_test_code_unless_a_flat_list() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().to_string();
        for (line, name, len) in functions(&code_of(f)) {
            if len > MAX_LINES && !FLAT_LISTS.contains(&(rel.as_str(), name.as_str())) {
                long.push(format!("{rel}:{line} {name}: {len} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines (split them, or list a flat match in FLAT_LISTS):\n{}",
        long.join("\n")
    );
}

/// Every function with a body in `code` (blanked): its first line (1-based), name and
/// length in lines from `fn` to the closing brace.
fn functions(code: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = fn_name(lines[i]) else {
            i += 1;
            continue;
        };
        let (mut depth, mut started, mut j) = (0i32, false, i);
        'body: while j < lines.len() {
            for ch in lines[j].chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        started = true
                    }
                    '}' => depth -= 1,
                    ';' if !started && depth == 0 => break 'body,
                    _ => {}
                }
                if started && depth == 0 {
                    break 'body;
                }
            }
            j += 1;
        }
        if started {
            found.push((i + 1, name, j - i + 1));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    found
}

/// The name declared by a `fn` item on this line, if it starts one.
fn fn_name(line: &str) -> Option<String> {
    let t = line.trim_start();
    let mut words = t.split_whitespace().peekable();
    while let Some(w) = words.peek() {
        if w.starts_with("pub") || matches!(*w, "async" | "const" | "unsafe" | "extern") {
            words.next();
        } else {
            break;
        }
    }
    let rest = words.collect::<Vec<_>>().join(" ");
    let after = rest.strip_prefix("fn ")?;
    let name: String = after
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn the_scanner_reads_rust_text() {
    let body = "    x += 1;\n".repeat(81);
    let code = blank(&format!(
        "fn short() -> u8 {{ 1 }}\nfn decl();\npub async fn long() {{\n    let s = \"}}\";\n{body}}}\nfn after() {{\n}}\n"
    ));
    assert_eq!(
        functions(&code),
        [
            (1, "short".to_string(), 1),
            (3, "long".to_string(), 84),
            (87, "after".to_string(), 2)
        ]
    );
    assert_eq!(
        fn_name("    pub(crate) async fn go<T>(x: T) {"),
        Some("go".into())
    );
    assert_eq!(fn_name("fn f();"), Some("f".into()));
    assert_eq!(fn_name("let fn_x = 1;"), None);
    assert_eq!(blank(r#"let s = "{ // }"; // { "#), r#"let s = ""; "#);
    assert_eq!(blank("let s = \"a\n{\\\"\";{"), "let s = \n\"\";{");
    assert_eq!(
        blank("let s = r#\"{\"\n\"#; /* { \n */ x"),
        "let s = \n\"\"; \n x"
    );
    assert_eq!(
        blank("match c { '{' => 1, '\\'' => 2 }"),
        "match c { ' ' => 1, ' ' => 2 }"
    );
    assert_eq!(
        blank("fn f<'a>(x: &'a str) { for r in x {} }"),
        "fn f<'a>(x: &'a str) { for r in x {} }"
    );
}
