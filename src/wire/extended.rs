//! Typed views of the messages the data path rewrites: Query, Parse, Bind,
//! Describe, Execute, Close (frontend) and RowDescription, DataRow,
//! ParameterDescription (backend). Each decodes from one message's bytes and
//! encodes back; the data path only decodes what the policy requires.
//! Debug output never shows parameter or row values.

use bytes::{BufMut, Bytes, BytesMut};

use super::format::format_code_for;
use super::frame::BodyReader;
use super::messages::MessageBuilder;
use super::{Format, Tag, WireError};

fn body(msg: &[u8]) -> &[u8] {
    msg.get(5..).unwrap_or(&[])
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, WireError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Malformed { what })
}

/// Query ('Q'): the SQL text, in the client's encoding.
pub fn decode_query(msg: &[u8]) -> Result<&[u8], WireError> {
    let mut r = BodyReader::new(body(msg), "Query");
    r.cstr()
}

pub fn encode_query(sql: &[u8]) -> Bytes {
    let mut b = MessageBuilder::new(Tag::QUERY);
    b.bytes(sql).u8(0);
    b.finish()
}

/// Parse ('P').
#[derive(Clone, PartialEq, Eq)]
pub struct Parse {
    pub name: String,
    /// The statement text, in the client's encoding.
    pub sql: Vec<u8>,
    pub param_types: Vec<u32>,
}

impl std::fmt::Debug for Parse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parse")
            .field("name", &self.name)
            .field("sql_len", &self.sql.len())
            .field("param_types", &self.param_types)
            .finish()
    }
}

impl Parse {
    pub fn decode(msg: &[u8]) -> Result<Parse, WireError> {
        let mut r = BodyReader::new(body(msg), "Parse");
        let name = utf8(r.cstr()?, "Parse")?;
        let sql = r.cstr()?.to_vec();
        let n = r.i16()?;
        if n < 0 {
            return Err(WireError::Malformed { what: "Parse" });
        }
        let mut param_types = Vec::with_capacity(n as usize);
        for _ in 0..n {
            param_types.push(r.i32()? as u32);
        }
        Ok(Parse {
            name,
            sql,
            param_types,
        })
    }

    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(Tag::PARSE);
        b.cstr(&self.name).bytes(&self.sql).u8(0);
        b.i16(self.param_types.len() as i16);
        for t in &self.param_types {
            b.i32(*t as i32);
        }
        b.finish()
    }
}

/// Bind ('B').
#[derive(Clone, PartialEq, Eq)]
pub struct Bind {
    pub portal: String,
    pub statement: String,
    /// The codes as sent (kept raw so that an unchanged Bind forwards byte for byte, and
    /// PostgreSQL reports an invalid code itself): empty (all text), one (applies to all)
    /// or one per parameter. Read them with [`Bind::param_format_of`].
    pub param_formats: Vec<i16>,
    /// None is SQL NULL.
    pub params: Vec<Option<Bytes>>,
    /// As sent, like `param_formats`, one per result column. Read them with
    /// [`Bind::result_format_of`].
    pub result_formats: Vec<i16>,
}

impl std::fmt::Debug for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bind")
            .field("portal", &self.portal)
            .field("statement", &self.statement)
            .field("params", &self.params.len())
            .finish()
    }
}

impl Bind {
    pub fn decode(msg: &[u8]) -> Result<Bind, WireError> {
        let bad = || WireError::Malformed { what: "Bind" };
        let mut r = BodyReader::new(body(msg), "Bind");
        let portal = utf8(r.cstr()?, "Bind")?;
        let statement = utf8(r.cstr()?, "Bind")?;
        let nf = r.i16()?;
        if nf < 0 {
            return Err(bad());
        }
        let mut param_formats = Vec::with_capacity(nf as usize);
        for _ in 0..nf {
            param_formats.push(r.i16()?);
        }
        let np = r.i16()?;
        if np < 0 {
            return Err(bad());
        }
        let mut params = Vec::with_capacity(np as usize);
        for _ in 0..np {
            let len = r.i32()?;
            if len == -1 {
                params.push(None);
            } else if len < 0 {
                return Err(bad());
            } else {
                params.push(Some(Bytes::copy_from_slice(r.bytes(len as usize)?)));
            }
        }
        let nr = r.i16()?;
        if nr < 0 {
            return Err(bad());
        }
        let mut result_formats = Vec::with_capacity(nr as usize);
        for _ in 0..nr {
            result_formats.push(r.i16()?);
        }
        Ok(Bind {
            portal,
            statement,
            param_formats,
            params,
            result_formats,
        })
    }

