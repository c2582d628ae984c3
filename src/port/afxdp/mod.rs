//! AF_XDP ports: one XSK socket per rx queue of an existing netdev, all on the worker's shared
//! UMEM (the [`Frames`] region), fed by a tiny XDP redirect program that uvs loads itself with
//! the `bpf()` syscall (no libbpf, no `afxdp` crate).
//!
//! Contract:
//! - Opening is split in two halves so that the kernel work stays off the worker thread (see
//!   `worker::open`):
//!   - [`AfxdpPort::prepare`] (any thread) checks the netdev and its MTU, attaches the XDP
//!     program (see [`xdp`]: map create, program load, `BPF_LINK_CREATE`), opens and binds one
//!     socket per rx queue (see [`socket`]: `bind` takes the RTNL lock, and zero-copy reconfigures
//!     the driver) on the UMEM it is given, and inserts the sockets in the XSKMAP. It touches no
//!     frame and no budget. Until the fill rings are stocked, frames the program redirects to a
//!     socket are dropped by the kernel (counted in `xsk_fill_ring_empty`).
//!   - [`Port::attach`] (the worker, which owns [`Frames`]) commits `queues * fill_min` frames in
//!     the frame budget (refusing the port with the numbers when they are not there, see
//!     [`crate::packet::budget`]; no frame has moved then) and stocks each fill ring with its
//!     receive target of frames tagged `Owner::Port(port_id)`. It makes no syscall but the
//!     fill-ring wakeup of a zero-copy socket.
//!   - [`AfxdpPort::open`] does both on the calling thread (the worker's reopen of a port whose
//!     netdev came back, tests).
//! - Closing is split the same way: [`Port::release`] (any thread) detaches the program and
//!   closes the sockets (`xsk_release` waits for an RCU grace period); after it the kernel
//!   writes no frame of the port. [`Port::close`] (the worker) then returns the port's frames
//!   and budget commitment; it calls `release` first if nobody did.
//! - Receive targets: each socket holds at most its target in its fill and rx rings together,
//!   `fill_min` when idle; it doubles (up to `fill_frames`, as the budget lends) when the kernel
//!   emptied more than half its fill ring between two refills or reports `fill_ring_empty`
//!   (counted from the first housekeeping after `attach`: earlier drops only meant the rings
//!   were not stocked yet), and halves back after 2 s without need (`housekeep`). Fill rings
//!   never take the budget's reserve. At most `tx_max` transmitted frames are in flight per
//!   port.
//! - A kick answered ENXIO/ENODEV/EBADF(D) (the netdev went away and the kernel unbound the
//!   socket) sets [`Port::fault`]; the worker then closes the port (see `worker::life`).
//!   With `shared = None` the first socket registers the UMEM; otherwise every socket shares the
//!   UMEM of the given fd. [`AfxdpPort::umem_fd`] is the fd for the next port to share; it stays
//!   valid only while this port is open.
//! - Receive polls the sockets round-robin; transmit always uses the queue-0 socket. Frames move
//!   between ports by descriptor, never copied.
//! - Frame accounting: in a fill/rx/tx/completion ring = `Port(port_id)`, returned by
//!   `rx_burst` = `Worker`, reaped from the completion ring or refused by `tx_burst` = freed.
//!   `close` (after `release`) reclaims every `Port(port_id)` frame. Dropping the port without
//!   `close` also detaches and closes, but leaks its frames until the worker stops.
//! - Steady state allocates nothing: rings are mmap'd at open, bursts write into caller vectors.
//!
//! Kernel facts found while building this (Linux 6.18, veth). "Measured" = seen in
//! tests/afxdp_port.rs; "source" = read in net/xdp/ and drivers/net/veth.c, not provoked here.
//! - (source) A socket that shares a UMEM takes the copy/zero-copy mode and the need-wakeup
//!   setting of the socket that registered it (`xp_assign_dev_shared`); it must bind with
//!   `XDP_SHARED_UMEM` alone (EINVAL otherwise) and needs its own fill/completion rings when it
//!   is on another device or queue. Consequence: if the first port of a UMEM is zero-copy, every
//!   later port tries zero-copy too and fails to bind on devices that cannot (veth).
//! - (source) Ring `mmap`s must happen before `bind`; after bind the kernel answers EBUSY.
//! - (source) In copy mode one `sendto` transmits at most 32 descriptors (`TX_BATCH_SIZE`), so
//!   `service` kicks again while the tx ring holds frames whose doorbell was rung.
//! - Transmit doorbells: `tx_burst` rings one per call; `tx_queue` (the worker's loop) leaves
//!   it for `tx_kick` until `KICK_FRAMES` frames wait, so the worker rings once for the frames
//!   of several passes (see `worker::kicks`).
//! - (source) A tx descriptor the kernel finds invalid (zero length, crossing a chunk) is
//!   consumed but never completed: it would leak the frame, so `tx_burst` drops such
//!   descriptors itself.
//! - (measured) A veth made with defaults has as many rx queues as CPUs (2 here); the peer's tx
//!   queue (picked by the sender's CPU via XPS, or a flow hash) is our rx queue, so in native
//!   mode a socket on queue 0 alone misses traffic. In generic mode veth records no rx queue (it
//!   does only with NAPI, i.e. native XDP or GRO on), so the program sees `rx_queue_index == 0`
//!   for everything.
//! - (measured) Zero-copy bind on veth fails, native mode in copy works: `Auto` on veth gives
//!   "mode=native copy". Copy-mode forwarding of a preloaded ping flood (3000 x 1000 B, bursts
//!   of 64) between two veths lost nothing.
//! - (measured) The XDP program detaches when its `BPF_LINK_CREATE` fd closes (port drop, and so
//!   process exit): `ip -d link show DEV` shows no `xdp` line afterwards. (source) An XDP
//!   program already attached through netlink makes `BPF_LINK_CREATE` fail with EBUSY.

