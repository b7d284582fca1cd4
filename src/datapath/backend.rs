//! Upstream → client: rewrite result descriptions and rows for the session's
//! roles, drop the responses to injected messages, redact errors.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::egress::EgressCheck;
use super::values::{parse_bytea_text, render, reported_type};
use super::{DataPath, DataPathError, Expect, Protection, ResultTransform};
use crate::policy::{ColumnRef, LogicalType, TableName, View};
use crate::sql::refusal::{ColumnName, Fixed, LeakPlace, Reason, Refusal};
use crate::sql::Lineage;
use crate::wire::extended::{
    begin_data_row, decode_data_row, decode_error_fields, decode_parameter_description,
    decode_row_description, encode_error_fields, encode_parameter_description,
    encode_row_description, finish_message, put_value, FieldDescription,
};
use crate::wire::messages::decode_parameter_status;
use crate::wire::messages::field;
use crate::wire::Frame;
use crate::wire::{Flow, Tag};

/// What to do with one column of the result set being relayed.
#[derive(Debug, Clone, Copy)]
struct ColumnAction {
    col: ColumnRef,
    view: View,
    client_format: i16,
    upstream_binary: bool,
}

/// The result set being relayed, resolved for this session's roles.
#[derive(Default)]
pub(super) struct ActiveResult {
    actions: Vec<Option<ColumnAction>>,
    /// The generation the actions' column references index (None: passthrough).
    prot: Option<Arc<Protection>>,
    /// The RowDescription the client got (simple protocol), to name a column in an error.
    described: Option<Bytes>,
    /// Every column has a type whose text and binary forms cannot spell an envelope:
    /// the rows pass without the egress scan.
    unscanned: bool,
}

impl ActiveResult {
    fn is_passthrough(&self) -> bool {
        self.actions.iter().all(Option::is_none)
    }
}

