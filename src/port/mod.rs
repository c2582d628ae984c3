//! Ports: where frames enter and leave the switch. The only module (with `packet/`) that talks to
//! the kernel.
//!
//! Contract for every [`Port`]:
//! - `rx_burst` appends up to `max` received frames to `out`; each one is owned by the worker
//!   (`Owner::Worker`) when it is returned. It never blocks.
//! - `tx_burst` takes every descriptor in `frames` (the vector is drained): frames it queued for
//!   transmission belong to the port until done, frames it could not send are returned to the
//!   pool and counted in `TxResult::dropped`. It never blocks.
//! - `tx_queue` is `tx_burst` for the worker's loop: a port may leave the kernel's transmit
//!   doorbell (a `sendto` in AF_XDP copy mode) for later and say so in
//!   `TxResult::kick_deferred`; the worker then calls `tx_kick` before it yields or sleeps, or
//!   once the frames waited a bound (see `worker::kicks`). `tx_burst` always rings: callers
//!   outside the loop (tests, the relay of another worker's frames) need nothing else.
//! - `service` does periodic work that is not tied to a burst (completions, refilling rings,
//!   kicking the kernel); the worker calls it once per loop iteration.
//! - Threads: a port is opened (its kernel side: sockets, XDP program, TAP device) on any
//!   thread, then `attach`ed on the worker, which owns [`Frames`]: `attach` takes the port's id
//!   and the frames it needs and makes no slow syscall. Symmetrically `release` closes the
//!   kernel side on any thread and touches no frame; after it the kernel reads and writes no
//!   frame of the port. `close`, on the worker, returns every frame the port holds to the pool
//!   (and its frame-budget commitment), calling `release` first if nobody did; the port is
//!   dropped afterwards. So BPF loads, binds, ioctls and the RCU waits of closing sockets never
//!   run on the worker (see `worker::open`).
//! - `fault` says the device is gone (an fd error such as EBADFD, ENXIO, ENODEV: the one list
//!   is [`sys::device_gone`]): the worker then closes the port and marks it `gone` (see
//!   `worker::life`); a port never spins on a dead descriptor.
//! - `housekeep` runs off the fast path (every 1024 iterations and after each sleep).

pub mod link;

pub mod afpacket;
pub mod afxdp;
pub mod frameio;
pub mod mem;
pub mod patch;
pub mod queueless;
pub mod rtnl;
pub mod sys;
pub mod tap;
pub mod virt;
pub mod vnet;
pub mod wait;

use std::os::fd::RawFd;

use crate::packet::{Desc, Frames};

/// What kind of port this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// AF_XDP sockets on an existing netdev.
    Afxdp,
    /// An AF_PACKET socket with `PACKET_VNET_HDR` on an existing netdev (OVS's `system`
    /// ports): receives TCP super-frames from a veth.
    #[serde(alias = "system")]
    Afpacket,
    /// A TAP device created by uvs (also OVS's `internal`: what its userspace datapath makes
    /// of an internal port; one named as its bridge is the bridge's `LOCAL` port).
    #[serde(alias = "internal")]
    Tap,
    /// An in-memory port (tests, benches, fuzzing).
    Mem,
    /// A VXLAN tunnel port: no device; frames are encapsulated toward remote VTEPs.
    Vxlan,
    /// One of two ports joined back to back inside the switch (OVS's patch ports).
    Patch,
}

impl PortKind {
    /// True for ports on an existing netdev in uvs's namespace (AF_XDP, AF_PACKET): they go
    /// down, disappear and are re-attached with their netdev (see `worker::life`).
    pub fn on_netdev(self) -> bool {
        matches!(self, PortKind::Afxdp | PortKind::Afpacket)
    }

    /// True for ports with a kernel device (socket, XDP program, TAP fd), which `add-port`
    /// opens off the worker (see `worker::open`).
    pub fn has_device(self) -> bool {
        matches!(self, PortKind::Afxdp | PortKind::Afpacket | PortKind::Tap)
    }
}

impl std::fmt::Display for PortKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortKind::Afxdp => "afxdp",
            PortKind::Afpacket => "afpacket",
            PortKind::Tap => "tap",
            PortKind::Mem => "mem",
            PortKind::Vxlan => "vxlan",
            PortKind::Patch => "patch",
        })
    }
}

/// The outcome of one `tx_burst`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxResult {
    /// Frames queued for transmission.
    pub sent: u32,
    /// Bytes queued for transmission.
    pub bytes: u64,
    /// Frames the port could not take (ring full, device gone): returned to the pool.
    pub dropped: u32,
    /// `tx_queue` left queued frames waiting for `Port::tx_kick` (never set by `tx_burst`).
    pub kick_deferred: bool,
    /// Why `dropped` were dropped when it is not a full ring (`tx-full`).
    pub why: Option<crate::counters::DropReason>,
}

impl TxResult {
    /// Free every frame of `batch` as dropped (a port with nowhere to send them).
    pub fn drop_all(frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let dropped = batch.len() as u32;
        for d in batch.drain(..) {
            frames.free(d.addr);
        }
        TxResult {
            dropped,
            ..TxResult::default()
        }
    }
}