    /// The format code of parameter `i` (0-based), following the protocol's rules, raw.
    pub fn param_format(&self, i: usize) -> i16 {
        format_code_for(&self.param_formats, i)
    }

    /// The format of parameter `i` (0-based); an invalid code is an error.
    pub fn param_format_of(&self, i: usize) -> Result<Format, WireError> {
        Format::for_item(&self.param_formats, i)
    }

    /// The format the client asked for result column `i`; an invalid code is an error.
    pub fn result_format_of(&self, i: usize) -> Result<Format, WireError> {
        Format::for_item(&self.result_formats, i)
    }

    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(Tag::BIND);
        b.cstr(&self.portal).cstr(&self.statement);
        b.i16(self.param_formats.len() as i16);
        for f in &self.param_formats {
            b.i16(*f);
        }
        b.i16(self.params.len() as i16);
        for p in &self.params {
            match p {
                None => {
                    b.i32(-1);
                }
                Some(v) => {
                    b.i32(v.len() as i32).bytes(v);
                }
            }
        }
        b.i16(self.result_formats.len() as i16);
        for f in &self.result_formats {
            b.i16(*f);
        }
        b.finish()
    }
}

/// The format code for column/parameter `i` given a format-code list, raw (see
/// [`Format::for_item`] for the typed form).
pub fn format_for(formats: &[i16], i: usize) -> i16 {
    format_code_for(formats, i)
}

/// Describe ('D') and Close ('C') target: a statement or a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Statement(String),
    Portal(String),
}

impl Target {
    /// The kind byte of a statement target.
    pub const STATEMENT: u8 = b'S';
    /// The kind byte of a portal target.
    pub const PORTAL: u8 = b'P';

    /// The kind byte this target is sent with.
    pub fn kind(&self) -> u8 {
        match self {
            Target::Statement(_) => Target::STATEMENT,
            Target::Portal(_) => Target::PORTAL,
        }
    }
}

pub fn decode_target(msg: &[u8], what: &'static str) -> Result<Target, WireError> {
    let mut r = BodyReader::new(body(msg), what);
    let kind = r.u8()?;
    let name = utf8(r.cstr()?, what)?;
    match kind {
        Target::STATEMENT => Ok(Target::Statement(name)),
        Target::PORTAL => Ok(Target::Portal(name)),
        _ => Err(WireError::Malformed { what }),
    }
}

/// Execute ('E'): portal name and row limit.
pub fn decode_execute(msg: &[u8]) -> Result<(String, i32), WireError> {
    let mut r = BodyReader::new(body(msg), "Execute");
    let portal = utf8(r.cstr()?, "Execute")?;
    let max_rows = r.i32()?;
    Ok((portal, max_rows))
}

pub fn encode_execute(portal: &str, max_rows: i32) -> Bytes {
    let mut b = MessageBuilder::new(Tag::EXECUTE);
    b.cstr(portal).i32(max_rows);
    b.finish()
}

/// Close ('C') of a statement (`kind` [`Target::STATEMENT`]) or a portal
/// ([`Target::PORTAL`]).
pub fn encode_close(kind: u8, name: &str) -> Bytes {
    let mut b = MessageBuilder::new(Tag::CLOSE);
    b.u8(kind).cstr(name);
    b.finish()
}

/// Sync ('S').
pub fn encode_sync() -> Bytes {
    MessageBuilder::new(Tag::SYNC).finish()
}

/// One field of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: Bytes,
    pub table_oid: u32,
    pub column_attr: i16,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_mod: i32,
    /// The format code as sent; read it with [`FieldDescription::format_of`].
    pub format: i16,
}

impl FieldDescription {
    /// The column's format; an invalid code is an error.
    pub fn format_of(&self) -> Result<Format, WireError> {
        Format::from_code(self.format)
    }
}