impl DataPath {
    /// Handles one upstream message, appending what goes to the client to `out`.
    pub fn on_backend(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, DataPathError> {
        let tag = Tag(msg[0]);
        self.apply_catalog_updates();
        if tag == Tag::NOTIFICATION_RESPONSE {
            // Asynchronous: forwarded even while a failed cycle is being swallowed.
            self.on_notification(msg, out);
            return Ok(Flow::Continue);
        }
        if tag == Tag::NOTICE_RESPONSE {
            let mark = out.len();
            out.extend_from_slice(msg);
            self.withhold_message_fields(mark, out);
            return Ok(Flow::Continue);
        }
        if self.awaiting_search_path() {
            self.on_search_path_reply(msg, out);
            return Ok(Flow::Continue);
        }
        if self.state.result_failed() {
            if tag == Tag::READY_FOR_QUERY {
                self.finish_cycle();
                out.extend_from_slice(msg);
            } else if tag == Tag::PARAMETER_STATUS
                || tag == Tag::NOTIFICATION_RESPONSE
                || tag == Tag::NOTICE_RESPONSE
            {
                self.track_parameter(msg, tag);
                out.extend_from_slice(msg);
            }
            return Ok(Flow::Continue);
        }
        // A failure mid-message must not leave half a rewritten row in `out`.
        let mark = out.len();
        match self.on_backend_message(tag, msg, out, mark) {
            Ok(()) => Ok(Flow::Continue),
            Err(e) => Ok(self.fail_result(e, mark, out)),
        }
    }

    /// One upstream message of the current cycle. Messages no rule concerns are
    /// appended as their original bytes; the protection generation is loaded only
    /// for the messages that need it.
    fn on_backend_message(
        &mut self,
        tag: Tag,
        msg: &[u8],
        out: &mut BytesMut,
        mark: usize,
    ) -> Result<(), DataPathError> {
        match tag {
            Tag::PARAMETER_STATUS => {
                self.track_parameter(msg, tag);
                out.extend_from_slice(msg);
                Ok(())
            }
            Tag::PARSE_COMPLETE | Tag::BIND_COMPLETE => {
                if !self.state.swallows(tag) {
                    out.extend_from_slice(msg);
                }
                Ok(())
            }
            Tag::PARAMETER_DESCRIPTION => self.on_parameter_description(msg, out),
            Tag::ROW_DESCRIPTION => self.on_row_description(msg, out),
            Tag::NO_DATA => {
                self.state.no_data();
                out.extend_from_slice(msg);
                Ok(())
            }
            Tag::DATA_ROW => {
                self.on_data_row(msg, out)?;
                self.egress_row(&out[mark..])
            }
            Tag::COMMAND_COMPLETE | Tag::EMPTY_QUERY_RESPONSE | Tag::PORTAL_SUSPENDED => {
                if tag == Tag::COMMAND_COMPLETE && changes_schema_or_roles(&msg[5..]) {
                    // DDL or a GRANT went through: the session refreshes its catalog view.
                    self.catalog_changed.notify_one();
                }
                self.state.command_done(tag == Tag::PORTAL_SUSPENDED);
                out.extend_from_slice(msg);
                Ok(())
            }
            Tag::ERROR_RESPONSE => {
                let prot = self.protection.load_full();
                self.on_error(&prot, msg, out);
                self.withhold_message_fields(mark, out);
                Ok(())
            }
            Tag::READY_FOR_QUERY => {
                self.finish_cycle();
                out.extend_from_slice(msg);
                Ok(())
            }
            Tag::COPY_OUT_RESPONSE => {
                self.state.copy_out_started();
                out.extend_from_slice(msg);
                Ok(())
            }
            Tag::COPY_IN_RESPONSE => {
                self.state.copy_in_started();
                out.extend_from_slice(msg);
                Ok(())
            }
            Tag::COPY_DATA => self.on_copy_out_data(msg, out, mark),
            _ => {
                out.extend_from_slice(msg);
                Ok(())
            }
        }
    }

    /// CopyData of COPY TO STDOUT: decrypted when the stream carries protected fields,
    /// then checked for envelopes.
    fn on_copy_out_data(
        &mut self,
        msg: &[u8],
        out: &mut BytesMut,
        mark: usize,
    ) -> Result<(), DataPathError> {
        let prot = self.protection.load_full();
        match self.state.copy_out().cloned() {
            Some(stream) => {
                let started = std::time::Instant::now();
                let r = super::copy::transform_copy_out_row(
                    &stream.prot,
                    &prot,
                    &super::copy::CopyOutSession {
                        ctx: &self.codec,
                        roles: &self.roles,
                        sink: &self.sink,
                    },
                    &stream.plan,
                    &msg[5..],
                    out,
                );
                self.sink.handler_time(started);
                r
            }
            None => {
                out.extend_from_slice(msg);
                Ok(())
            }
        }
        .and_then(|()| self.egress_copy(&prot, &out[mark..]))
    }

    /// The client gets pgcloak's error instead of the rest of this cycle (or, for the
    /// insider guard's honeytoken deny, a FATAL that ends the session).
    fn fail_result(&mut self, e: DataPathError, mark: usize, out: &mut BytesMut) -> Flow {
        e.report(&self.sink);
        out.truncate(mark);
        if e.ends_session() {
            // The insider guard closes the session (honeytoken under `deny`).
            let pg = e.to_pg();
            out.extend_from_slice(&crate::wire::PgError::fatal(pg.code, pg.message).encode());
            return Flow::Stop;
        }
        out.extend_from_slice(&e.to_pg().encode());
        self.state.fail_result();
        Flow::Continue
    }

    fn track_parameter(&mut self, msg: &[u8], tag: Tag) {
        if tag != Tag::PARAMETER_STATUS {
            return;
        }
        if let Ok((name, value)) =
            decode_parameter_status(&Frame::from_encoded(Bytes::copy_from_slice(msg)))
        {
            // An unsupported setting only matters when a protected value is converted,
            // and the conversion reports it then.
            let _ = self.codec.update(&name, &value);
        }
    }

    /// ReadyForQuery: the end of a Sync or simple-Query cycle.
    fn finish_cycle(&mut self) {
        if self.state.ready_for_query() {
            // Everything the client sent is answered: no parsed COPY can still be waiting.
            self.copy_settled();
        }
    }

    fn on_parameter_description(
        &mut self,
        msg: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), DataPathError> {
        let Some(Expect::DescribeStatement {
            params,
            prot: Some(prot),
            ..
        }) = self.state.front()
        else {
            out.extend_from_slice(msg);
            return Ok(());
        };
        if params.is_empty() {
            out.extend_from_slice(msg);
            return Ok(());
        }
        let mut types = decode_parameter_description(msg)?;
        for p in params {
            let i = usize::from(p.index).saturating_sub(1);
            if let Some(t) = types.get_mut(i) {
                let ty = prot
                    .policy
                    .get(p.column)
                    .map(|c| c.logical_type)
                    .unwrap_or(p.logical_type);
                *t = if p.array { array_oid(ty) } else { ty.oid() };
            }
        }
        encode_parameter_description(&types, out);
        Ok(())
    }

    fn on_row_description(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<(), DataPathError> {
        let super::state::RowDescriptionFor {
            transform,
            described: pop,
            upstream_binary,
            simple,
        } = self.state.row_description();
        let mut fields = decode_row_description(msg)?;
        let shape_len = transform.as_ref().map_or(0, |t| t.shape.columns.len());
        self.check_described_columns(transform.as_deref(), &fields)?;
        let Some(transform) = transform else {
            out.extend_from_slice(msg);
            if simple {
                self.state.relay_rows(passthrough_rows(msg, &fields));
            }
            return Ok(());
        };
        let prot = &*transform.prot;
        if !transform.shape.has_encrypted() {
            out.extend_from_slice(msg);
            if !pop {
                self.state.relay_rows(passthrough_rows(msg, &fields));
            }
            return Ok(());
        }
        if fields.len() < shape_len || (fields.len() > shape_len && !transform.shape.plain_tail) {
            return Err(Refusal::fixed(Fixed::ResultColumnsMismatch).into());
        }
        let mut active = self.resolve_actions(&transform, upstream_binary);
        for (i, action) in active.actions.iter().enumerate() {
            let Some(a) = action else { continue };
            let f = &mut fields[i];
            if f.type_oid != LogicalType::Bytea.oid() {
                return Err(Refusal::of(Reason::NotByteaType {
                    column: ColumnName::quoted(&prot.policy, a.col),
                    oid: f.type_oid,
                })
                .into());
            }
            let ty = prot.policy.column(a.col).logical_type;
            let (oid, len) = reported_type(ty, a.view);
            f.type_oid = oid;
            f.type_len = len;
            f.type_mod = -1;
            f.format = if pop && !upstream_binary {
                0
            } else {
                a.client_format
            };
        }
        let start = out.len();
        encode_row_description(&fields, out);
        if !pop {
            active.described = Some(Bytes::copy_from_slice(&out[start..]));
            self.state.relay_rows(Arc::new(active));
        }
        Ok(())
    }

    /// Cross-check: a column RowDescription says comes from a protected table column
    /// must be one the analysis knows to be encrypted.
    fn check_described_columns(
        &self,
        transform: Option<&ResultTransform>,
        fields: &[FieldDescription],
    ) -> Result<(), DataPathError> {
        for (i, f) in fields.iter().enumerate() {
            if f.table_oid == 0 {
                continue;
            }
            if let Some(col) = self.schema.snapshot().column_at(f.table_oid, f.column_attr) {
                let known = transform.and_then(|t| t.shape.columns.get(i)).map(|c| {
                    c.lineage == Lineage::Encrypted(col)
                        || matches!(c.lineage, Lineage::Encrypted(_))
                });
                if known != Some(true) {
                    let prot = self.protection.load();
                    return Err(Refusal::of(Reason::UnfollowedResultColumn {
                        position: i + 1,
                        column: ColumnName::quoted(&prot.policy, col),
                    })
                    .into());
                }
            }
        }
        Ok(())
    }

    fn resolve_actions(&self, t: &ResultTransform, upstream_binary: bool) -> ActiveResult {
        let prot = &t.prot;
        let actions = t
            .shape
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.lineage {
                Lineage::Encrypted(col) => Some(ColumnAction {
                    col,
                    view: prot.policy.access_for(&self.roles, col),
                    client_format: t
                        .client_formats
                        .as_ref()
                        .and_then(|f| f.get(i).copied())
                        .unwrap_or(0),
                    upstream_binary,
                }),
                _ => None,
            })
            .collect();
        ActiveResult {
            actions,
            prot: Some(t.prot.clone()),
            described: None,
            unscanned: false,
        }
    }

    /// The egress check of one DataRow as the client would get it. Rows of a result
    /// whose every column has a type that cannot spell an envelope are not scanned, nor
    /// rows too short to hold one.
    fn egress_row(&self, row: &[u8]) -> Result<(), DataPathError> {
        if !super::egress::may_hold_row(row) || self.state.rows().is_some_and(|a| a.unscanned) {
            return Ok(());
        }
        let prot = self.protection.load();
        let check = EgressCheck {
            prot: &prot,
            roles: &self.roles,
        };
        let Err(leak) = check.data_row(row) else {
            return Ok(());
        };
        // By position only: a result column's name is the client's alias.
        let position = leak.column.unwrap_or(0);
        Err(leak_error(LeakPlace::ResultColumn(position + 1)))
    }

    /// The egress check of one CopyData message of COPY TO STDOUT.
    fn egress_copy(&self, prot: &Protection, msg: &[u8]) -> Result<(), DataPathError> {
        let Some(payload) = msg.get(5..) else {
            return Ok(());
        };
        let check = EgressCheck {
            prot,
            roles: &self.roles,
        };
        let Err(leak) = check.bytes(payload) else {
            return Ok(());
        };
        // Text COPY separates fields with tabs (escaped inside values).
        let field = 1 + payload[..leak.offset.min(payload.len())]
            .iter()
            .filter(|&&b| b == b'\t')
            .count();
        Err(leak_error(LeakPlace::CopyField(field)))
    }

    /// ErrorResponse/NoticeResponse at `out[mark..]`: a field that carries an
    /// envelope the roles may not see (`RAISE NOTICE '%', phone` in a function) is
    /// replaced; severity, SQLSTATE and position stay.
    fn withhold_message_fields(&self, mark: usize, out: &mut BytesMut) {
        let prot = self.protection.load();
        let check = EgressCheck {
            prot: &prot,
            roles: &self.roles,
        };
        let Some(body) = out.get(mark + 5..) else {
            return;
        };
        if check.bytes(body).is_ok() {
            return;
        }
        let tag = out[mark];
        let fields = decode_error_fields(&out[mark..]).unwrap_or_default();
        let fields: Vec<(u8, Bytes)> = fields
            .into_iter()
            .filter_map(|(c, v)| match check.bytes(&v) {
                Ok(()) => Some((c, v)),
                Err(_) if c == field::MESSAGE => Some((c, Bytes::from_static(FIELD_WITHHELD))),
                Err(_) => None,
            })
            .collect();
        leak_error(LeakPlace::ServerMessage).report(&self.sink);
        out.truncate(mark);
        encode_error_fields(tag, &fields, out);
    }

    /// NotificationResponse: a payload that carries an envelope the roles may not
    /// see is replaced (the notification itself still arrives; it is asynchronous
    /// and has no statement to fail).
    fn on_notification(&mut self, msg: &[u8], out: &mut BytesMut) {
        let prot = self.protection.load();
        let check = EgressCheck {
            prot: &prot,
            roles: &self.roles,
        };
        let Some(body) = msg.get(5..) else {
            out.extend_from_slice(msg);
            return;
        };
        if check.bytes(body).is_ok() {
            out.extend_from_slice(msg);
            return;
        }
        leak_error(LeakPlace::NotifyPayload).report(&self.sink);
        // pid, channel, then the payload; keep pid and channel when they are clean.
        let channel_end = body
            .get(4..)
            .and_then(|r| r.iter().position(|&b| b == 0))
            .map(|p| 4 + p);
        let channel: &[u8] = match channel_end {
            Some(end) if check.bytes(&body[4..end]).is_ok() => &body[4..end],
            _ => b"",
        };
        let mut payload = Vec::with_capacity(64);
        payload.extend_from_slice(&body[..4.min(body.len())]);
        payload.extend_from_slice(channel);
        payload.push(0);
        payload.extend_from_slice(NOTIFY_WITHHELD);
        payload.push(0);
        out.extend_from_slice(b"A");
        out.extend_from_slice(&(payload.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(&payload);
    }

    fn on_data_row(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<(), DataPathError> {
        if self.state.rows().is_none() {
            if let Some(t) = self.state.execute_transform() {
                let active = self.resolve_actions(&t, true);
                self.state.relay_rows(Arc::new(active));
            }
        }
        let Some(active) = self.state.rows().cloned() else {
            out.extend_from_slice(msg);
            return Ok(());
        };
        let Some(prot) = active.prot.as_deref().filter(|_| !active.is_passthrough()) else {
            out.extend_from_slice(msg);
            return Ok(());
        };
        let values = decode_data_row(msg)?;
        if values.len() < active.actions.len() {
            return Err(Refusal::fixed(Fixed::ResultRowMismatch).into());
        }
        let mut guard = super::insider::RowGuard::new(prot);
        let start = begin_data_row(out, values.len());
        for (i, v) in values.iter().enumerate() {
            let action = active.actions.get(i).copied().flatten();
            match (action, v) {
                (Some(a), Some(raw)) => {
                    let envelope = if a.upstream_binary {
                        std::borrow::Cow::Borrowed(*raw)
                    } else {
                        std::borrow::Cow::Owned(parse_bytea_text(raw).ok_or_else(|| {
                            DataPathError::from(Refusal::of(Reason::NotByteaValue(
                                ColumnName::quoted(&prot.policy, a.col),
                            )))
                        })?)
                    };
                    if let Some(g) = guard.as_mut() {
                        g.value(a.col, a.view, &envelope);
                    }
                    let rendered = render(
                        prot,
                        &self.codec,
                        &self.sink,
                        a.col,
                        a.view,
                        &envelope,
                        a.client_format,
                    )?;
                    put_value(out, rendered.as_deref());
                }
                (_, v) => put_value(out, *v),
            }
        }
        if let Some(g) = guard {
            // Before the row is complete: a refusal replaces it (on_backend truncates).
            g.finish(&self.protection.load(), &self.roles, &self.sink)?;
        }
        finish_message(out, start);
        Ok(())
    }

    fn on_error(&mut self, prot: &Protection, msg: &[u8], out: &mut BytesMut) {
        let super::state::ServerError { injected, own } = self.state.server_error();
        if let Some(own) = own {
            // The server's answer to pgcloak's CopyFail: the client gets the real reason.
            out.extend_from_slice(&own.encode());
            return;
        }
        let Ok(fields) = decode_error_fields(msg) else {
            out.extend_from_slice(msg);
            return;
        };
        let mut changed = false;
        let fields: Vec<(u8, Bytes)> = if injected {
            changed = true;
            // pgcloak's own error, raised through a DO block: drop the PL/pgSQL noise.
            fields
                .into_iter()
                .filter(|(c, _)| {
                    matches!(
                        *c,
                        field::SEVERITY
                            | field::SEVERITY_NONLOCALIZED
                            | field::CODE
                            | field::MESSAGE
                            | field::DETAIL
                            | field::HINT
                    )
                })
                .collect()
        } else {
            let table = field(&fields, field::TABLE);
            let schema = field(&fields, field::SCHEMA);
            let protected = match (schema, table) {
                (Some(s), Some(t)) => prot.policy.is_protected_table(&TableName::new(s, t)),
                _ => false,
            };
            if protected {
                fields
                    .into_iter()
                    .map(|(c, v)| {
                        if c == field::DETAIL {
                            changed = true;
                            (c, redact_detail(&v))
                        } else {
                            (c, v)
                        }
                    })
                    .collect()
            } else {
                fields
            }
        };
        if changed {
            encode_error_fields(Tag::ERROR_RESPONSE, &fields, out);
        } else {
            out.extend_from_slice(msg);
        }
    }
}

/// The rows of a result pgcloak does not rewrite: described for an egress error, or,
/// when no column's type can spell an envelope, not scanned at all (one shared value,
/// no copy of the description).
fn passthrough_rows(msg: &[u8], fields: &[FieldDescription]) -> Arc<ActiveResult> {
    static UNSCANNED: std::sync::OnceLock<Arc<ActiveResult>> = std::sync::OnceLock::new();
    if fields.iter().all(|f| envelope_free_type(f.type_oid)) {
        return UNSCANNED
            .get_or_init(|| {
                Arc::new(ActiveResult {
                    unscanned: true,
                    ..ActiveResult::default()
                })
            })
            .clone();
    }
    Arc::new(ActiveResult {
        described: Some(Bytes::copy_from_slice(msg)),
        ..ActiveResult::default()
    })
}

/// Types whose values, in text or binary form, cannot hold an envelope header: too
/// short in binary (at most 8 bytes; a header is 12), and in text only digits, signs,
/// `.`, `:`, `-`, `e`, `t`/`f`, `infinity`/`NaN` and month or day names in some
/// DateStyles (never a time zone name: timestamptz and timetz are not here, nor numeric,
/// whose digits are unbounded). bool, int8, int2, int4, oid, float4, float8, date,
/// time, timestamp.
fn envelope_free_type(oid: u32) -> bool {
    matches!(oid, 16 | 20 | 21 | 23 | 26 | 700 | 701 | 1082 | 1083 | 1114)
}

/// What a client gets instead of an error or notice text that carried an envelope.
pub(super) const FIELD_WITHHELD: &[u8] =
    b"(message withheld by pgcloak: it carried an encrypted value)";

/// What a client gets instead of a NOTIFY payload that carried an envelope.
pub(super) const NOTIFY_WITHHELD: &[u8] =
    b"(payload withheld by pgcloak: it carried an encrypted value)";

/// An envelope was about to reach a client that may not see it (SQLSTATE 42501:
/// the role lacks the right to this column's ciphertext, as a column privilege
/// would say; the session stays usable).
fn leak_error(place: LeakPlace) -> DataPathError {
    Refusal::of(Reason::CiphertextWithheld(place)).into()
}

fn field(fields: &[(u8, Bytes)], code: u8) -> Option<String> {
    fields
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Whether a CommandComplete tag reports a change to the schema or to role memberships.
fn changes_schema_or_roles(tag: &[u8]) -> bool {
    [
        &b"CREATE"[..],
        b"ALTER",
        b"DROP",
        b"COMMENT",
        b"GRANT",
        b"REVOKE",
        b"SELECT INTO",
    ]
    .iter()
    .any(|p| tag.starts_with(p))
}

/// Keeps the column list of a `Key (cols)=(values) ...` detail, drops the values.
fn redact_detail(detail: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(detail);
    if let Some(rest) = text.strip_prefix("Key (") {
        if let Some(end) = rest.find(")=(") {
            return Bytes::from(format!("Key ({})=(redacted by pgcloak)", &rest[..end]));
        }
    }
    Bytes::from_static(b"(detail redacted by pgcloak: it may contain a protected value)")
}

/// The array type OID for a logical type (ParameterDescription of `= ANY($n)`).
fn array_oid(ty: LogicalType) -> u32 {
    match ty {
        LogicalType::Text => 1009,
        LogicalType::Varchar => 1015,
        LogicalType::Int2 => 1005,
        LogicalType::Int4 => 1007,
        LogicalType::Int8 => 1016,
        LogicalType::Numeric => 1231,
        LogicalType::Float8 => 1022,
        LogicalType::Bool => 1000,
        LogicalType::Date => 1182,
        LogicalType::Timestamp => 1115,
        LogicalType::Timestamptz => 1185,
        LogicalType::Uuid => 2951,
        LogicalType::Jsonb => 3807,
        LogicalType::Bytea => 1001,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_details_keep_columns_and_drop_values() {
        assert_eq!(
            &redact_detail(b"Key (phone)=(\\x706301ab) already exists.")[..],
            b"Key (phone)=(redacted by pgcloak)"
        );
        assert!(
            redact_detail(b"Failing row contains (1, secret).").starts_with(b"(detail redacted")
        );
    }
}
