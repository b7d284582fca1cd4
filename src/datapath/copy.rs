//! COPY streams of protected tables, row by row in bounded memory:
//! `COPY … FROM STDIN` fields are encrypted as they stream to the server,
//! `COPY … TO STDOUT` fields are decrypted (or withheld) on the way back.
//! Text and CSV formats; binary COPY of protected tables is refused upstream
//! of here by the analysis.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::values::{bytea_hex, parse_bytea_text, render};
use super::{DataPathError, Protection};
use crate::codec::{self, SessionContext};
use crate::observe::Sink;
use crate::policy::{ColumnRef, RoleName};
use crate::sql::refusal::{ColumnName, Fixed, Operation, Reason, Refusal};
use crate::sql::{CopyFormat, CopyPlan};
use crate::wire::Tag;

/// The longest row pgcloak buffers while looking for its end.
const MAX_ROW_BYTES: usize = 64 << 20;

/// The state of one COPY FROM STDIN stream.
pub(super) struct CopyIn {
    plan: Arc<CopyPlan>,
    partial: Vec<u8>,
    header_pending: bool,
    done: bool,
}

impl CopyIn {
    pub(super) fn new(plan: Arc<CopyPlan>) -> CopyIn {
        CopyIn {
            header_pending: plan.header,
            plan,
            partial: Vec::new(),
            done: false,
        }
    }

    /// Consumes one CopyData payload; appends CopyData with every complete row, encrypted.
    pub(super) fn feed(
        &mut self,
        data: &[u8],
        prot: &Protection,
        ctx: &SessionContext,
        sink: &Sink,
        out: &mut BytesMut,
    ) -> Result<(), DataPathError> {
        self.partial.extend_from_slice(data);
        let mut rows_out = Vec::with_capacity(self.partial.len() + 256);
        let mut consumed = 0;
        let partial = std::mem::take(&mut self.partial);
        while let Some(end) = row_end(&partial[consumed..], &self.plan) {
            let row = &partial[consumed..consumed + end];
            consumed += end;
            self.process_row(row, prot, ctx, sink, &mut rows_out)?;
        }
        self.partial = partial;
        self.partial.drain(..consumed);
        if self.partial.len() > MAX_ROW_BYTES {
            return Err(Refusal::new(
                Operation::Copy,
                Reason::CopyRowTooLong { max: MAX_ROW_BYTES },
            )
            .into());
        }
        put_copy_data(out, &rows_out);
        Ok(())
    }

    /// CopyDone: a last row without a newline is still a row.
    pub(super) fn finish(
        &mut self,
        prot: &Protection,
        ctx: &SessionContext,
        sink: &Sink,
        out: &mut BytesMut,
    ) -> Result<(), DataPathError> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let row = std::mem::take(&mut self.partial);
        let mut rows_out = Vec::with_capacity(row.len() + 256);
        self.process_row(&row, prot, ctx, sink, &mut rows_out)?;
        put_copy_data(out, &rows_out);
        Ok(())
    }

    fn process_row(
        &mut self,
        row: &[u8],
        prot: &Protection,
        ctx: &SessionContext,
        sink: &Sink,
        rows_out: &mut Vec<u8>,
    ) -> Result<(), DataPathError> {
        if self.done {
            return Ok(());
        }
        if self.header_pending {
            self.header_pending = false;
            rows_out.extend_from_slice(row);
            return Ok(());
        }
        let body = strip_eol(row);
        if self.plan.format == CopyFormat::Text && body == b"\\." {
            self.done = true;
            rows_out.extend_from_slice(row);
            return Ok(());
        }
        let fields = split_fields(body, &self.plan)?;
        check_width(&fields, &self.plan)?;
        let delim = delimiter(&self.plan);
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                rows_out.push(delim);
            }
            match (self.plan.fields.get(i).copied().flatten(), f) {
                (Some(col), Field::Value(raw)) => {
                    let value = decode_field(raw, &self.plan);
                    let c = prot.policy.column(col);
                    let canonical = codec::text_to_canonical(c.logical_type, &value, ctx)
                        .map_err(|e| DataPathError::codec(&c.qualified_name(), e))?;
                    sink.encrypted(&prot.policy, col);
                    let env = prot
                        .suite
                        .encrypt(col, &canonical)
                        .map_err(|e| DataPathError::crypto(&c.qualified_name(), e))?;
                    let hex = bytea_hex(&env);
                    if self.plan.format == CopyFormat::Text {
                        // COPY text reads backslash escapes: \\x... is the string \x...
                        rows_out.push(b'\\');
                    }
                    rows_out.extend_from_slice(&hex);
                }
                (_, Field::Null(raw)) | (_, Field::Value(raw)) => rows_out.extend_from_slice(raw),
            }
        }
        rows_out.extend_from_slice(&row[body.len()..]);
        Ok(())
    }
}

