//! Fuzz target: wire framing (`split_frame` over a byte stream, as the session reads it)
//! and the startup-phase parser, plus every typed decoder applied to each frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgcloak::wire::extended::{
    decode_copy_response, decode_data_row, decode_error_fields, decode_execute,
    decode_parameter_description, decode_query, decode_row_description, decode_target, Bind,
    Parse,
};
use pgcloak::wire::messages::{
    decode_backend_key_data, decode_parameter_status, error_code, AuthRequest,
};
use pgcloak::wire::startup::parse_startup_body;
use pgcloak::wire::split_frame;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // A startup packet body (what follows the length word).
        if let Ok(p) = parse_startup_body(rest) {
            let _ = format!("{p:?}");
        }
        return;
    }
    // A stream, delivered in chunks as reads would deliver it.
    let chunk = (mode as usize >> 1).max(1);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match split_frame(&mut buf, 1 << 16) {
                Ok(Some(frame)) => {
                    let m = frame.as_bytes();
                    let len = u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize;
                    assert_eq!(len + 1, m.len(), "a frame's length word disagrees with it");
                    let _ = decode_query(m);
                    let _ = Parse::decode(m).map(|p| p.encode());
                    let _ = Bind::decode(m).map(|b| b.encode());
                    let _ = decode_target(m, "describe");
                    let _ = decode_execute(m);
                    let _ = decode_row_description(m);
                    let _ = decode_data_row(m);
                    let _ = decode_parameter_description(m);
                    let _ = decode_copy_response(m);
                    let _ = decode_error_fields(m);
                    let _ = AuthRequest::decode(&frame).map(|a| a.encode());
                    let _ = decode_backend_key_data(&frame);
                    let _ = decode_parameter_status(&frame);
                    let _ = error_code(&frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