/// RowDescription ('T').
pub fn decode_row_description(msg: &[u8]) -> Result<Vec<FieldDescription>, WireError> {
    let mut r = BodyReader::new(body(msg), "RowDescription");
    let n = r.i16()?;
    if n < 0 {
        return Err(WireError::Malformed {
            what: "RowDescription",
        });
    }
    let mut fields = Vec::with_capacity(n as usize);
    for _ in 0..n {
        fields.push(FieldDescription {
            name: Bytes::copy_from_slice(r.cstr()?),
            table_oid: r.i32()? as u32,
            column_attr: r.i16()?,
            type_oid: r.i32()? as u32,
            type_len: r.i16()?,
            type_mod: r.i32()?,
            format: r.i16()?,
        });
    }
    Ok(fields)
}

pub fn encode_row_description(fields: &[FieldDescription], out: &mut BytesMut) {
    let start = out.len();
    out.put_u8(Tag::ROW_DESCRIPTION.byte());
    out.put_i32(0);
    out.put_i16(fields.len() as i16);
    for f in fields {
        out.put_slice(&f.name);
        out.put_u8(0);
        out.put_i32(f.table_oid as i32);
        out.put_i16(f.column_attr);
        out.put_i32(f.type_oid as i32);
        out.put_i16(f.type_len);
        out.put_i32(f.type_mod);
        out.put_i16(f.format);
    }
    patch_len(out, start);
}

/// DataRow ('D'): the column values, None for NULL, as slices of `msg`.
pub fn decode_data_row(msg: &[u8]) -> Result<Vec<Option<&[u8]>>, WireError> {
    let mut r = BodyReader::new(body(msg), "DataRow");
    let n = r.i16()?;
    if n < 0 {
        return Err(WireError::Malformed { what: "DataRow" });
    }
    let mut cols = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.i32()?;
        if len == -1 {
            cols.push(None);
        } else if len < 0 {
            return Err(WireError::Malformed { what: "DataRow" });
        } else {
            cols.push(Some(r.bytes(len as usize)?));
        }
    }
    Ok(cols)
}

/// Starts a DataRow in `out`; finish it with [`finish_message`].
pub fn begin_data_row(out: &mut BytesMut, ncols: usize) -> usize {
    let start = out.len();
    out.put_u8(Tag::DATA_ROW.byte());
    out.put_i32(0);
    out.put_i16(ncols as i16);
    start
}

pub fn put_value(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => out.put_i32(-1),
        Some(v) => {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
    }
}

/// Patches the length word of the message that starts at `start`.
pub fn finish_message(out: &mut BytesMut, start: usize) {
    patch_len(out, start);
}

fn patch_len(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// ParameterDescription ('t').
pub fn decode_parameter_description(msg: &[u8]) -> Result<Vec<u32>, WireError> {
    let mut r = BodyReader::new(body(msg), "ParameterDescription");
    let n = r.i16()?;
    if n < 0 {
        return Err(WireError::Malformed {
            what: "ParameterDescription",
        });
    }
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        v.push(r.i32()? as u32);
    }
    Ok(v)
}

pub fn encode_parameter_description(types: &[u32], out: &mut BytesMut) {
    let start = out.len();
    out.put_u8(Tag::PARAMETER_DESCRIPTION.byte());
    out.put_i32(0);
    out.put_i16(types.len() as i16);
    for t in types {
        out.put_i32(*t as i32);
    }
    patch_len(out, start);
}

/// CopyInResponse/CopyOutResponse ('G'/'H'): overall format and per-column formats.
pub fn decode_copy_response(msg: &[u8]) -> Result<(i8, Vec<i16>), WireError> {
    let mut r = BodyReader::new(body(msg), "CopyResponse");
    let overall = r.u8()? as i8;
    let n = r.i16()?;
    if n < 0 {
        return Err(WireError::Malformed {
            what: "CopyResponse",
        });
    }
    let mut cols = Vec::with_capacity(n as usize);
    for _ in 0..n {
        cols.push(r.i16()?);
    }
    Ok((overall, cols))
}

/// The fields of an ErrorResponse or NoticeResponse, in order.
pub fn decode_error_fields(msg: &[u8]) -> Result<Vec<(u8, Bytes)>, WireError> {
    let mut r = BodyReader::new(body(msg), "ErrorResponse");
    let mut fields = Vec::new();
    loop {
        let code = r.u8()?;
        if code == 0 {
            return Ok(fields);
        }
        fields.push((code, Bytes::copy_from_slice(r.cstr()?)));
    }
}

