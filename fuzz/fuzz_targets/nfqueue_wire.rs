//! The NFQUEUE netlink codec on arbitrary bytes (what a receive returns):
//! never panics; every packet it yields borrows inside the datagram; a
//! verdict built for a parsed packet parses back with the same id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_nfqueue::wire::{self, Event, Verdict};

fuzz_target!(|data: &[u8]| {
    for m in wire::messages(data).flatten() {
        let _ = wire::packet_id(&m);
        if let Ok(Event::Packet(p)) = wire::event(&m) {
            let range = data.as_ptr_range();
            assert!(p.payload.is_empty() || range.contains(&p.payload.as_ptr()));
            let _ = (p.is_complete(), p.is_gso());
            let mut b = wire::Builder::default();
            b.verdict(p.queue, p.id, Verdict::Accept, Some(p.payload));
            let back = wire::messages(&b.buf).next().and_then(Result::ok).expect("own encoding parses");
            assert_eq!(back.body.get(2..4), Some(&p.queue.to_be_bytes()[..]));
        }
    }
});