mod netdev;
pub use netdev::rx_queues;
mod ring;
pub mod rxq;
pub mod socket;
mod types;
pub mod xdp;
pub mod xdpgen;

use types::L2_OVERHEAD;
pub use types::{AfxdpError, AfxdpOptions, AfxdpStats, XdpMode};

use std::fmt;
use std::os::fd::RawFd;

use crate::packet::budget::FillTarget;
use crate::packet::{Desc, FRAME_SIZE, Frames, MAX_FRAME_LEN, Owner};
use crate::port::sys::note_gone;
use crate::port::{Port, PortKind, TxResult};

pub use socket::Umem;
use socket::XskSocket;
use xdp::XdpProgram;

/// Transmitted frames a port may always keep in flight, whatever the pool holds.
const TX_MIN: u32 = 64;

/// Frames `tx_queue` may leave waiting for their doorbell; with this many it rings at once
/// (the kernel's copy-mode `TX_BATCH_SIZE`: one `sendto` moved 32 before `socket.rs` raised
/// the budget, so a doorbell per 32 frames costs little against the copies).
const KICK_FRAMES: u32 = 32;

/// An AF_XDP port on an existing netdev.
pub struct AfxdpPort {
    /// First field: dropped first, so the program detaches before the sockets close (when
    /// several workers share it, when the last of their ports drops it).
    xdp: Option<std::sync::Arc<XdpProgram>>,
    socks: Vec<XskSocket>,
    /// Receive target of each socket (same index as `socks`).
    targets: Vec<FillTarget>,
    ifname: String,
    /// The netdev's rx queues (this port's sockets bind its share of them).
    device_queues: u32,
    ifindex: u32,
    /// Set by `attach` (the worker half of opening); None while only the kernel half is open.
    port_id: Option<u16>,
    mode: XdpMode,
    mtu: u32,
    zero_copy: bool,
    /// Frames committed in the budget at attach (`queues * fill_min`); 0 once retired.
    base: u32,
    fill_min: u32,
    tx_max: u32,
    rx_next: usize,
    tx_outstanding: u32,
    /// Frames in the tx ring whose doorbell `tx_queue` left for `tx_kick` (0 when the kernel
    /// needs none).
    unkicked: u32,
    /// Frames the sockets held in their fill and rx rings when `release` closed them (for the
    /// budget's ring count at `close`).
    released_held: u32,
    /// The worker clock at the last housekeeping (ms), for budget decisions.
    now_ms: u64,
    /// Why the device stopped working (a kick answered ENXIO, ...), if it did.
    fault: Option<String>,
    /// `xsk_fill_ring_empty` at the last housekeeping, per socket; None until the first one
    /// after the rings were stocked, which only takes the baseline: frames the program
    /// redirected before `attach` stocked the fill rings (the netdev's first packets, while the
    /// port was prepared off the worker) were counted as fill-ring-empty drops and are no sign
    /// that the socket needs a larger target (they made new ports borrow frames for 2 s and
    /// refused the next port on a small region: the CI failure of
    /// `small_frame_region_refuses_the_port_it_cannot_serve`, session 25).
    fill_empty_seen: Vec<Option<u64>>,
    /// Several workers, fewer queues than workers, none for this one: the worker that owns
    /// the queue this one's transmissions go through (see `Port::tx_by_worker`).
    tx_worker: Option<usize>,
}