/// ErrorResponse or NoticeResponse (`tag`) with `fields` in order.
pub fn encode_error_fields(tag: impl Into<Tag>, fields: &[(u8, Bytes)], out: &mut BytesMut) {
    let start = out.len();
    out.put_u8(tag.into().byte());
    out.put_i32(0);
    for (code, value) in fields {
        out.put_u8(*code);
        out.put_slice(value);
        out.put_u8(0);
    }
    out.put_u8(0);
    patch_len(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Oid;

    #[test]
    fn bind_round_trips_with_nulls_and_formats() {
        let b = Bind {
            portal: "p".into(),
            statement: "s".into(),
            param_formats: vec![1, 0],
            params: vec![Some(Bytes::from_static(b"\x00\x01")), None],
            result_formats: vec![1],
        };
        let enc = b.encode();
        assert_eq!(Bind::decode(&enc).unwrap(), b);
        assert_eq!(b.param_format(0), 1);
        assert_eq!(b.param_format(1), 0);
    }

    #[test]
    fn bind_formats_read_typed_and_invalid_codes_are_errors_but_forward_unchanged() {
        let b = Bind {
            portal: "".into(),
            statement: "s".into(),
            param_formats: vec![1, 2],
            params: vec![None, None],
            result_formats: vec![1],
        };
        assert_eq!(b.param_format_of(0).unwrap(), Format::Binary);
        assert!(matches!(
            b.param_format_of(1),
            Err(WireError::UnknownFormat { code: 2 })
        ));
        assert_eq!(b.result_format_of(5).unwrap(), Format::Binary);
        // The invalid code is PostgreSQL's to refuse: decode and encode keep it.
        let enc = b.encode();
        assert_eq!(enc[0], Tag::BIND.byte());
        assert_eq!(Bind::decode(&enc).unwrap(), b);
        let none = Bind {
            param_formats: vec![],
            result_formats: vec![],
            ..b
        };
        assert_eq!(none.param_format_of(1).unwrap(), Format::Text);
        assert_eq!(none.result_format_of(0).unwrap(), Format::Text);
    }

    #[test]
    fn targets_round_trip_through_close() {
        for t in [Target::Statement("s1".into()), Target::Portal("p1".into())] {
            let name = match &t {
                Target::Statement(n) | Target::Portal(n) => n.clone(),
            };
            let enc = encode_close(t.kind(), &name);
            assert_eq!(enc[0], Tag::CLOSE.byte());
            assert_eq!(decode_target(&enc, "Close").unwrap(), t);
        }
        let bad = encode_close(b'X', "x");
        assert!(decode_target(&bad, "Close").is_err());
    }

    #[test]
    fn parse_round_trips() {
        let p = Parse {
            name: "".into(),
            sql: b"select $1".to_vec(),
            param_types: vec![Oid::TEXT.get()],
        };
        assert_eq!(Parse::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn truncated_bind_is_malformed_not_a_panic() {
        let enc = Bind {
            portal: "".into(),
            statement: "".into(),
            param_formats: vec![],
            params: vec![Some(Bytes::from_static(b"abcdef"))],
            result_formats: vec![],
        }
        .encode();
        for cut in 5..enc.len() {
            assert!(Bind::decode(&enc[..cut]).is_err() || cut == enc.len());
        }
    }

    #[test]
    fn row_description_and_data_row_round_trip() {
        let f = FieldDescription {
            name: Bytes::from_static(b"phone"),
            table_oid: 1234,
            column_attr: 2,
            type_oid: Oid::BYTEA.get(),
            type_len: -1,
            type_mod: -1,
            format: 0,
        };
        let mut out = BytesMut::new();
        encode_row_description(std::slice::from_ref(&f), &mut out);
        assert_eq!(decode_row_description(&out).unwrap(), vec![f]);
        let mut row = BytesMut::new();
        let s = begin_data_row(&mut row, 2);
        put_value(&mut row, Some(b"x"));
        put_value(&mut row, None);
        finish_message(&mut row, s);
        assert_eq!(decode_data_row(&row).unwrap(), vec![Some(&b"x"[..]), None]);
    }
}
