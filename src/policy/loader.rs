//! Reading a policy file: YAML in, an immutable [`Policy`] or every error out.
//!
//! The only I/O in the policy module is the one `read_to_string` in [`Policy::load`].
//! Syntax errors from serde-saphyr come out as `FILE:LINE:COL: PATH: message`
//! like the rule violations found by `validate`.

use std::path::Path;

use super::error::{PolicyErrorKind, PolicyErrors};
use super::model::Policy;
use super::raw::{unknown_keys, KeyTree, RawPolicy};
use super::validate::{validate, validate_functions, validate_guard, Report};

impl Policy {
    /// Reads and validates the policy file at `path` as generation `generation`.
    pub fn load(path: &Path, generation: u64) -> Result<Policy, PolicyErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Policy::load_str(&text, &file, generation),
            Err(e) => {
                let mut report = Report::new(&file);
                report.push(
                    PolicyErrorKind::Io,
                    0,
                    0,
                    "",
                    format!("cannot read the policy file: {e}"),
                );
                Err(PolicyErrors {
                    errors: report.errors,
                })
            }
        }
    }

    /// Validates policy YAML held in memory; `file` is the name used in errors.
    pub fn load_str(text: &str, file: &str, generation: u64) -> Result<Policy, PolicyErrors> {
        let mut report = Report::new(file);
        if is_blank(text) {
            report.push(
                PolicyErrorKind::Invalid,
                1,
                1,
                "",
                "the policy file is empty; expected `version: 1` and a `tables:` map",
            );
            return Err(PolicyErrors {
                errors: report.errors,
            });
        }
        let raw: RawPolicy = match serde_saphyr::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                // The typed read stops at the first unknown key; list them all if that is the problem.
                if report_unknown_keys(text, &mut report) {
                    return Err(sorted(report));
                }
                report_syntax_error(text, &e, &mut report);
                return Err(PolicyErrors {
                    errors: report.errors,
                });
            }
        };
        let mut raw = raw;
        let allowed = validate_functions(raw.functions.take(), &mut report);
        let guard = raw.guard.take();
        match validate(raw, &mut report) {
            Some(columns) => {
                let guard = validate_guard(guard, &columns, &mut report);
                if !report.errors.is_empty() {
                    return Err(sorted(report));
                }
                Ok(Policy::from_columns(generation, columns)
                    .with_allowed_functions(allowed)
                    .with_guard(guard))
            }
            _ => Err(sorted(report)),
        }
    }
}

/// The report's errors in file order.
fn sorted(report: Report) -> PolicyErrors {
    let mut errors = report.errors;
    errors.sort_by_key(|e| (e.line, e.column));
    PolicyErrors { errors }
}

/// When the file's only problem for the typed read may be unknown keys: reports each of
/// them, then the rest of the file's mistakes (see below); false when there is none.
fn report_unknown_keys(text: &str, report: &mut Report) -> bool {
    let Ok(tree) = serde_saphyr::from_str::<KeyTree>(text) else {
        return false;
    };
    let unknown = unknown_keys(&tree);
    if unknown.is_empty() {
        return false;
    }
    let mut positions = Vec::new();
    for (key, path, message) in unknown {
        positions.push((key.referenced.line(), key.referenced.column()));
        report.push(
            PolicyErrorKind::Syntax,
            key.referenced.line(),
            key.referenced.column(),
            path,
            message,
        );
    }
    // Report the rest of the file's mistakes in the same run: read it again without the
    // unknown keys (blanked in place, so lines keep their numbers) and validate what
    // remains.
    if let Some(stripped) = without_keys(text, &positions) {
        if let Ok(raw) = serde_saphyr::from_str::<RawPolicy>(&stripped) {
            let _ = validate(raw, report);
        }
    }
    true
}

/// A YAML syntax error, at its line and column and the key path there.
fn report_syntax_error(text: &str, e: &serde_saphyr::Error, report: &mut Report) {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = syntax_message(&e.without_snippet().to_string(), line, column);
    report.push(
        PolicyErrorKind::Syntax,
        line,
        column,
        path_at(text, line, column),
        message,
    );
}