impl AfxdpPort {
    /// Open `ifname` as port `port_id` on the worker's `frames`: [`AfxdpPort::prepare`] then
    /// [`AfxdpPort::attach`] on the calling thread (the worker's reopen, tests). `shared` is a
    /// bound socket whose UMEM to share (None: register `frames`' region).
    pub fn open(
        ifname: &str,
        port_id: u16,
        frames: &mut Frames,
        shared: Option<RawFd>,
        opts: &AfxdpOptions,
    ) -> Result<AfxdpPort, AfxdpError> {
        let umem = Umem::shared_or_register(shared, frames.region().base(), frames.region().len());
        let mut port = AfxdpPort::prepare(ifname, umem, opts)?;
        if let Err(e) = port.attach_frames(port_id, frames) {
            port.release();
            return Err(e);
        }
        Ok(port)
    }

    /// The kernel half of opening `ifname`, off the worker (see the module doc): check the
    /// netdev and its MTU, attach the XDP program, open and bind one socket per rx queue on
    /// `umem` and insert them in the XSKMAP. Touches no frame and no budget; on error nothing
    /// is left behind (program detached, sockets closed).
    pub fn prepare(ifname: &str, umem: Umem, opts: &AfxdpOptions) -> Result<AfxdpPort, AfxdpError> {
        opts.validate(ifname)?;
        let ifindex = netdev::ifindex(ifname)?;
        let mtu = netdev::read_mtu(ifname)?;
        check_mtu(ifname, mtu)?;
        let queues = netdev::rx_queues(ifname)?;
        let (xdp, mine) = match opts.share {
            None => (
                std::sync::Arc::new(XdpProgram::attach(ifname, ifindex, queues, opts.mode)?),
                (0..queues).collect::<Vec<u32>>(),
            ),
            Some((worker, workers)) => (
                XdpProgram::shared(ifname, ifindex, queues, opts.mode)?,
                rxq::mine(queues, workers, &opts.pinned, worker),
            ),
        };
        let mut port = AfxdpPort {
            mode: xdp.mode,
            xdp: Some(xdp),
            socks: Vec::with_capacity(mine.len()),
            targets: Vec::with_capacity(mine.len()),
            ifname: ifname.to_string(),
            device_queues: queues,
            ifindex,
            port_id: None,
            mtu,
            zero_copy: false,
            base: 0,
            fill_min: opts.fill_min,
            tx_max: opts.tx_max,
            rx_next: 0,
            tx_outstanding: 0,
            unkicked: 0,
            released_held: 0,
            now_ms: 0,
            fault: None,
            fill_empty_seen: vec![None; mine.len()],
            // Worker w without a queue sends through the owner of queue w % queues.
            tx_worker: match opts.share {
                Some((worker, workers)) if mine.is_empty() && queues > 0 => {
                    let owners = rxq::owners(queues, workers, &opts.pinned);
                    Some(owners[(worker % queues) as usize] as usize)
                }
                _ => None,
            },
        };
        if let Err(e) = port.open_sockets(umem, opts, &mine) {
            port.release();
            return Err(e);
        }
        port.zero_copy = port.socks.first().is_some_and(|s| s.is_zero_copy());
        let xdp = port.xdp.as_ref().expect("just attached");
        let inserted = port
            .socks
            .iter()
            .try_for_each(|s| xdp.insert(ifname, s.queue, s.fd()));
        if let Err(e) = inserted {
            port.release();
            return Err(e);
        }
        Ok(port)
    }