/// A port's I/O. Implementations hold kernel resources; the datapath core never sees them.
pub trait Port: Send {
    /// The port's kind.
    fn kind(&self) -> PortKind;

    /// Receive up to `max` frames into `out`.
    fn rx_burst(&mut self, frames: &mut Frames, out: &mut Vec<Desc>, max: usize) -> usize;

    /// Transmit and drain `batch`.
    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult;

    /// Queue and drain `batch` like `tx_burst`, possibly leaving the kernel's doorbell for
    /// `tx_kick` (then `kick_deferred` is set in the result). Default: `tx_burst`.
    fn tx_queue(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        self.tx_burst(frames, batch)
    }

    /// Ring the doorbell for frames `tx_queue` left waiting; true if there were any (a
    /// syscall was made). Default: nothing ever waits.
    fn tx_kick(&mut self) -> bool {
        false
    }

    /// Per-iteration upkeep: reap completions, refill rx buffers, wake the kernel if needed.
    fn service(&mut self, frames: &mut Frames);

    /// File descriptors to poll for readability while the worker sleeps.
    fn poll_fds(&self, out: &mut Vec<RawFd>);

    /// True if transmitted frames are still in flight (the worker should not sleep long).
    fn tx_pending(&self) -> bool {
        false
    }

    /// The device MTU (L3 bytes), as reported by the kernel.
    fn mtu(&self) -> u32;

    /// The kernel changed the device MTU (a link event): remember it.
    fn set_mtu(&mut self, _mtu: u32) {}

    /// The device's ifindex in uvs's namespace when it was opened (0: no device).
    fn ifindex(&self) -> u32 {
        0
    }

    /// Why the device stopped working, once an fd error says it is gone; None while healthy.
    fn fault(&self) -> Option<&str> {
        None
    }

    /// A patch port (`port::patch`) named `name` joins `peer` instead of its peer; others
    /// ignore it (`set-port` allows `peer=` on patch ports only).
    fn set_peer(&mut self, _name: &str, _peer: &str, _inboxes: &mut patch::Inboxes) {}

    /// Why a port that is up as far as its device goes cannot carry frames now (a patch port
    /// whose peer is missing); None when it can.
    fn down_reason(&self) -> Option<String> {
        None
    }

    /// Frames the port holds now (receive rings, transmit in flight).
    fn frames_held(&self) -> u32 {
        0
    }

    /// Upkeep off the fast path: budget growth and shrink, kernel counters. `now_ms` is the
    /// worker clock.
    fn housekeep(&mut self, _frames: &mut Frames, _now_ms: u64) {}

    /// True if frames from this port may carry a partial (offloaded) L4 checksum that must be
    /// completed before they leave through a port that will not complete it.
    fn partial_csum_in(&self) -> bool {
        false
    }

    /// True if the port takes frames with offload state as they are (partial checksums, TCP
    /// super-frames in large buffers, see `packet::Offload`); others get them finished at
    /// output.
    fn offload_out(&self) -> bool {
        false
    }

    /// True if the port also takes IPv4 UDP GSO frames (`GsoType::Udp4`) and segments them in
    /// the kernel (AF_PACKET with `PACKET_VNET_HDR`); the VXLAN underlay then carries one
    /// message per encapsulated TCP super-frame (see `pipeline::gro`).
    fn uso_out(&self) -> bool {
        false
    }

    /// Counters the kernel keeps for this port that uvs never sees (frames lost before they
    /// reach uvs), for `stats`: name and value.
    fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Human-readable details for `show` (mode, queues, ...).
    fn details(&self) -> String {
        String::new()
    }

    /// The netdev rx queues this port polls, with the frames received on each since it was
    /// opened (`rxq-show`); empty for ports without rx queues of their own.
    fn rx_queues(&self) -> Vec<(u32, u64)> {
        Vec::new()
    }

    /// Take port id `id` and the frames the port needs (the worker, once, before the first
    /// burst). On error no frame has moved and the port is released and closed.
    fn attach(&mut self, _id: u16, _frames: &mut Frames) -> Result<(), String> {
        Ok(())
    }

    /// Close the kernel side (sockets, XDP program, TAP fd) without touching any frame; any
    /// thread. Idempotent.
    fn release(&mut self) {}

    /// A bound AF_XDP socket of this port whose UMEM the next AF_XDP port can share.
    fn shared_umem_fd(&self) -> Option<RawFd> {
        None
    }

    /// With several workers: the worker that transmits for this port, when this worker has
    /// no socket of its own on it (an AF_XDP netdev with fewer queues than workers). The
    /// worker then hands it the frames to send (see `worker::relay`).
    fn tx_by_worker(&self) -> Option<usize> {
        None
    }

    /// Release every frame held by this port back to `frames` (after `release`; it calls it if
    /// needed).
    fn close(&mut self, frames: &mut Frames);
}
