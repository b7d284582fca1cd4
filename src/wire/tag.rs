//! The message type byte, named: `Tag::QUERY` instead of `b'Q'`.
//!
//! One byte means different messages in the two directions (`'D'` is Describe from the
//! client and DataRow from the server), so each message has its own constant and the
//! direction is in the name of the lookup ([`Tag::frontend_name`], [`Tag::backend_name`]).
//! A `Tag` holds any byte: an unknown one is not an error here, the relay refuses it.
//! The constants are plain values with derived `PartialEq`/`Eq`, so they work as `match`
//! patterns.

use std::fmt;

/// A protocol message's type byte (the first byte of every message after startup).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u8);

impl Tag {
    // Frontend (client to server).
    /// Bind.
    pub const BIND: Tag = Tag(b'B');
    /// Close (a statement or a portal).
    pub const CLOSE: Tag = Tag(b'C');
    /// CopyData, in either direction.
    pub const COPY_DATA: Tag = Tag(b'd');
    /// CopyDone, in either direction.
    pub const COPY_DONE: Tag = Tag(b'c');
    /// CopyFail.
    pub const COPY_FAIL: Tag = Tag(b'f');
    /// Describe (a statement or a portal).
    pub const DESCRIBE: Tag = Tag(b'D');
    /// Execute.
    pub const EXECUTE: Tag = Tag(b'E');
    /// Flush.
    pub const FLUSH: Tag = Tag(b'H');
    /// FunctionCall (the legacy fast-path interface).
    pub const FUNCTION_CALL: Tag = Tag(b'F');
    /// Parse.
    pub const PARSE: Tag = Tag(b'P');
    /// PasswordMessage, and SASLInitialResponse / SASLResponse, which share its byte.
    pub const PASSWORD_MESSAGE: Tag = Tag(b'p');
    /// Query (the simple protocol).
    pub const QUERY: Tag = Tag(b'Q');
    /// Sync.
    pub const SYNC: Tag = Tag(b'S');
    /// Terminate.
    pub const TERMINATE: Tag = Tag(b'X');

    // Backend (server to client).
    /// AuthenticationOk and the other authentication requests.
    pub const AUTHENTICATION: Tag = Tag(b'R');
    /// BackendKeyData.
    pub const BACKEND_KEY_DATA: Tag = Tag(b'K');
    /// BindComplete.
    pub const BIND_COMPLETE: Tag = Tag(b'2');
    /// CloseComplete.
    pub const CLOSE_COMPLETE: Tag = Tag(b'3');
    /// CommandComplete.
    pub const COMMAND_COMPLETE: Tag = Tag(b'C');
    /// CopyBothResponse (replication only).
    pub const COPY_BOTH_RESPONSE: Tag = Tag(b'W');
    /// CopyInResponse.
    pub const COPY_IN_RESPONSE: Tag = Tag(b'G');
    /// CopyOutResponse.
    pub const COPY_OUT_RESPONSE: Tag = Tag(b'H');
    /// DataRow.
    pub const DATA_ROW: Tag = Tag(b'D');
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY_RESPONSE: Tag = Tag(b'I');
    /// ErrorResponse.
    pub const ERROR_RESPONSE: Tag = Tag(b'E');
    /// FunctionCallResponse.
    pub const FUNCTION_CALL_RESPONSE: Tag = Tag(b'V');
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: Tag = Tag(b'v');
    /// NoData.
    pub const NO_DATA: Tag = Tag(b'n');
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: Tag = Tag(b'N');
    /// NotificationResponse (LISTEN/NOTIFY).
    pub const NOTIFICATION_RESPONSE: Tag = Tag(b'A');
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: Tag = Tag(b't');
    /// ParameterStatus.
    pub const PARAMETER_STATUS: Tag = Tag(b'S');
    /// ParseComplete.
    pub const PARSE_COMPLETE: Tag = Tag(b'1');
    /// PortalSuspended.
    pub const PORTAL_SUSPENDED: Tag = Tag(b's');
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: Tag = Tag(b'Z');
    /// RowDescription.
    pub const ROW_DESCRIPTION: Tag = Tag(b'T');

    /// The byte as it travels on the wire.
    pub const fn byte(self) -> u8 {
        self.0
    }