    /// The worker half of opening (see the module doc): commit `queues * fill_min` frames in
    /// the budget (refusing the port with the numbers when they are not there) and stock each
    /// fill ring with frames tagged `Owner::Port(port_id)`. On error no frame has moved.
    fn attach_frames(&mut self, port_id: u16, frames: &mut Frames) -> Result<(), AfxdpError> {
        let base = self.socks.len() as u32 * self.fill_min;
        frames
            .budget
            .admit(base)
            .map_err(|source| AfxdpError::Budget {
                ifname: self.ifname.clone(),
                source,
            })?;
        self.base = base;
        self.port_id = Some(port_id);
        self.refill(frames);
        Ok(())
    }

    /// Open one socket per queue of `queues`: the first registers the UMEM unless `shared`
    /// names a socket that has it.
    fn open_sockets(
        &mut self,
        umem: Umem,
        opts: &AfxdpOptions,
        queues: &[u32],
    ) -> Result<(), AfxdpError> {
        let (ifname, ifindex) = (self.ifname.as_str(), self.ifindex);
        for &q in queues {
            // Only the socket that registers the UMEM may try zero-copy; the others share it.
            let (u, try_zc) = match (umem, self.socks.first()) {
                (Umem::Register { .. }, None) => (umem, self.mode == XdpMode::Native),
                (Umem::Register { .. }, Some(first)) => (Umem::Shared(first.fd()), false),
                (Umem::Shared(_), _) => (umem, false),
            };
            let sock = open_socket(ifname, ifindex, q, opts, u, try_zc)?;
            self.socks.push(sock);
            self.targets
                .push(FillTarget::new(opts.fill_min, opts.fill_frames));
        }
        Ok(())
    }

    /// An fd of this port's bound sockets, for the next port to share the UMEM.
    pub fn umem_fd(&self) -> RawFd {
        self.socks.first().map_or(-1, |s| s.fd())
    }

    /// The XDP mode that was attached (never `Auto`).
    pub fn xdp_mode(&self) -> XdpMode {
        self.mode
    }

    /// True if the sockets run in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The netdev queues this port has a socket on (all of them, or this worker's share).
    pub fn queue_ids(&self) -> Vec<u32> {
        self.socks.iter().map(|s| s.queue).collect()
    }

    /// Number of queues (sockets).
    pub fn queues(&self) -> usize {
        self.socks.len()
    }

    /// Frames received on each of this port's queues since open (in `queue_ids` order).
    pub fn rx_per_queue(&self, out: &mut Vec<u64>) {
        out.extend(self.socks.iter().map(|s| s.rx_packets));
    }

    /// The kernel's per-socket counters, summed.
    pub fn stats(&self) -> AfxdpStats {
        let mut t = AfxdpStats::default();
        for s in &self.socks {
            let st = s.statistics();
            t.rx_dropped += st.rx_dropped;
            t.rx_invalid_descs += st.rx_invalid_descs;
            t.tx_invalid_descs += st.tx_invalid_descs;
            t.rx_ring_full += st.rx_ring_full;
            t.rx_fill_ring_empty_descs += st.rx_fill_ring_empty_descs;
            t.tx_ring_empty_descs += st.tx_ring_empty_descs;
        }
        t
    }

    /// Frames this port holds: given to the kernel for receiving, or transmitted and not yet
    /// completed.
    pub fn held(&self) -> u32 {
        self.socks.iter().map(|s| s.rx_held).sum::<u32>() + self.tx_outstanding
    }

