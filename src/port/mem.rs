//! An in-memory port for tests, benches and fuzzing: no kernel, no file descriptors.
//!
//! Three modes:
//! - **queue** ([`MemPort::new`]): frames given to [`MemPort::inject`] are received in order;
//!   transmitted frames are copied out and collected for [`MemPort::take_output`]. This is the
//!   OVS "dummy port" of the in-memory integration tests.
//! - **replay** ([`MemPort::replay`]): `rx_burst` hands out `count` copies of one template frame.
//!   For benches: a frame is filled with the whole template the first time its chunk is used by
//!   this port; after that only the first [`REPLAY_REWRITE`] bytes (the headers the pipeline may
//!   have rewritten) are copied again, so the cost per frame does not grow with the frame size.
//! - **sink** ([`MemPort::sink`]): `tx_burst` counts and frees, without copying.
//!
//! Replay and sink ports allocate nothing per frame, so replay -> switch -> sink measures the
//! datapath alone. A replay port's `tx_burst` behaves like a sink.
//!
//! The replay shortcut assumes nobody but this port writes past the first [`REPLAY_REWRITE`]
//! data bytes of a chunk it filled once: true for replay -> pipeline -> sink. When other ports
//! receive into the same pool (a TAP port, a queue port, a second replay port with another
//! template), call [`MemPort::set_replay_full_copy`].

use std::collections::VecDeque;
use std::os::fd::RawFd;

use super::{Port, PortKind, TxResult};
use crate::packet::{Desc, FRAME_SIZE, Frames, MAX_FRAME_LEN};

/// Bytes of the template a replay port copies into a frame it has filled before: covers the
/// outer Ethernet+VLAN+IPv4+UDP+VXLAN headers and the inner Ethernet+IPv4+TCP headers (the
/// bytes a pipeline stage may rewrite in place).
pub const REPLAY_REWRITE: usize = 128;

/// Default MTU of a mem port.
pub const DEFAULT_MTU: u32 = 1500;

enum Mode {
    /// Receive injected frames, collect transmitted ones.
    Queue {
        rx: VecDeque<Vec<u8>>,
        out: Vec<Vec<u8>>,
    },
    /// Receive `remaining` copies of `template` (of the templates in turn); transmit like a
    /// sink.
    Replay {
        template: Box<[u8]>,
        /// Further templates (`replay_cycle`): frame `i` is `[template, others..][i % (1 + n)]`.
        others: Vec<Box<[u8]>>,
        next: usize,
        remaining: u64,
        /// One bit per chunk of the pool: set once this port has written the whole template
        /// into that chunk.
        filled: Vec<u64>,
        /// Bytes rewritten into an already filled chunk (`REPLAY_REWRITE`, or the whole template).
        rewrite: usize,
    },
    /// Receive nothing; count and free transmitted frames.
    Sink,
}

/// An in-memory port. See the module documentation.
pub struct MemPort {
    port_id: u16,
    mode: Mode,
    mtu: u32,
    partial_csum_in: bool,
    rx_count: u64,
    rx_bytes: u64,
    tx_count: u64,
    tx_bytes: u64,
}

impl MemPort {
    fn with_mode(port_id: u16, mode: Mode) -> MemPort {
        MemPort {
            port_id,
            mode,
            mtu: DEFAULT_MTU,
            partial_csum_in: false,
            rx_count: 0,
            rx_bytes: 0,
            tx_count: 0,
            tx_bytes: 0,
        }
    }

    /// A queue port: receives what [`inject`](Self::inject) queued, collects what it transmits.
    pub fn new(port_id: u16) -> MemPort {
        MemPort::with_mode(
            port_id,
            Mode::Queue {
                rx: VecDeque::new(),
                out: Vec::new(),
            },
        )
    }

    /// A replay port: receives `count` frames equal to `template`, then nothing.
    ///
    /// Panics if the template is longer than [`MAX_FRAME_LEN`].
    pub fn replay(port_id: u16, template: &[u8], count: u64) -> MemPort {
        assert!(
            template.len() <= MAX_FRAME_LEN,
            "replay template of {} bytes exceeds {MAX_FRAME_LEN}",
            template.len()
        );
        MemPort::with_mode(
            port_id,
            Mode::Replay {
                template: template.into(),
                others: Vec::new(),
                next: 0,
                remaining: count,
                filled: Vec::new(),
                rewrite: REPLAY_REWRITE,
            },
        )
    }

