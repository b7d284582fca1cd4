//! tracing setup: text for humans, JSON (one object per line, fields flattened:
//! `timestamp`, `level`, `target`, `message`, then the event's own fields) for
//! pipelines. Levels: `log.level` plus per-target `log.levels`; `RUST_LOG`, when
//! set, overrides both.
//!
//! Targets: `pgcloak::session`, `::auth`, `::sql`, `::crypto`, `::policy`,
//! `::catalog`, `::admin`, `::audit`.

//!
//! Third-party crates that log raw SQL or parameters at debug (sqlparser echoes
//! every statement and literal it parses; tokio-postgres logs queries and
//! parameters) are capped whatever the configuration says: a debug level must
//! never turn the log into a copy of the data.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Caps appended after the operator's directives (a later directive for the same
/// target replaces an earlier one).
pub const LEAK_CAPS: &str = "sqlparser=off,tokio_postgres=info,postgres_protocol=info";

/// The effective filter: `RUST_LOG` or the config, then [`LEAK_CAPS`].
pub fn directive(cfg: &LogConfig) -> String {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| cfg.filter_directive());
    format!("{base},{LEAK_CAPS}")
}

/// Writes each event on exactly one line: a line break inside a message or a field
/// (a list of policy errors, a multi-line error from a driver) is written as the two
/// characters `\n`, so that `grep`, `tail` and log shippers see one event per line.
/// The JSON format already escapes them; this makes the text format do the same.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer formats a whole event, then writes it at once.
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body.iter().any(|&b| b == b'\n' || b == b'\r') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                _ => line.push(b),
            }
        }
        line.extend_from_slice(end);
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn stderr_one_line() -> OneLine<std::io::Stderr> {
    OneLine(std::io::stderr())
}

pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(directive(cfg))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{LEAK_CAPS}")));
    // Colour escapes only when a person is watching: a file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(stderr_one_line)
        .with_ansi(ansi)
        .with_target(true);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::OneLine;
    use std::io::Write;

    fn through(input: &str) -> String {
        let mut w = OneLine(Vec::new());
        w.write_all(input.as_bytes()).unwrap();
        String::from_utf8(w.0).unwrap()
    }

    #[test]
    fn an_event_with_line_breaks_stays_on_one_line() {
        assert_eq!(
            through("ERROR x: error=a.yaml:3: unknown\na.yaml:7: bad type\n"),
            "ERROR x: error=a.yaml:3: unknown\\na.yaml:7: bad type\n"
        );
        assert_eq!(through("a\r\nb\n"), "a\\r\\nb\n");
        assert_eq!(through("plain line\n"), "plain line\n");
        assert_eq!(through("no end"), "no end");
    }
}
