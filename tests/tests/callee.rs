//! The testbed's callee (`fixtures/sipp/callee_uas.xml`, started by
//! `kamailio::start_callee` behind the server in the overload test, its
//! benchmark and the demo) behaves as a phone where sipp's built-in UAS does
//! not: an INVITE retransmitted after its 200 (what an overloaded proxy
//! sends when it reads the answer late) gets the 200 again and the call goes
//! on, so the caller's BYE is answered. Loopback only; needs sipp.

use netserv_tests::{Proc, paths};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn request(method: &str, cseq: u32, branch: &str, to_tag: &str, port: u16) -> Vec<u8> {
    format!(
        "{method} sip:uas@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-{branch}\r\n\
         From: <sip:caller@127.0.0.1>;tag=c1\r\nTo: <sip:uas@127.0.0.1>{to_tag}\r\nCall-ID: callee-test@127.0.0.1\r\n\
         CSeq: {cseq} {method}\r\nContact: <sip:caller@127.0.0.1>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The first lines of what arrives within `wait` (after the first datagram,
/// 300 ms more).
fn answers(s: &UdpSocket, wait: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(wait)).expect("timeout");
    while let Ok(n) = s.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        out.push(text.lines().next().unwrap_or_default().to_owned());
        s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    }
    out
}

#[test]
fn an_invite_retransmitted_after_the_200_gets_it_again_and_the_bye_is_answered() {
    let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free port").port();
    let scenario = paths::fixture("sipp/callee_uas.xml");
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1", "-nostdin"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (package sip-tester)");
    let _sipp = Proc(Some(child));
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(("127.0.0.1", port)).expect("connect");
    let invite = request("INVITE", 1, "inv", "", port);
    // sipp takes a moment to listen: the INVITE until it is answered.
    let start = Instant::now();
    let first = loop {
        let _ = s.send(&invite);
        let a = answers(&s, Duration::from_millis(300));
        if !a.is_empty() || start.elapsed() > Duration::from_secs(10) {
            break a;
        }
    };
    assert!(first.iter().any(|l| l.starts_with("SIP/2.0 200")), "the INVITE got {first:?}");
    // The proxy read the 200 late and retransmits its INVITE.
    s.send(&invite).expect("send");
    let again = answers(&s, Duration::from_secs(2));
    assert!(again.iter().any(|l| l.starts_with("SIP/2.0 200")), "the retransmitted INVITE got {again:?}");
    s.send(&request("ACK", 1, "ack", ";tag=x", port)).expect("send");
    std::thread::sleep(Duration::from_millis(100));
    s.send(&request("BYE", 2, "bye", ";tag=x", port)).expect("send");
    let bye = answers(&s, Duration::from_secs(2));
    assert!(bye.iter().any(|l| l.starts_with("SIP/2.0 200")), "the BYE got {bye:?}");
}
