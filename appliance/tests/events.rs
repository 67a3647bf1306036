//! What the host hands a packet module between packets — load reports from
//! the feedback API and the timers it armed — through the real sandbox and
//! dataplane decision (no NFQUEUE): the overload-control module sheds on a
//! report and stops when control ends; a timer fires as often as armed; a
//! timer that spins faults with no packet to blame and is quarantined.

mod common;

use common::{PHONE, SERVER, addr, module, udp};
use netserv_appliance::config::Limits;
use netserv_appliance::dataplane::events::EventBuffers;
use netserv_appliance::dataplane::{Buffers, Decision, WorkerModules, decide, packet};
use netserv_appliance::installed::ActiveModule;
use netserv_appliance::runtime::{IpAddress, LoadReport, OverloadAlgorithm, Runtime, SocketAddress};
use netserv_appliance::try_module::standalone;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn install(runtime: &Runtime, name: &str, props: &[(&str, &str)]) -> (Arc<ActiveModule>, WorkerModules) {
    let props: Vec<(String, String)> = props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    standalone(runtime, &module(name), &props, addr(SERVER), &Limits::default()).expect("installs")
}

fn invite(i: u32) -> Vec<u8> {
    udp(format!(
        "INVITE sip:bob@198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5061;branch=z9hG4bK-ev-{i};rport\r\n\
         From: <sip:alice@198.18.2.20>;tag=a{i}\r\nTo: <sip:bob@198.18.2.20>\r\nCall-ID: ev-{i}@198.18.1.10\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .as_bytes())
}

fn report(oc: u32, validity_ms: u32, seq: u64) -> LoadReport {
    LoadReport {
        server: SocketAddress { address: IpAddress::Ipv4((198, 18, 2, 20)), port: 5060 },
        algorithm: OverloadAlgorithm::Loss,
        oc,
        validity_ms,
        seq,
    }
}

fn counter(m: &ActiveModule, name: &str) -> u64 {
    m.counters.snapshot().into_iter().find(|(n, _)| n == name).map_or(0, |(_, v)| v)
}

#[test]
fn a_feedback_report_reaches_the_instance_and_control_ends_with_validity_zero() {
    let runtime = Runtime::new().expect("runtime");
    let (m, mut w) = install(&runtime, "netserv_overload_se", &[]);
    let mut out = Buffers::new();
    let mut events = EventBuffers::default();
    assert_eq!(decide(&mut w, &invite(1), false, &mut out), Decision::AcceptModified, "passed, with oc in its Via");
    let passed = packet::parse(&out.packet).expect("a packet");
    assert!(String::from_utf8_lossy(passed.payload).contains(";rport;oc;oc-algo=\"loss\"\r\n"));

    m.feedback.post(report(100, 5000, 1), Instant::now()).expect("posted");
    w.deliver_events(Instant::now(), &mut events);
    let d = decide(&mut w, &invite(2), false, &mut out);
    assert_eq!(d, Decision::Reply { to: addr(PHONE).ip() });
    let answer = packet::parse(&out.packet).expect("a packet");
    assert_eq!((answer.source, answer.destination), (addr(SERVER), addr(PHONE)), "sent as the server");
    let text = String::from_utf8_lossy(answer.payload);
    assert!(
        text.starts_with("SIP/2.0 503 Service Unavailable\r\n") && text.contains("Call-ID: ev-2@198.18.1.10"),
        "{text}"
    );

    m.feedback.post(report(0, 0, 2), Instant::now()).expect("posted");
    w.deliver_events(Instant::now(), &mut events);
    assert_eq!(decide(&mut w, &invite(3), false, &mut out), Decision::AcceptModified);
    assert_eq!(counter(&m, "reports_accepted"), 1);
    assert_eq!(counter(&m, "control_ended"), 1);
    assert_eq!((counter(&m, "admitted_initial"), counter(&m, "shed_initial")), (2, 1));
    assert_eq!(m.stats().faults, 0);
}

#[test]
fn a_timer_fires_as_often_as_it_is_armed() {
    let runtime = Runtime::new().expect("runtime");
    let (m, mut w) = install(&runtime, "netserv_fault_injector", &[("mode", "timers"), ("burst", "3")]);
    let mut events = EventBuffers::default();
    let start = Instant::now();
    while counter(&m, "timer_fired") < 3 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
        w.deliver_events(Instant::now(), &mut events);
    }
    assert_eq!(counter(&m, "timer_fired"), 3, "armed in init, re-armed twice");
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(5));
        w.deliver_events(Instant::now(), &mut events);
    }
    assert_eq!(counter(&m, "timer_fired"), 3, "one-shot: nothing more once it stops re-arming");
    assert_eq!(m.stats().faults, 0);
}

#[test]
fn a_spinning_timer_faults_and_is_quarantined_while_packets_pass() {
    let runtime = Runtime::new().expect("runtime");
    let (m, mut w) = install(&runtime, "netserv_fault_injector", &[("mode", "timer-spin")]);
    let mut events = EventBuffers::default();
    let mut out = Buffers::new();
    let start = Instant::now();
    while !m.is_quarantined() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(15));
        w.deliver_events(Instant::now(), &mut events);
        assert_eq!(decide(&mut w, &invite(1), false, &mut out), Decision::Accept, "packets pass meanwhile");
    }
    assert!(m.is_quarantined(), "{:?}", m.stats());
    assert!(m.stats().faults >= 5, "{:?}", m.stats());
    let reason = m.health.quarantine_reason.lock().clone().unwrap_or_default();
    assert!(reason.contains("faulted too often"), "{reason}");
}
