//! One-dimensional arrays for `= ANY($n)` parameters on encrypted columns:
//! decode the client's array, encode a bytea[] of envelopes for upstream.

use crate::codec::SessionContext;
use crate::wire::Oid;

/// Decodes a one-dimensional binary array into its elements.
pub(super) fn decode_binary_array(v: &[u8]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let mut r = Cursor(v);
    let ndim = r.i32()?;
    let _flags = r.i32()?;
    let _element_type = r.i32()?;
    if ndim == 0 {
        return Ok(Vec::new());
    }
    if ndim != 1 {
        return Err("only one-dimensional arrays are supported".into());
    }
    let n = r.i32()?;
    let _lower_bound = r.i32()?;
    if !(0..=1_000_000).contains(&n) {
        return Err("bad element count".into());
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.i32()?;
        if len == -1 {
            out.push(None);
        } else if len < 0 {
            return Err("bad element length".into());
        } else {
            out.push(Some(r.take(len as usize)?.to_vec()));
        }
    }
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(out)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes a one-dimensional text array literal (`{a,"b c",NULL}`), elements as
/// bytes in the client's encoding.
pub(super) fn decode_text_array(
    v: &[u8],
    _ctx: &SessionContext,
) -> Result<Vec<Option<Vec<u8>>>, String> {
    let s = v;
    let inner = s
        .strip_prefix(b"{")
        .and_then(|x| x.strip_suffix(b"}"))
        .ok_or("array literal must be enclosed in braces")?;
    let mut out = Vec::new();
    if inner.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(out);
    }
    let mut i = 0;
    loop {
        while i < inner.len() && inner[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut elem = Vec::new();
        let mut quoted = false;
        if inner.get(i) == Some(&b'"') {
            quoted = true;
            i += 1;
            loop {
                match inner.get(i) {
                    None => return Err("unterminated quoted element".into()),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let c = *inner.get(i + 1).ok_or("dangling backslash")?;
                        elem.push(c);
                        i += 2;
                    }
                    Some(&c) => {
                        elem.push(c);
                        i += 1;
                    }
                }
            }
            while i < inner.len() && inner[i].is_ascii_whitespace() {
                i += 1;
            }
        } else {
            while i < inner.len() && inner[i] != b',' {
                if inner[i] == b'{' || inner[i] == b'"' {
                    return Err("only one-dimensional arrays are supported".into());
                }
                if inner[i] == b'\\' {
                    let c = *inner.get(i + 1).ok_or("dangling backslash")?;
                    elem.push(c);
                    i += 2;
                    continue;
                }
                elem.push(inner[i]);
                i += 1;
            }
            while elem.last().is_some_and(|b| b.is_ascii_whitespace()) {
                elem.pop();
            }
        }
        if !quoted && elem.eq_ignore_ascii_case(b"NULL") {
            out.push(None);
        } else {
            out.push(Some(elem));
        }
        match inner.get(i) {
            None => return Ok(out),
            Some(b',') => i += 1,
            Some(_) => return Err("unexpected character after element".into()),
        }
    }
}

/// Encodes a one-dimensional binary bytea[].
pub(super) fn encode_binary_bytea_array(elems: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        20 + elems
            .iter()
            .map(|e| 4 + e.as_ref().map_or(0, Vec::len))
            .sum::<usize>(),
    );
    let has_null = elems.iter().any(Option::is_none);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&Oid::BYTEA.0.to_be_bytes());
    out.extend_from_slice(&(elems.len() as i32).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    for e in elems {
        match e {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_array_round_trips() {
        let elems = vec![Some(b"a".to_vec()), None, Some(b"xyz".to_vec())];
        let enc = encode_binary_bytea_array(&elems);
        assert_eq!(decode_binary_array(&enc).unwrap(), elems);
        for cut in 0..enc.len() {
            let _ = decode_binary_array(&enc[..cut]);
        }
    }

    #[test]
    fn text_array_handles_quotes_and_nulls() {
        let ctx = SessionContext::default();
        let got = decode_text_array(br#"{a, "b,c" ,NULL,"NULL",d\,e}"#, &ctx).unwrap();
        assert_eq!(
            got,
            vec![
                Some(b"a".to_vec()),
                Some(b"b,c".to_vec()),
                None,
                Some(b"NULL".to_vec()),
                Some(b"d,e".to_vec())
            ]
        );
        assert_eq!(decode_text_array(b"{}", &ctx).unwrap(), vec![]);
        assert!(decode_text_array(b"{{1}}", &ctx).is_err());
        assert!(decode_text_array(b"a,b", &ctx).is_err());
    }
}
