//! Prints, as hex, the first datagrams an NFQUEUE delivers (accepting each
//! packet), to make the captured test vectors of `src/wire_tests.rs`:
//! `iptables -A OUTPUT -p udp --dport 9 -j NFQUEUE --queue-num 77` in a
//! scratch namespace, then `cargo run -p netserv-nfqueue --example capture -- 77 2`.

use netserv_nfqueue::socket::{QueueOptions, QueueSocket, RecvBatch};
use netserv_nfqueue::wire::{self, Event, Verdict};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let queue: u16 = args.get(1).map_or(Ok(77), |a| a.parse())?;
    let count: usize = args.get(2).map_or(Ok(1), |a| a.parse())?;
    let sock = QueueSocket::open(queue, QueueOptions::default())?;
    let mut batch = RecvBatch::new(1);
    let mut seen = 0;
    while seen < count {
        if sock.recv_batch(&mut batch, true)? == 0 {
            continue;
        }
        for d in batch.datagrams() {
            println!("{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>());
            let mut b = wire::Builder::default();
            for m in wire::messages(d).flatten() {
                if let Ok(Event::Packet(p)) = wire::event(&m) {
                    b.verdict(p.queue, p.id, Verdict::Accept, None);
                    seen += 1;
                }
            }
            sock.send(&b.buf)?;
        }
    }
    Ok(())
}