    /// A replay port that receives `count` frames cycling through `templates` (for benches
    /// where consecutive frames differ, e.g. go to other destinations). The templates must
    /// have one length; when they differ beyond the first [`REPLAY_REWRITE`] bytes every frame
    /// is copied whole.
    ///
    /// Panics if `templates` is empty, their lengths differ, or one exceeds [`MAX_FRAME_LEN`].
    pub fn replay_cycle(port_id: u16, templates: &[Vec<u8>], count: u64) -> MemPort {
        let (first, rest) = templates.split_first().expect("at least one template");
        assert!(
            rest.iter().all(|t| t.len() == first.len()),
            "replay templates of different lengths"
        );
        let mut p = MemPort::replay(port_id, first, count);
        let full = rest
            .iter()
            .any(|t| t.get(REPLAY_REWRITE..) != first.get(REPLAY_REWRITE..));
        if let Mode::Replay { others, .. } = &mut p.mode {
            *others = rest.iter().map(|t| t[..].into()).collect();
        }
        p.set_replay_full_copy(full);
        p
    }

    /// A sink port: transmitted frames are counted and freed.
    pub fn sink(port_id: u16) -> MemPort {
        MemPort::with_mode(port_id, Mode::Sink)
    }

    /// The id given at creation.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// Set the MTU reported by [`Port::mtu`].
    pub fn set_mtu(&mut self, mtu: u32) {
        self.mtu = mtu;
    }

    /// Set what [`Port::partial_csum_in`] reports (to test checksum completion).
    pub fn set_partial_csum_in(&mut self, on: bool) {
        self.partial_csum_in = on;
    }

    /// Replay ports only: copy the whole template into every frame, not only the first
    /// [`REPLAY_REWRITE`] bytes (for a pipeline that rewrites bytes further in).
    pub fn set_replay_full_copy(&mut self, full: bool) {
        if let Mode::Replay {
            template, rewrite, ..
        } = &mut self.mode
        {
            *rewrite = if full { template.len() } else { REPLAY_REWRITE };
        }
    }

    /// Queue a frame to be received. Frames longer than [`MAX_FRAME_LEN`] are truncated to it,
    /// as a TAP read into one frame would. Ignored by replay and sink ports.
    pub fn inject(&mut self, bytes: &[u8]) {
        if let Mode::Queue { rx, .. } = &mut self.mode {
            rx.push_back(bytes[..bytes.len().min(MAX_FRAME_LEN)].to_vec());
        }
    }

    /// Frames still queued for reception (queue mode), or replays left (replay mode).
    pub fn rx_pending(&self) -> u64 {
        match &self.mode {
            Mode::Queue { rx, .. } => rx.len() as u64,
            Mode::Replay { remaining, .. } => *remaining,
            Mode::Sink => 0,
        }
    }

    /// Take the frames transmitted so far (queue mode; empty otherwise).
    pub fn take_output(&mut self) -> Vec<Vec<u8>> {
        match &mut self.mode {
            Mode::Queue { out, .. } => std::mem::take(out),
            _ => Vec::new(),
        }
    }

    /// Frames received so far.
    pub fn rx_count(&self) -> u64 {
        self.rx_count
    }

    /// Bytes received so far.
    pub fn rx_bytes(&self) -> u64 {
        self.rx_bytes
    }

    /// Frames transmitted so far.
    pub fn tx_count(&self) -> u64 {
        self.tx_count
    }

    /// Bytes transmitted so far.
    pub fn tx_bytes(&self) -> u64 {
        self.tx_bytes
    }
}

/// Write one replayed frame into the chunk of `d`; returns its length.
#[inline]
fn fill_replay(
    frames: &mut Frames,
    d: Desc,
    template: &[u8],
    filled: &mut Vec<u64>,
    rewrite: usize,
) -> u32 {
    let chunk = d.chunk();
    let idx = (chunk / FRAME_SIZE as u64) as usize;
    let (word, bit) = (idx / 64, 1u64 << (idx % 64));
    if word >= filled.len() {
        // Once per pool size, not per frame.
        filled.resize(frames.capacity().div_ceil(64).max(word + 1), 0);
    }
    let n = if filled[word] & bit == 0 {
        filled[word] |= bit;
        template.len()
    } else {
        rewrite.min(template.len())
    };
    let start = (d.addr - chunk) as usize;
    let dst = &mut frames.chunk_mut(chunk)[start..start + n];
    if n == REPLAY_REWRITE {
        // Fixed size: compiled to a few vector moves instead of a memcpy call.
        let dst: &mut [u8; REPLAY_REWRITE] = dst.try_into().expect("REPLAY_REWRITE bytes");
        *dst = template[..REPLAY_REWRITE]
            .try_into()
            .expect("REPLAY_REWRITE bytes");
    } else {
        dst.copy_from_slice(&template[..n]);
    }
    template.len() as u32
}

impl Port for MemPort {
    fn kind(&self) -> PortKind {
        PortKind::Mem
    }