    /// Each socket's receive target (frames it may hold in its fill and rx rings).
    pub fn fill_targets(&self) -> Vec<u32> {
        self.targets.iter().map(|t| t.target).collect()
    }

    /// Top every socket up to its receive target. A socket whose fill ring the kernel emptied
    /// by more than half since the last refill asks the budget for more.
    fn refill(&mut self, frames: &mut Frames) {
        let Some(id) = self.port_id else { return };
        let owner = Owner::Port(id);
        for (s, t) in self.socks.iter_mut().zip(self.targets.iter_mut()) {
            let in_fill = s.fill.in_flight();
            if t.filled.saturating_sub(in_fill) > t.target / 2 {
                t.need_more(&mut frames.budget, self.now_ms);
            }
            // The target bounds what the socket holds, fill and rx ring together, so a socket
            // whose rx ring backs up cannot take more than its share of the pool.
            let want = t.target.saturating_sub(s.rx_held);
            let n = if want == 0 { 0 } else { s.fill.reserve(want) };
            let mut k = 0;
            while k < n {
                let Some(chunk) = frames.alloc_fill(owner) else {
                    break;
                };
                s.fill.write(k, chunk);
                k += 1;
            }
            if k > 0 {
                s.fill.submit(k);
                s.rx_held += k;
            }
            t.filled = in_fill + k;
            if self.zero_copy && s.fill.needs_wakeup() {
                s.kick_rx();
            }
        }
    }

    /// Free every transmitted frame the kernel handed back; kick tx again if some wait.
    fn reap(&mut self, frames: &mut Frames) {
        let Some(s) = self.socks.first_mut() else {
            return;
        };
        let n = s.comp.peek(s.comp.size());
        for i in 0..n {
            frames.free(s.comp.read(i));
        }
        if n > 0 {
            s.comp.release(n);
            self.tx_outstanding = self.tx_outstanding.saturating_sub(n);
        }
        // Frames the kernel left in the ring after their doorbell (copy mode's budget, EAGAIN)
        // get another; those still waiting for their first are `tx_kick`'s.
        if self.tx_outstanding > 0
            && s.tx.in_flight() > self.unkicked
            && (!self.zero_copy || s.tx.needs_wakeup())
        {
            self.unkicked = 0;
            if let Some(errno) = s.kick_tx() {
                note_fault(&mut self.fault, errno);
            }
        }
    }

    /// Ring the transmit doorbell for every frame in the tx ring.
    fn kick(&mut self) {
        self.unkicked = 0;
        if let Some(s) = self.socks.first()
            && let Some(errno) = s.kick_tx()
        {
            note_fault(&mut self.fault, errno);
        }
    }
}

/// The MTU fits one frame with an Ethernet and a VLAN header.
pub fn check_mtu(ifname: &str, mtu: u32) -> Result<(), AfxdpError> {
    if (mtu + L2_OVERHEAD) as usize > MAX_FRAME_LEN {
        return Err(AfxdpError::MtuTooLarge {
            ifname: ifname.to_string(),
            mtu,
            limit: MAX_FRAME_LEN,
        });
    }
    Ok(())
}

/// Record a fault for errnos that mean the device is gone (the socket was unbound).
fn note_fault(fault: &mut Option<String>, errno: i32) {
    note_gone(fault, errno, || {
        format!(
            "transmit kick failed: {}",
            std::io::Error::from_raw_os_error(errno)
        )
    });
}