/// `text` with the block-style entries whose keys start at `positions` (1-based line
/// and column) blanked out, nested lines included; line numbers are kept. `None` when a
/// key is not the first thing on its line (a flow mapping), which this cannot strip.
fn without_keys(text: &str, positions: &[(u64, u64)]) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for &(line, column) in positions {
        let i = usize::try_from(line).ok()?.checked_sub(1)?;
        let l = lines.get(i)?;
        let indent = l.len() - l.trim_start_matches(' ').len();
        if indent as u64 + 1 != column {
            return None;
        }
        lines[i] = String::new();
        for next in lines.iter_mut().skip(i + 1) {
            let t = next.trim_start_matches(' ');
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if next.len() - t.len() <= indent {
                break;
            }
            next.clear();
        }
    }
    Some(lines.join("\n"))
}

/// True when the text holds nothing but blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// serde-saphyr appends " at line L, column C"; we print the position up front instead.
fn syntax_message(full: &str, line: u64, column: u64) -> String {
    let suffix = format!(" at line {line}, column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(full);
    // Reword the parser's developer-facing phrases for a DBA.
    let message = message.replace(
        ", set DuplicateKeyPolicy in Options if acceptable",
        "; each key may appear only once",
    );
    match message.as_str() {
        "expected mapping start" => "expected a mapping of `key: value` entries here".to_string(),
        "expected string scalar" => "expected a single string value here".to_string(),
        "invalid u64" => "expected a whole number (0 or more) here".to_string(),
        _ => message,
    }
}

/// A light second pass over block-style YAML: the dotted path of keys that
/// encloses position (`line`, `column`). Flow mappings (`{a: b}`) are not entered.
pub(crate) fn path_at(text: &str, line: u64, column: u64) -> String {
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if n > line {
            break;
        }
        let indent = l.len() - l.trim_start_matches(' ').len();
        let content = l.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') || content.starts_with('-') {
            continue;
        }
        if n == line && (indent as u64) >= column {
            break;
        }
        let Some(key) = key_of(content) else { continue };
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
    }
    stack
        .into_iter()
        .map(|(_, k)| k)
        .collect::<Vec<_>>()
        .join(".")
}

/// The key of a `key: value` line, without YAML quotes.
fn key_of(content: &str) -> Option<String> {
    let (raw, _) = if let Some(q @ ('"' | '\'')) = content.chars().next() {
        let close = content.get(1..)?.find(q)? + 1;
        let (k, rest) = content.split_at(close + 1);
        rest.strip_prefix(':')?;
        (k, rest)
    } else {
        let idx = content
            .match_indices(':')
            .find(|(i, _)| {
                content
                    .get(i + 1..)
                    .is_some_and(|r| r.is_empty() || r.starts_with(' '))
            })?
            .0;
        content.split_at(idx)
    };
    let raw = raw.trim();
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .map(|r| r.replace("\\\"", "\""))
        .or_else(|| {
            raw.strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .map(str::to_string)
        })
        .unwrap_or_else(|| raw.to_string());
    Some(unquoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_at_follows_indentation() {
        let text = "version: 1\ntables:\n  public.customers:\n    phone:\n      typo: x\n";
        assert_eq!(path_at(text, 5, 7), "tables.public.customers.phone.typo");
        assert_eq!(path_at(text, 1, 10), "version");
    }

    #[test]
    fn path_at_unquotes_keys() {
        let text = "tables:\n  '\"My Schema\".\"T\"':\n    \"Phone\":\n      type: [\n";
        assert_eq!(
            path_at(text, 4, 13),
            "tables.\"My Schema\".\"T\".Phone.type"
        );
    }

    #[test]
    fn blank_text_is_detected() {
        assert!(is_blank("\n# only a comment\n---\n"));
        assert!(!is_blank("version: 1"));
    }
}