    fn rx_burst(&mut self, frames: &mut Frames, out: &mut Vec<Desc>, max: usize) -> usize {
        let mut n = 0;
        match &mut self.mode {
            Mode::Queue { rx, .. } => {
                while n < max && !rx.is_empty() {
                    let Some(mut d) = frames.alloc() else { break };
                    let bytes = rx.pop_front().expect("checked non-empty");
                    d.len = bytes.len() as u32;
                    frames.data_mut(d).copy_from_slice(&bytes);
                    self.rx_bytes += u64::from(d.len);
                    out.push(d);
                    n += 1;
                }
            }
            Mode::Replay {
                template,
                others,
                next,
                remaining,
                filled,
                rewrite,
            } => {
                while n < max && *remaining > 0 {
                    let Some(mut d) = frames.alloc() else { break };
                    let t = if others.is_empty() {
                        &template[..]
                    } else {
                        let i = *next;
                        *next = if i == others.len() { 0 } else { i + 1 };
                        if i == 0 {
                            &template[..]
                        } else {
                            &others[i - 1][..]
                        }
                    };
                    d.len = fill_replay(frames, d, t, filled, *rewrite);
                    self.rx_bytes += u64::from(d.len);
                    out.push(d);
                    *remaining -= 1;
                    n += 1;
                }
            }
            Mode::Sink => {}
        }
        self.rx_count += n as u64;
        n
    }

    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let mut res = TxResult::default();
        for d in batch.drain(..) {
            if let Mode::Queue { out, .. } = &mut self.mode {
                out.push(frames.data(d).to_vec());
            }
            frames.free(d.addr);
            res.sent += 1;
            res.bytes += u64::from(d.len);
        }
        self.tx_count += u64::from(res.sent);
        self.tx_bytes += res.bytes;
        res
    }

    fn service(&mut self, _frames: &mut Frames) {}

    fn poll_fds(&self, _out: &mut Vec<RawFd>) {}

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn partial_csum_in(&self) -> bool {
        self.partial_csum_in
    }

    fn details(&self) -> String {
        match &self.mode {
            Mode::Queue { rx, .. } => format!("mode=queue pending={}", rx.len()),
            Mode::Replay {
                template,
                remaining,
                ..
            } => format!("mode=replay len={} remaining={remaining}", template.len()),
            Mode::Sink => "mode=sink".to_string(),
        }
    }

    /// A mem port holds no frames between bursts: nothing to return.
    fn close(&mut self, _frames: &mut Frames) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HEADROOM;

    fn frame(tag: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn queue_rx_tx_roundtrip() {
        let mut frames = Frames::new(8).unwrap();
        let mut p = MemPort::new(3);
        assert_eq!(p.kind(), PortKind::Mem);
        assert_eq!(p.mtu(), 1500);
        p.inject(&frame(1, 60));
        p.inject(&frame(2, 1514));
        p.inject(&frame(3, 10));
        let mut out = Vec::with_capacity(32);
        assert_eq!(p.rx_burst(&mut frames, &mut out, 2), 2);
        assert_eq!(p.rx_pending(), 1);
        assert_eq!(out[0].headroom(), HEADROOM);
        assert_eq!(frames.data(out[0]), &frame(1, 60)[..]);
        assert_eq!(frames.data(out[1]), &frame(2, 1514)[..]);
        assert_eq!(p.rx_burst(&mut frames, &mut out, 32), 1);
        assert_eq!(frames.data(out[2]), &frame(3, 10)[..]);
        assert_eq!(frames.free_count(), 5);
        assert_eq!(p.rx_count(), 3);

        let mut sink = MemPort::new(4);
        let r = sink.tx_burst(&mut frames, &mut out);
        assert!(out.is_empty());
        assert_eq!(
            r,
            TxResult {
                sent: 3,
                bytes: 60 + 1514 + 10,
                dropped: 0,
                kick_deferred: false,
                why: None,
            }
        );
        assert_eq!(frames.free_count(), 8);
        let got = sink.take_output();
        assert_eq!(got, vec![frame(1, 60), frame(2, 1514), frame(3, 10)]);
        assert!(sink.take_output().is_empty());
        assert_eq!(sink.tx_count(), 3);
    }

    #[test]
    fn rx_stops_when_pool_is_empty() {
        let mut frames = Frames::new(2).unwrap();
        let mut p = MemPort::new(0);
        for i in 0..5 {
            p.inject(&frame(i, 64));
        }
        let mut out = Vec::new();
        assert_eq!(p.rx_burst(&mut frames, &mut out, 32), 2);
        assert_eq!(p.rx_pending(), 3);
        for d in out.drain(..) {
            frames.free(d.addr);
        }
        assert_eq!(p.rx_burst(&mut frames, &mut out, 32), 2);
        assert_eq!(frames.data(out[0]), &frame(2, 64)[..]);
    }

    #[test]
    fn inject_truncates_oversize_frames() {
        let mut frames = Frames::new(1).unwrap();
        let mut p = MemPort::new(0);
        p.inject(&frame(0, 4000));
        let mut out = Vec::new();
        p.rx_burst(&mut frames, &mut out, 1);
        assert_eq!(out[0].len as usize, MAX_FRAME_LEN);
    }

    /// Frames cycle through the templates, in order, whether the templates differ only in
    /// their headers (the short rewrite) or further in (whole copies).
    #[test]
    fn replay_cycle_hands_out_the_templates_in_turn() {
        let head_only: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                let mut t = frame(7, 300);
                t[0] = i;
                t
            })
            .collect();
        let mut deep = head_only.clone();
        deep[2][250] ^= 0xff;
        for templates in [head_only, deep] {
            let mut frames = Frames::new(4).unwrap();
            let mut src = MemPort::replay_cycle(1, &templates, 11);
            let mut sink = MemPort::sink(2);
            let mut out = Vec::new();
            let mut i = 0;
            while src.rx_pending() > 0 {
                assert!(src.rx_burst(&mut frames, &mut out, 2) > 0);
                for d in &out {
                    assert_eq!(frames.data(*d), &templates[i % 3][..], "frame {i}");
                    i += 1;
                }
                sink.tx_burst(&mut frames, &mut out);
            }
            assert_eq!(i, 11);
        }
    }

    #[test]
    fn replay_restores_headers_and_keeps_payload() {
        let template = frame(7, 1000);
        let mut frames = Frames::new(4).unwrap();
        let mut src = MemPort::replay(1, &template, 10);
        let mut sink = MemPort::sink(2);
        let mut out = Vec::with_capacity(32);
        let mut got = 0;
        while src.rx_pending() > 0 {
            let n = src.rx_burst(&mut frames, &mut out, 3);
            assert!(n > 0);
            for d in out.iter_mut() {
                assert_eq!(frames.data(*d), &template[..]);
                // The pipeline rewrites headers (and may move the start); the next use of this
                // chunk must still see the template.
                frames.data_mut(*d)[..20].fill(0xee);
            }
            got += n;
            let r = sink.tx_burst(&mut frames, &mut out);
            assert_eq!(r.sent as usize, n);
        }
        assert_eq!(got, 10);
        assert_eq!(src.rx_count(), 10);
        assert_eq!(sink.tx_count(), 10);
        assert_eq!(sink.tx_bytes(), 10_000);
        assert_eq!(frames.free_count(), 4);
        assert_eq!(src.rx_burst(&mut frames, &mut out, 32), 0);
        assert!(sink.take_output().is_empty());
    }

    #[test]
    fn replay_full_copy_and_short_template() {
        let mut frames = Frames::new(1).unwrap();
        let t = frame(1, 300);
        let mut p = MemPort::replay(0, &t, 3);
        p.set_replay_full_copy(true);
        let mut out = Vec::new();
        for _ in 0..3 {
            p.rx_burst(&mut frames, &mut out, 1);
            let d = out.pop().unwrap();
            assert_eq!(frames.data(d), &t[..]);
            frames.data_mut(d)[200..].fill(0);
            frames.free(d.addr);
        }
        // A template shorter than REPLAY_REWRITE is always copied whole.
        let t = frame(9, 60);
        let mut p = MemPort::replay(0, &t, 2);
        for _ in 0..2 {
            p.rx_burst(&mut frames, &mut out, 1);
            let d = out.pop().unwrap();
            assert_eq!(frames.data(d), &t[..]);
            frames.data_mut(d).fill(0);
            frames.free(d.addr);
        }
    }

    #[test]
    fn settings_and_details() {
        let mut p = MemPort::new(9);
        p.set_mtu(9000);
        p.set_partial_csum_in(true);
        assert_eq!(p.mtu(), 9000);
        assert!(p.partial_csum_in());
        let mut fds = Vec::new();
        p.poll_fds(&mut fds);
        assert!(fds.is_empty());
        assert_eq!(p.details(), "mode=queue pending=0");
        assert_eq!(MemPort::sink(1).details(), "mode=sink");
        assert_eq!(
            MemPort::replay(1, &[0; 64], 5).details(),
            "mode=replay len=64 remaining=5"
        );
        // Sinks and replay ports ignore injected frames.
        let mut s = MemPort::sink(1);
        s.inject(&[0; 64]);
        assert_eq!(s.rx_pending(), 0);
    }
}