/// Open one socket; the registering socket tries zero-copy first when `try_zc`. A bind that
/// answers EBUSY is tried again, with growing sleeps, for up to `opts.busy_wait`.
fn open_socket(
    ifname: &str,
    ifindex: u32,
    queue: u32,
    opts: &AfxdpOptions,
    umem: Umem,
    try_zc: bool,
) -> Result<XskSocket, AfxdpError> {
    let deadline = std::time::Instant::now() + opts.busy_wait;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match open_socket_once(ifname, ifindex, queue, opts, umem, try_zc) {
            Err(e) if e.errno() == Some(libc::EBUSY) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

fn open_socket_once(
    ifname: &str,
    ifindex: u32,
    queue: u32,
    opts: &AfxdpOptions,
    umem: Umem,
    try_zc: bool,
) -> Result<XskSocket, AfxdpError> {
    let wake = libc::XDP_USE_NEED_WAKEUP;
    if try_zc {
        match XskSocket::open(
            ifname,
            ifindex,
            queue,
            opts.ring_size,
            umem,
            wake | libc::XDP_ZEROCOPY,
        ) {
            Ok(s) => return Ok(s),
            Err(e) if matches!(e.errno(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {}
            Err(e) => return Err(e),
        }
    }
    XskSocket::open(
        ifname,
        ifindex,
        queue,
        opts.ring_size,
        umem,
        wake | libc::XDP_COPY,
    )
}

/// A tx descriptor the kernel will accept: non-empty and inside one chunk.
#[inline]
fn tx_valid(d: &Desc) -> bool {
    d.len > 0
        && !d.is_big()
        && (d.addr & (FRAME_SIZE as u64 - 1)) + d.len as u64 <= FRAME_SIZE as u64
}

impl Port for AfxdpPort {
    fn kind(&self) -> PortKind {
        PortKind::Afxdp
    }

    fn rx_burst(&mut self, frames: &mut Frames, out: &mut Vec<Desc>, max: usize) -> usize {
        let n = self.socks.len();
        if n == 0 {
            return 0;
        }
        let mut got = 0u32;
        let max = max.min(u32::MAX as usize) as u32;
        for k in 0..n {
            if got >= max {
                break;
            }
            let s = &mut self.socks[(self.rx_next + k) % n];
            let avail = s.rx.peek(max - got);
            for i in 0..avail {
                let d = s.rx.read(i);
                frames.set_owner(d.addr, Owner::Worker);
                out.push(Desc::new(d.addr, d.len));
            }
            if avail > 0 {
                s.rx.release(avail);
                frames.budget.ring_out(avail);
                s.rx_held -= avail;
                s.rx_packets += avail as u64;
                got += avail;
            }
        }
        self.rx_next = (self.rx_next + 1) % n;
        got as usize
    }

    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let mut res = self.tx_queue(frames, batch);
        if res.kick_deferred {
            self.kick();
            res.kick_deferred = false;
        }
        res
    }

    fn tx_queue(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let mut res = TxResult::default();
        let (Some(id), Some(s)) = (self.port_id, self.socks.first_mut()) else {
            res.dropped = batch.len() as u32;
            for d in batch.drain(..) {
                frames.free(d.addr);
            }
            return res;
        };
        let owner = Owner::Port(id);
        // Up to TX_MIN in flight always; beyond that only while the pool has spare frames, so a
        // slow device cannot hold what other ports' receive rings are owed.
        let mut allowed = self.tx_max.saturating_sub(self.tx_outstanding);
        if self.tx_outstanding >= TX_MIN {
            allowed = allowed.min(frames.spare().min(u32::MAX as usize) as u32);
        }
        let room =
            s.tx.reserve((batch.len().min(u32::MAX as usize) as u32).min(allowed));
        let mut k = 0;
        for d in batch.drain(..) {
            if k < room && tx_valid(&d) {
                s.tx.write(
                    k,
                    libc::xdp_desc {
                        addr: d.addr,
                        len: d.len,
                        options: 0,
                    },
                );
                frames.set_owner(d.addr, owner);
                k += 1;
                res.bytes += d.len as u64;
            } else {
                frames.free(d.addr);
                res.dropped += 1;
            }
        }
        if k > 0 {
            s.tx.submit(k);
            self.tx_outstanding += k;
            res.sent = k;
            // A zero-copy socket without NEED_WAKEUP is drained by the driver: no doorbell.
            if !self.zero_copy || s.tx.needs_wakeup() {
                self.unkicked += k;
                if self.unkicked >= KICK_FRAMES {
                    self.kick();
                }
            }
        }
        res.kick_deferred = self.unkicked > 0;
        res
    }

    fn tx_kick(&mut self) -> bool {
        if self.unkicked == 0 {
            return false;
        }
        self.kick();
        true
    }

    fn service(&mut self, frames: &mut Frames) {
        self.reap(frames);
        self.refill(frames);
    }

    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        out.extend(self.socks.iter().map(|s| s.fd()));
    }

    fn tx_pending(&self) -> bool {
        self.tx_outstanding > 0
    }

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn set_mtu(&mut self, mtu: u32) {
        self.mtu = mtu;
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn fault(&self) -> Option<&str> {
        self.fault.as_deref()
    }

    fn frames_held(&self) -> u32 {
        self.held()
    }

    fn housekeep(&mut self, frames: &mut Frames, now_ms: u64) {
        self.now_ms = now_ms;
        for (i, s) in self.socks.iter().enumerate() {
            let empty = s.statistics().rx_fill_ring_empty_descs;
            let t = &mut self.targets[i];
            match self.fill_empty_seen[i] {
                Some(seen) if empty > seen => t.need_more(&mut frames.budget, now_ms),
                _ => t.maybe_shrink(&mut frames.budget, now_ms),
            }
            self.fill_empty_seen[i] = Some(empty);
        }
    }

    fn partial_csum_in(&self) -> bool {
        true
    }

    fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats();
        // The netdev's own rx_dropped: frames the veth could not even hand to XDP (its 256-entry
        // XDP ring was full) or whose redirect into our socket failed.
        let netdev_dropped = std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/rx_dropped",
            self.ifname
        ))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
        vec![
            ("netdev_rx_dropped", netdev_dropped),
            ("xsk_rx_dropped", s.rx_dropped),
            ("xsk_rx_ring_full", s.rx_ring_full),
            ("xsk_fill_ring_empty", s.rx_fill_ring_empty_descs),
            ("xsk_rx_invalid_descs", s.rx_invalid_descs),
            ("xsk_tx_invalid_descs", s.tx_invalid_descs),
        ]
    }

    fn details(&self) -> String {
        let relay = match self.tx_worker {
            Some(w) => format!(" (no queue: sends through worker {w})"),
            None => String::new(),
        };
        // With several workers each holds its share of the device's queues: say so.
        let of = match self.device_queues as usize {
            n if n != self.socks.len() => format!(" of {n}"),
            _ => String::new(),
        };
        format!(
            "mode={} {} queues={}{of}{relay} mtu={}",
            self.mode,
            if self.zero_copy { "zero-copy" } else { "copy" },
            self.socks.len(),
            self.mtu
        )
    }

    fn rx_queues(&self) -> Vec<(u32, u64)> {
        self.socks.iter().map(|s| (s.queue, s.rx_packets)).collect()
    }

    fn close(&mut self, frames: &mut Frames) {
        self.release();
        frames
            .budget
            .ring_out(std::mem::take(&mut self.released_held));
        self.tx_outstanding = 0;
        self.unkicked = 0;
        let lent = self.targets.iter().map(|t| t.lent()).sum();
        frames.budget.retire(self.base, lent);
        self.base = 0;
        self.targets.clear();
        if let Some(id) = self.port_id.take() {
            frames.reclaim(Owner::Port(id));
        }
    }

    fn release(&mut self) {
        self.released_held += self.socks.iter().map(|s| s.rx_held).sum::<u32>();
        self.xdp = None;
        self.socks.clear();
    }

    fn shared_umem_fd(&self) -> Option<RawFd> {
        self.socks.first().map(|s| s.fd())
    }

    fn tx_by_worker(&self) -> Option<usize> {
        self.tx_worker
    }

    fn attach(&mut self, id: u16, frames: &mut Frames) -> Result<(), String> {
        self.attach_frames(id, frames).map_err(|e| e.to_string())
    }
}

impl fmt::Debug for AfxdpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AfxdpPort({} id={:?} {})",
            self.ifname,
            self.port_id,
            self.details()
        )
    }
}
