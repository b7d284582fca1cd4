//! Errors of the policy module: every problem a DBA must fix in the policy file.
//!
//! Each error names the file, line, column and key path, and says what would be
//! valid. Loading collects all of them, so one `pgcloak check` run shows every
//! mistake. The policy file holds no secrets, but errors still never quote column
//! *values*: there are none in this file.

use std::fmt;

/// The SQLSTATE for a bad policy file (config_file_error).
pub const SQLSTATE_CONFIG_FILE_ERROR: &str = "F0000";

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyErrorKind {
    /// The file could not be read.
    Io,
    /// The YAML could not be read into the policy shape (syntax, unknown key, wrong kind of value).
    Syntax,
    /// Well-formed YAML that breaks a policy rule.
    Invalid,
}

/// One problem in a policy file, printed as `FILE:LINE:COL: PATH: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct PolicyError {
    pub kind: PolicyErrorKind,
    pub file: String,
    /// 1-based; 0 when unknown (an I/O error).
    pub line: u64,
    /// 1-based, in characters; 0 when unknown.
    pub column: u64,
    /// Dotted key path such as `tables.public.customers.phone.mask`; empty when unknown.
    pub path: String,
    pub message: String,
}

impl PolicyError {
    /// One line, always: control characters that came from the file (a key with
    /// a newline in it, say) are escaped so each error stays on its own line.
    fn render(&self) -> String {
        let line = if self.path.is_empty() {
            format!(
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            format!(
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.column, self.path, self.message
            )
        };
        if line.chars().any(char::is_control) {
            line.chars()
                .flat_map(|c| {
                    if c.is_control() {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect()
        } else {
            line
        }
    }

    pub fn sqlstate(&self) -> &'static str {
        SQLSTATE_CONFIG_FILE_ERROR
    }
}

/// All problems found in one policy file (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors {
    pub errors: Vec<PolicyError>,
}

impl PolicyErrors {
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.errors.iter()
    }

    /// The messages alone (without file and position), handy in tests.
    pub fn messages(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.message.as_str()).collect()
    }

    pub fn sqlstate(&self) -> &'static str {
        SQLSTATE_CONFIG_FILE_ERROR
    }
}

impl fmt::Display for PolicyErrors {
    /// One error per line, in file order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}
