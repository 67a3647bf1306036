//! Header fields: names (long and compact forms, RFC 3261 §7.3.3 and the IANA
//! registry) and borrowed values.

/// A header field as framed: `name` is exactly as sent, `value` runs from the
/// first non-blank byte after the colon to the end of the last continuation
/// line, folds (`CRLF 1*WSP`) included. Use [`crate::unfold`] to emit it on one
/// line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// The name, classified once while framing (lookups then cost nothing).
    pub kind: Option<HeaderName>,
}

/// An empty slot for the caller's header array.
pub const EMPTY_HEADER: Header<'static> = Header { name: b"", value: b"", kind: None };

impl Header<'_> {
    pub fn known(&self) -> Option<HeaderName> {
        self.kind
    }
}

/// The header fields this crate knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    ContentLength,
    ContentType,
    MaxForwards,
    Event,
    Route,
    RecordRoute,
    Date,
    Expires,
    Supported,
    Subject,
    Allow,
    Accept,
    UserAgent,
    Server,
    ReferTo,
}

impl HeaderName {
    /// Matches long and compact names, ASCII case-insensitively.
    pub fn from_bytes(name: &[u8]) -> Option<Self> {
        use HeaderName::*;
        // Compact forms (RFC 3261 §7.3.3, RFC 3265 `o`, RFC 3515 `r`).
        if let [c] = name {
            return match c.to_ascii_lowercase() {
                b'v' => Some(Via),
                b'f' => Some(From),
                b't' => Some(To),
                b'i' => Some(CallId),
                b'm' => Some(Contact),
                b'l' => Some(ContentLength),
                b'c' => Some(ContentType),
                b'o' => Some(Event),
                b'k' => Some(Supported),
                b's' => Some(Subject),
                b'r' => Some(ReferTo),
                _ => None,
            };
        }
        const LONG: &[(&[u8], HeaderName)] = &[
            (b"via", Via),
            (b"from", From),
            (b"to", To),
            (b"call-id", CallId),
            (b"cseq", CSeq),
            (b"contact", Contact),
            (b"content-length", ContentLength),
            (b"content-type", ContentType),
            (b"max-forwards", MaxForwards),
            (b"event", Event),
            (b"route", Route),
            (b"record-route", RecordRoute),
            (b"date", Date),
            (b"expires", Expires),
            (b"supported", Supported),
            (b"subject", Subject),
            (b"allow", Allow),
            (b"accept", Accept),
            (b"user-agent", UserAgent),
            (b"server", Server),
            (b"refer-to", ReferTo),
        ];
        // Compare only names of the same length.
        LONG.iter()
            .filter(|(long, _)| long.len() == name.len())
            .find(|(long, _)| long.eq_ignore_ascii_case(name))
            .map(|&(_, h)| h)
    }

    /// The canonical long form, for error messages and for emitting.
    pub fn as_str(self) -> &'static str {
        use HeaderName::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            Contact => "Contact",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            MaxForwards => "Max-Forwards",
            Event => "Event",
            Route => "Route",
            RecordRoute => "Record-Route",
            Date => "Date",
            Expires => "Expires",
            Supported => "Supported",
            Subject => "Subject",
            Allow => "Allow",
            Accept => "Accept",
            UserAgent => "User-Agent",
            Server => "Server",
            ReferTo => "Refer-To",
        }
    }
}