fn put_copy_data(out: &mut BytesMut, payload: &[u8]) {
    if payload.is_empty() {
        return;
    }
    out.put_u8(Tag::COPY_DATA.byte());
    out.put_i32(payload.len() as i32 + 4);
    out.put_slice(payload);
}

fn delimiter(plan: &CopyPlan) -> u8 {
    plan.delimiter
        .map(|c| c as u8)
        .unwrap_or(match plan.format {
            CopyFormat::Text => b'\t',
            CopyFormat::Csv => b',',
        })
}

fn quote(plan: &CopyPlan) -> u8 {
    plan.quote.map(|c| c as u8).unwrap_or(b'"')
}

fn escape(plan: &CopyPlan) -> u8 {
    plan.escape.map(|c| c as u8).unwrap_or(quote(plan))
}

fn null_marker(plan: &CopyPlan) -> &[u8] {
    match (&plan.null, plan.format) {
        (Some(n), _) => n.as_bytes(),
        (None, CopyFormat::Text) => b"\\N",
        (None, CopyFormat::Csv) => b"",
    }
}

fn strip_eol(row: &[u8]) -> &[u8] {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.strip_suffix(b"\r").unwrap_or(row)
}

/// The length of the first complete row (including its newline), if there is one.
fn row_end(buf: &[u8], plan: &CopyPlan) -> Option<usize> {
    match plan.format {
        CopyFormat::Text => buf.iter().position(|&b| b == b'\n').map(|p| p + 1),
        CopyFormat::Csv => {
            let (q, e) = (quote(plan), escape(plan));
            let mut in_quotes = false;
            let mut i = 0;
            while i < buf.len() {
                let b = buf[i];
                if in_quotes {
                    if b == e && e != q && buf.get(i + 1) == Some(&q) {
                        i += 2;
                        continue;
                    }
                    if b == q {
                        if e == q && buf.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        in_quotes = false;
                    }
                } else if b == q {
                    in_quotes = true;
                } else if b == b'\n' {
                    return Some(i + 1);
                }
                i += 1;
            }
            None
        }
    }
}

enum Field<'a> {
    Null(&'a [u8]),
    Value(&'a [u8]),
}

/// Splits a row (without its newline) into raw fields, as written.
fn split_fields<'a>(row: &'a [u8], plan: &CopyPlan) -> Result<Vec<Field<'a>>, DataPathError> {
    let d = delimiter(plan);
    let null = null_marker(plan);
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let (q, e) = (quote(plan), escape(plan));
    let mut in_quotes = false;
    while i <= row.len() {
        let at_end = i == row.len();
        let b = row.get(i).copied().unwrap_or(0);
        if !at_end && plan.format == CopyFormat::Text && b == b'\\' {
            i += 2;
            continue;
        }
        if !at_end && plan.format == CopyFormat::Csv {
            if in_quotes {
                if b == e && e != q && row.get(i + 1) == Some(&q) {
                    i += 2;
                    continue;
                }
                if b == q {
                    if e == q && row.get(i + 1) == Some(&q) {
                        i += 2;
                        continue;
                    }
                    in_quotes = false;
                }
                i += 1;
                continue;
            } else if b == q {
                in_quotes = true;
                i += 1;
                continue;
            }
        }
        if at_end || b == d {
            let raw = &row[start.min(row.len())..i.min(row.len())];
            fields.push(if raw == null {
                Field::Null(raw)
            } else {
                Field::Value(raw)
            });
            start = i + 1;
        }
        i += 1;
    }
    if in_quotes {
        return Err(Refusal::new(Operation::Copy, Reason::Fixed(Fixed::UnterminatedCsv)).into());
    }
    Ok(fields)
}

fn check_width(fields: &[Field<'_>], plan: &CopyPlan) -> Result<(), DataPathError> {
    let ok = if plan.plain_tail {
        fields.len() >= plan.fields.len()
    } else {
        fields.len() == plan.fields.len()
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            Operation::Copy,
            Reason::CopyFieldCount {
                got: fields.len(),
                expected: plan.fields.len(),
            },
        )
        .into())
    }
}