    /// The name of the client message with this byte, if there is one.
    pub fn frontend_name(self) -> Option<&'static str> {
        Some(match self {
            Tag::BIND => "Bind",
            Tag::CLOSE => "Close",
            Tag::COPY_DATA => "CopyData",
            Tag::COPY_DONE => "CopyDone",
            Tag::COPY_FAIL => "CopyFail",
            Tag::DESCRIBE => "Describe",
            Tag::EXECUTE => "Execute",
            Tag::FLUSH => "Flush",
            Tag::FUNCTION_CALL => "FunctionCall",
            Tag::PARSE => "Parse",
            Tag::PASSWORD_MESSAGE => "PasswordMessage",
            Tag::QUERY => "Query",
            Tag::SYNC => "Sync",
            Tag::TERMINATE => "Terminate",
            _ => return None,
        })
    }

    /// The name of the server message with this byte, if there is one.
    pub fn backend_name(self) -> Option<&'static str> {
        Some(match self {
            Tag::AUTHENTICATION => "Authentication",
            Tag::BACKEND_KEY_DATA => "BackendKeyData",
            Tag::BIND_COMPLETE => "BindComplete",
            Tag::CLOSE_COMPLETE => "CloseComplete",
            Tag::COMMAND_COMPLETE => "CommandComplete",
            Tag::COPY_BOTH_RESPONSE => "CopyBothResponse",
            Tag::COPY_DATA => "CopyData",
            Tag::COPY_DONE => "CopyDone",
            Tag::COPY_IN_RESPONSE => "CopyInResponse",
            Tag::COPY_OUT_RESPONSE => "CopyOutResponse",
            Tag::DATA_ROW => "DataRow",
            Tag::EMPTY_QUERY_RESPONSE => "EmptyQueryResponse",
            Tag::ERROR_RESPONSE => "ErrorResponse",
            Tag::FUNCTION_CALL_RESPONSE => "FunctionCallResponse",
            Tag::NEGOTIATE_PROTOCOL_VERSION => "NegotiateProtocolVersion",
            Tag::NO_DATA => "NoData",
            Tag::NOTICE_RESPONSE => "NoticeResponse",
            Tag::NOTIFICATION_RESPONSE => "NotificationResponse",
            Tag::PARAMETER_DESCRIPTION => "ParameterDescription",
            Tag::PARAMETER_STATUS => "ParameterStatus",
            Tag::PARSE_COMPLETE => "ParseComplete",
            Tag::PORTAL_SUSPENDED => "PortalSuspended",
            Tag::READY_FOR_QUERY => "ReadyForQuery",
            Tag::ROW_DESCRIPTION => "RowDescription",
            _ => return None,
        })
    }
}

impl From<u8> for Tag {
    fn from(byte: u8) -> Tag {
        Tag(byte)
    }
}

impl From<Tag> for u8 {
    fn from(tag: Tag) -> u8 {
        tag.0
    }
}

