//! An object's body as it arrives from the origin: every client of the
//! object — the one that missed, those coalesced behind it, and later hits
//! while it is still filling — reads the same bytes, from the offset it
//! needs, as soon as they are in.

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use parking_lot::Mutex;
use std::io;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Filling,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    len: u64,
    end: End,
}

#[derive(Debug)]
pub struct Fill {
    /// Chunks in arrival order, each with its offset.
    chunks: Mutex<Vec<(u64, Bytes)>>,
    progress: watch::Sender<Progress>,
    /// The whole body once done: hits then clone one `Bytes`.
    complete: OnceLock<Bytes>,
    /// The origin's `Content-Length`, when it sent one.
    expected: Option<u64>,
}

impl Fill {
    pub fn new(expected: Option<u64>) -> Arc<Self> {
        let (progress, _) = watch::channel(Progress { len: 0, end: End::Filling });
        Arc::new(Self { chunks: Mutex::new(Vec::new()), progress, complete: OnceLock::new(), expected })
    }

    /// A body already whole.
    pub fn done(body: Bytes) -> Arc<Self> {
        let fill = Self::new(Some(body.len() as u64));
        fill.push(body);
        fill.finish();
        fill
    }

    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let mut chunks = self.chunks.lock();
        let len = self.progress.borrow().len;
        let n = chunk.len() as u64;
        chunks.push((len, chunk));
        drop(chunks);
        self.progress.send_modify(|p| p.len = len + n);
    }

    /// The origin's body ended: joins it into one `Bytes` and wakes every reader.
    ///
    /// Always a copy of exactly the body's size: a chunk from the client is
    /// a slice of its read buffer, and keeping the slice would keep the whole
    /// buffer — resident memory the store's budget does not see.
    pub fn finish(&self) {
        let mut chunks = self.chunks.lock();
        let whole = match chunks.as_slice() {
            [] => Bytes::new(),
            [(_, one)] => Bytes::copy_from_slice(one),
            many => {
                let mut b = BytesMut::with_capacity(many.iter().map(|(_, c)| c.len()).sum());
                for (_, c) in many {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        };
        chunks.clear();
        chunks.push((0, whole.clone()));
        let _ = self.complete.set(whole);
        drop(chunks);
        self.progress.send_modify(|p| p.end = End::Done);
    }

    /// The origin's body broke off: readers past what arrived get an error.
    pub fn fail(&self) {
        self.progress.send_modify(|p| p.end = End::Failed);
    }

    pub fn end(&self) -> End {
        self.progress.borrow().end
    }

    /// The received length so far.
    pub fn received(&self) -> u64 {
        self.progress.borrow().len
    }

    /// The whole body, once done.
    pub fn complete(&self) -> Option<&Bytes> {
        self.complete.get()
    }

    /// The body's length if known yet: done, or announced by the origin.
    pub fn known_len(&self) -> Option<u64> {
        self.complete.get().map(|b| b.len() as u64).or(self.expected)
    }

    /// Waits until the body is done; its length, or `None` if it failed.
    pub async fn wait_done(&self) -> Option<u64> {
        let mut rx = self.progress.subscribe();
        let p = rx.wait_for(|p| p.end != End::Filling).await.ok()?;
        (p.end == End::Done).then_some(p.len)
    }

    /// Bytes `[start, end)` (to the body's end if `None`), as they arrive.
    pub fn reader(self: &Arc<Self>, start: u64, end: Option<u64>) -> impl Stream<Item = io::Result<Bytes>> + use<> {
        let state = (Arc::clone(self), self.progress.subscribe(), start);
        futures_util::stream::unfold(Some(state), move |state| async move {
            let (fill, mut rx, pos) = state?;
            loop {
                let p = *rx.borrow_and_update();
                let stop = end.map_or(p.len, |e| e.min(p.len));
                if pos < stop {
                    let piece = fill.slice(pos, stop);
                    let next = pos + piece.len() as u64;
                    return Some((Ok(piece), Some((fill, rx, next))));
                }
                if end.is_some_and(|e| pos >= e) || p.end == End::Done {
                    return None;
                }
                if p.end == End::Failed || rx.changed().await.is_err() {
                    return Some((Err(io::Error::other("the origin's body broke off")), None));
                }
            }
        })
    }

    /// The bytes from `pos`, up to `stop`, within one chunk.
    fn slice(&self, pos: u64, stop: u64) -> Bytes {
        let chunks = self.chunks.lock();
        let i = chunks.partition_point(|(off, _)| *off <= pos).saturating_sub(1);
        let Some((off, chunk)) = chunks.get(i) else { return Bytes::new() };
        let from = (pos - off) as usize;
        let to = ((stop - off) as usize).min(chunk.len());
        chunk.slice(from..to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(s: impl Stream<Item = io::Result<Bytes>>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        futures_util::pin_mut!(s);
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn readers_follow_the_fill_from_any_offset() {
        let fill = Fill::new(Some(10));
        let whole = tokio::spawn(collect(fill.reader(0, None)));
        let mid = tokio::spawn(collect(fill.reader(3, Some(8))));
        for part in [&b"0123"[..], b"45", b"6789"] {
            tokio::task::yield_now().await;
            fill.push(Bytes::copy_from_slice(part));
        }
        fill.finish();
        assert_eq!(whole.await.unwrap().unwrap(), b"0123456789");
        assert_eq!(mid.await.unwrap().unwrap(), b"34567");
        assert_eq!(collect(fill.reader(9, None)).await.unwrap(), b"9");
        assert_eq!(fill.complete().unwrap(), &b"0123456789"[..]);
        assert_eq!(fill.wait_done().await, Some(10));
    }

    #[tokio::test]
    async fn a_broken_fill_errors_readers_past_what_arrived() {
        let fill = Fill::new(None);
        fill.push(Bytes::from_static(b"abc"));
        let r = tokio::spawn(collect(fill.reader(0, None)));
        tokio::task::yield_now().await;
        fill.fail();
        assert!(r.await.unwrap().is_err());
        assert_eq!(collect(fill.reader(0, Some(2))).await.unwrap(), b"ab", "bytes in hand still serve");
        assert_eq!(fill.wait_done().await, None);
    }
}