/// The value a raw field stands for (escapes or quotes removed).
fn decode_field(raw: &[u8], plan: &CopyPlan) -> Vec<u8> {
    match plan.format {
        CopyFormat::Text => {
            let mut out = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                if raw[i] != b'\\' || i + 1 >= raw.len() {
                    out.push(raw[i]);
                    i += 1;
                    continue;
                }
                let c = raw[i + 1];
                i += 2;
                match c {
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(11),
                    b'0'..=b'7' => {
                        let mut v = u32::from(c - b'0');
                        let mut n = 1;
                        while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                            v = v * 8 + u32::from(raw[i] - b'0');
                            i += 1;
                            n += 1;
                        }
                        out.push((v & 0xff) as u8);
                    }
                    b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                        let mut v = 0u32;
                        let mut n = 0;
                        while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                            v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                            i += 1;
                            n += 1;
                        }
                        out.push(v as u8);
                    }
                    other => out.push(other),
                }
            }
            out
        }
        CopyFormat::Csv => {
            let (q, e) = (quote(plan), escape(plan));
            let mut out = Vec::with_capacity(raw.len());
            let mut in_quotes = false;
            let mut i = 0;
            while i < raw.len() {
                let b = raw[i];
                if in_quotes {
                    // Inside quotes, ESCAPE before QUOTE (or before ESCAPE) is literal.
                    let next = raw.get(i + 1).copied();
                    if b == e && (next == Some(q) || (e != q && next == Some(e))) {
                        if let Some(n) = next {
                            out.push(n);
                        }
                        i += 2;
                        continue;
                    }
                    if b == q {
                        in_quotes = false;
                    } else {
                        out.push(b);
                    }
                } else if b == q {
                    in_quotes = true;
                } else {
                    out.push(b);
                }
                i += 1;
            }
            out
        }
    }
}

/// Escapes a value for COPY text or CSV output.
fn encode_field(value: &[u8], plan: &CopyPlan, out: &mut Vec<u8>) {
    let d = delimiter(plan);
    match plan.format {
        CopyFormat::Text => {
            for &b in value {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' if d == b'\t' => out.extend_from_slice(b"\\t"),
                    _ if b == d => {
                        out.push(b'\\');
                        out.push(b);
                    }
                    _ => out.push(b),
                }
            }
        }
        CopyFormat::Csv => {
            let q = quote(plan);
            let e = escape(plan);
            let needs = value.is_empty()
                || value == null_marker(plan)
                || value
                    .iter()
                    .any(|&b| b == d || b == q || b == b'\n' || b == b'\r');
            if !needs {
                out.extend_from_slice(value);
                return;
            }
            out.push(q);
            for &b in value {
                if b == q || b == e {
                    out.push(e);
                }
                out.push(b);
            }
            out.push(q);
        }
    }
}

/// The session's side of a COPY TO STDOUT row: its codec context, roles and sink.
pub(super) struct CopyOutSession<'a> {
    pub(super) ctx: &'a SessionContext,
    pub(super) roles: &'a [RoleName],
    pub(super) sink: &'a Sink,
}

/// Rewrites one COPY TO STDOUT row (one CopyData payload) for the session's roles.
pub(super) fn transform_copy_out_row(
    prot: &Protection,
    current: &Protection,
    session: &CopyOutSession<'_>,
    plan: &CopyPlan,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), DataPathError> {
    let CopyOutSession { ctx, roles, sink } = *session;
    let body = strip_eol(payload);
    let fields = split_fields(body, plan)?;
    check_width(&fields, plan)?;
    let d = delimiter(plan);
    let mut row = Vec::with_capacity(payload.len() * 2);
    let mut guard = super::insider::RowGuard::new(prot);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            row.push(d);
        }
        let col: Option<ColumnRef> = plan.fields.get(i).copied().flatten();
        match (col, f) {
            (Some(col), Field::Value(raw)) => {
                let text = decode_field(raw, plan);
                let envelope = parse_bytea_text(&text).ok_or_else(|| {
                    DataPathError::from(Refusal::new(
                        Operation::Copy,
                        Reason::NotByteaValue(ColumnName::quoted(&prot.policy, col)),
                    ))
                })?;
                let view = prot.policy.access_for(roles, col);
                if let Some(g) = guard.as_mut() {
                    g.value(col, view, &envelope);
                }
                match render(prot, ctx, sink, col, view, &envelope, 0)? {
                    Some(v) => encode_field(&v, plan, &mut row),
                    None => row.extend_from_slice(null_marker(plan)),
                }
            }
            (_, Field::Null(raw)) | (_, Field::Value(raw)) => row.extend_from_slice(raw),
        }
    }
    if let Some(g) = guard {
        g.finish(current, roles, sink)?;
    }
    row.extend_from_slice(&payload[body.len()..]);
    put_copy_data(out, &row);
    Ok(())
}