/// The byte as a character (`'Q'`), or its code when it is not printable ASCII.
impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every constant, with its direction and protocol name, as the protocol documents it.
    const FRONTEND: &[(Tag, u8, &str)] = &[
        (Tag::BIND, b'B', "Bind"),
        (Tag::CLOSE, b'C', "Close"),
        (Tag::COPY_DATA, b'd', "CopyData"),
        (Tag::COPY_DONE, b'c', "CopyDone"),
        (Tag::COPY_FAIL, b'f', "CopyFail"),
        (Tag::DESCRIBE, b'D', "Describe"),
        (Tag::EXECUTE, b'E', "Execute"),
        (Tag::FLUSH, b'H', "Flush"),
        (Tag::FUNCTION_CALL, b'F', "FunctionCall"),
        (Tag::PARSE, b'P', "Parse"),
        (Tag::PASSWORD_MESSAGE, b'p', "PasswordMessage"),
        (Tag::QUERY, b'Q', "Query"),
        (Tag::SYNC, b'S', "Sync"),
        (Tag::TERMINATE, b'X', "Terminate"),
    ];
    const BACKEND: &[(Tag, u8, &str)] = &[
        (Tag::AUTHENTICATION, b'R', "Authentication"),
        (Tag::BACKEND_KEY_DATA, b'K', "BackendKeyData"),
        (Tag::BIND_COMPLETE, b'2', "BindComplete"),
        (Tag::CLOSE_COMPLETE, b'3', "CloseComplete"),
        (Tag::COMMAND_COMPLETE, b'C', "CommandComplete"),
        (Tag::COPY_BOTH_RESPONSE, b'W', "CopyBothResponse"),
        (Tag::COPY_DATA, b'd', "CopyData"),
        (Tag::COPY_DONE, b'c', "CopyDone"),
        (Tag::COPY_IN_RESPONSE, b'G', "CopyInResponse"),
        (Tag::COPY_OUT_RESPONSE, b'H', "CopyOutResponse"),
        (Tag::DATA_ROW, b'D', "DataRow"),
        (Tag::EMPTY_QUERY_RESPONSE, b'I', "EmptyQueryResponse"),
        (Tag::ERROR_RESPONSE, b'E', "ErrorResponse"),
        (Tag::FUNCTION_CALL_RESPONSE, b'V', "FunctionCallResponse"),
        (
            Tag::NEGOTIATE_PROTOCOL_VERSION,
            b'v',
            "NegotiateProtocolVersion",
        ),
        (Tag::NO_DATA, b'n', "NoData"),
        (Tag::NOTICE_RESPONSE, b'N', "NoticeResponse"),
        (Tag::NOTIFICATION_RESPONSE, b'A', "NotificationResponse"),
        (Tag::PARAMETER_DESCRIPTION, b't', "ParameterDescription"),
        (Tag::PARAMETER_STATUS, b'S', "ParameterStatus"),
        (Tag::PARSE_COMPLETE, b'1', "ParseComplete"),
        (Tag::PORTAL_SUSPENDED, b's', "PortalSuspended"),
        (Tag::READY_FOR_QUERY, b'Z', "ReadyForQuery"),
        (Tag::ROW_DESCRIPTION, b'T', "RowDescription"),
    ];

    #[test]
    fn each_constant_is_its_protocol_byte_and_name() {
        for &(tag, byte, name) in FRONTEND {
            assert_eq!(tag.byte(), byte, "{name}");
            assert_eq!(tag.frontend_name(), Some(name));
        }
        for &(tag, byte, name) in BACKEND {
            assert_eq!(tag.byte(), byte, "{name}");
            assert_eq!(tag.backend_name(), Some(name));
        }
    }

    #[test]
    fn the_name_depends_on_the_direction() {
        assert_eq!(Tag(b'D').frontend_name(), Some("Describe"));
        assert_eq!(Tag(b'D').backend_name(), Some("DataRow"));
        assert_eq!(Tag(b'S').frontend_name(), Some("Sync"));
        assert_eq!(Tag(b'S').backend_name(), Some("ParameterStatus"));
        assert_eq!(Tag(b'Z').frontend_name(), None);
        assert_eq!(Tag(b'Q').backend_name(), None);
    }

    #[test]
    fn every_byte_round_trips_and_unknown_ones_have_no_name() {
        let known: Vec<u8> = FRONTEND.iter().chain(BACKEND).map(|t| t.1).collect();
        for byte in 0..=u8::MAX {
            let tag = Tag::from(byte);
            assert_eq!(u8::from(tag), byte);
            let named = tag.frontend_name().is_some() || tag.backend_name().is_some();
            assert_eq!(named, known.contains(&byte), "{tag}");
        }
    }

    #[test]
    fn constants_work_as_match_patterns() {
        let kind = |t: Tag| match t {
            Tag::QUERY => "simple",
            Tag::PARSE | Tag::BIND | Tag::EXECUTE => "extended",
            _ => "other",
        };
        assert_eq!(kind(Tag(b'Q')), "simple");
        assert_eq!(kind(Tag(b'B')), "extended");
        assert_eq!(kind(Tag(b'z')), "other");
    }

    #[test]
    fn display_and_debug_show_the_character_or_the_code() {
        assert_eq!(Tag::QUERY.to_string(), "'Q'");
        assert_eq!(format!("{:?}", Tag::DATA_ROW), "Tag('D')");
        assert_eq!(Tag(0).to_string(), "0x00");
        assert_eq!(Tag(0xff).to_string(), "0xff");
    }
}
