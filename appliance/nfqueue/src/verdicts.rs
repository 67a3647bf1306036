//! Verdicts for a batch of packets, planned as runs: consecutive packets with
//! the same plain verdict become one `NFQNL_MSG_VERDICT_BATCH` (the kernel
//! applies it to every packet of the queue up to the run's last id), flushed
//! before any different verdict so the order of ids is kept. A packet with a
//! new payload gets its own `NFQNL_MSG_VERDICT`. All of it lands in one
//! buffer, sent with one `send` (the kernel walks every message in it).
//!
//! Pure: the caller sends what [`Verdicts::finish`] returns.

use crate::wire::{Builder, Verdict};

#[derive(Debug)]
pub struct Verdicts {
    queue: u16,
    /// The open run: its verdict, last id, and length.
    run: Option<(Verdict, u32, u32)>,
    out: Builder,
    /// Netlink messages written since the last clear.
    pub messages: u32,
}

impl Verdicts {
    pub fn new(queue: u16) -> Self {
        Self { queue, run: None, out: Builder::with_capacity(4096), messages: 0 }
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// A plain verdict for packet `id` (ids must increase).
    pub fn push(&mut self, id: u32, verdict: Verdict) {
        match &mut self.run {
            Some((v, last, n)) if *v == verdict => {
                *last = id;
                *n += 1;
            }
            _ => {
                self.flush_run();
                self.run = Some((verdict, id, 1));
            }
        }
    }

    /// Accept packet `id` with `payload` (a whole IP packet) in place of the original.
    pub fn push_modified(&mut self, id: u32, payload: &[u8]) {
        self.flush_run();
        // Too large for one attribute: the original is accepted instead.
        let _ = self.out.verdict(self.queue, id, Verdict::Accept, Some(payload));
        self.messages += 1;
    }

    fn flush_run(&mut self) {
        match self.run.take() {
            // A run of one is a plain verdict: the batch form would walk the
            // queue's list for the same result.
            Some((v, id, 1)) => {
                self.out.verdict(self.queue, id, v, None);
            }
            Some((v, last, _)) => self.out.verdict_batch(self.queue, last, v),
            None => return,
        }
        self.messages += 1;
    }

    /// Closes the open run; the bytes to send.
    pub fn finish(&mut self) -> &[u8] {
        self.flush_run();
        &self.out.buf
    }

    pub fn is_empty(&self) -> bool {
        self.run.is_none() && self.out.is_empty()
    }

    /// Bytes written so far (the open run not counted).
    pub fn len_bytes(&self) -> usize {
        self.out.buf.len()
    }

    pub fn clear(&mut self) {
        self.run = None;
        self.out.clear();
        self.messages = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, NFGEN_HDRLEN, msg};

    /// (type, id, verdict, has payload) of each message written.
    fn decode(bytes: &[u8]) -> Vec<(u16, u32, u32, bool)> {
        wire::messages(bytes)
            .map(|m| {
                let m = m.expect("well-formed");
                let mut id = 0;
                let mut verdict = 0;
                let mut payload = false;
                for a in wire::attrs(m.body.get(NFGEN_HDRLEN..).expect("nfgenmsg")) {
                    let (kind, v) = a.expect("attribute");
                    match kind {
                        wire::attr::VERDICT_HDR => {
                            verdict = u32::from_be_bytes(v[..4].try_into().expect("4"));
                            id = u32::from_be_bytes(v[4..8].try_into().expect("4"));
                        }
                        wire::attr::PAYLOAD => payload = true,
                        _ => {}
                    }
                }
                (m.kind & 0xff, id, verdict, payload)
            })
            .collect()
    }

    #[test]
    fn runs_of_equal_verdicts_become_one_batch_each() {
        let mut v = Verdicts::new(270);
        for id in 1..=5 {
            v.push(id, Verdict::Accept);
        }
        v.push(6, Verdict::Drop);
        v.push(7, Verdict::Drop);
        v.push(8, Verdict::Accept);
        let got = decode(v.finish());
        assert_eq!(
            got,
            vec![(msg::VERDICT_BATCH, 5, 1, false), (msg::VERDICT_BATCH, 7, 0, false), (msg::VERDICT, 8, 1, false)]
        );
        assert_eq!(v.messages, 3);
    }

    #[test]
    fn a_modified_packet_closes_the_run_and_keeps_id_order() {
        let mut v = Verdicts::new(7);
        v.push(10, Verdict::Accept);
        v.push(11, Verdict::Accept);
        v.push_modified(12, b"new packet");
        v.push(13, Verdict::Accept);
        let got = decode(v.finish());
        assert_eq!(
            got,
            vec![(msg::VERDICT_BATCH, 11, 1, false), (msg::VERDICT, 12, 1, true), (msg::VERDICT, 13, 1, false)]
        );
    }

    #[test]
    fn clear_keeps_nothing_and_reuses_the_buffer() {
        let mut v = Verdicts::new(1);
        v.push(1, Verdict::Drop);
        assert!(!v.finish().is_empty());
        let cap = v.out.buf.capacity();
        v.clear();
        assert!(v.is_empty());
        assert!(v.finish().is_empty());
        assert_eq!(v.out.buf.capacity(), cap);
    }
}
