//! RFC 4475 torture messages against the scanner. Policy (as str0m's
//! malformed-packet-injection): a panic here is a bug in the scanner, never bad input.

use netserv_sip_scan::{EMPTY_HEADER, parse_datagram};
use std::path::PathBuf;

fn corpus(name: &str) -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sip-rfc4475").join(format!("{name}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// RFC 4475 §3.1.1: valid messages.
const VALID: &[&str] = &[
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
];
/// RFC 4475 §3.1.2: invalid messages.
const INVALID: &[&str] = &[
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "mismatch01",
    "mismatch02",
    "bigcode",
];
/// RFC 4475 §3.2-3.4: syntactically valid; judged above the parser.
const ABOVE_PARSER: &[&str] = &[
    "badbranch",
    "insuf",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "multi01",
    "mcl01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
];

#[test]
fn every_corpus_file_is_classified() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sip-rfc4475");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".dat").map(str::to_owned))
        .collect();
    names.sort();
    for n in &names {
        let known = VALID.contains(&n.as_str()) || INVALID.contains(&n.as_str()) || ABOVE_PARSER.contains(&n.as_str());
        assert!(known, "{n}.dat is not classified by RFC section");
    }
    assert_eq!(names.len(), VALID.len() + INVALID.len() + ABOVE_PARSER.len(), "a classified file is missing");
}

#[test]
fn valid_messages_parse() {
    for name in VALID.iter().chain(ABOVE_PARSER) {
        let bytes = corpus(name);
        let mut headers = [EMPTY_HEADER; 64];
        if let Err(e) = parse_datagram(&bytes, &mut headers) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn invalid_messages_are_rejected() {
    for name in INVALID {
        let bytes = corpus(name);
        let mut headers = [EMPTY_HEADER; 64];
        match parse_datagram(&bytes, &mut headers) {
            Err(e) => eprintln!("{name}: rejected: {e}"),
            Ok(_) => panic!("{name}: RFC 4475 §3.1.2 message was accepted"),
        }
    }
}

#[test]
fn semantic_checks_flag_section_3_3_defects() {
    for name in ["insuf", "multi01", "mcl01"] {
        let bytes = corpus(name);
        let mut headers = [EMPTY_HEADER; 64];
        let msg = parse_datagram(&bytes, &mut headers).expect("parses");
        assert!(msg.check_semantics().is_err(), "{name} passed the semantic checks");
    }
    for name in VALID.iter().filter(|n| !["unreason", "noreason"].contains(n)) {
        let bytes = corpus(name);
        let mut headers = [EMPTY_HEADER; 64];
        let msg = parse_datagram(&bytes, &mut headers).expect("parses");
        if let Err(e) = msg.check_semantics() {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn every_truncation_and_byte_flip_is_handled_without_panic() {
    for name in VALID.iter().chain(INVALID).chain(ABOVE_PARSER) {
        let bytes = corpus(name);
        for cut in 0..bytes.len() {
            let mut headers = [EMPTY_HEADER; 16];
            let _ = parse_datagram(bytes.get(..cut).unwrap_or_default(), &mut headers);
        }
        for i in (0..bytes.len()).step_by(3) {
            let mut flipped = bytes.clone();
            if let Some(b) = flipped.get_mut(i) {
                *b ^= 0x5a;
            }
            let mut headers = [EMPTY_HEADER; 16];
            let _ = parse_datagram(&flipped, &mut headers);
        }
    }
}

/// RFC 3261 §7.3.1: a CR or LF in a header value is part of a fold (CRLF
/// then SP or HTAB) or the message is malformed — anywhere in the value,
/// its last bytes too (the long fuzz run found `;\r3` at the end of a folded
/// Via accepted, which a proxy rewriting the Via then turned into a message
/// nobody could parse).
#[test]
fn bare_cr_or_lf_in_a_folded_value_is_rejected_wherever_it_stands() {
    let msg = |via: &str| {
        format!(
            "OPTIONS sip:s@example.com SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@example.com>;tag=1\r\n\
             To: <sip:s@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let mut h = [EMPTY_HEADER; 16];
    let good = msg("SIP/2.0/UDP h.example.com\r\n  ;branch=z9hG4bK1");
    assert!(parse_datagram(good.as_bytes(), &mut h).is_ok(), "a fold");
    for bad in [
        "SIP/2.0/UDP h.example.com\r\n  ;branch=z9hG4bK1;\r3",
        "SIP/2.0/UDP h.example.com\r\n  ;branch=z9hG4bK1\r",
        "SIP/2.0/UDP h.example.com\r\n  ;branch=z9hG4bK\n1",
        "SIP/2.0/UDP h.example.com\r\n  ;branch=z9hG4bK1\n ",
        "SIP/2.0/UDP\r h.example.com\r\n  ;branch=z9hG4bK1",
    ] {
        let m = msg(bad);
        let mut h = [EMPTY_HEADER; 16];
        assert!(parse_datagram(m.as_bytes(), &mut h).is_err(), "{bad:?}");
    }
}
