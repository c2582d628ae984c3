//! AF_XDP ports: one XSK socket per rx queue of an existing netdev, all on the worker's shared
//! UMEM (the [`Frames`] region), fed by a tiny XDP redirect program that uvs loads itself with
//! the `bpf()` syscall (no libbpf, no `afxdp` crate).
//!
//! Contract:
//! - [`AfxdpPort::open`] checks the netdev and its MTU, attaches the XDP program (see [`xdp`]),
//!   opens one socket per rx queue (see [`socket`]), stocks each fill ring with
//!   `fill_frames` frames tagged `Owner::Port(port_id)` and inserts the sockets in the XSKMAP.
//!   With `shared = None` the first socket registers the UMEM; otherwise every socket shares the
//!   UMEM of the given fd. [`AfxdpPort::umem_fd`] is the fd for the next port to share; it stays
//!   valid only while this port is open.
//! - Receive polls the sockets round-robin; transmit always uses the queue-0 socket. Frames move
//!   between ports by descriptor, never copied.
//! - Frame accounting: in a fill/rx/tx/completion ring = `Port(port_id)`, returned by
//!   `rx_burst` = `Worker`, reaped from the completion ring or refused by `tx_burst` = freed.
//!   `close` detaches the program (drops the link), closes the sockets and reclaims every
//!   `Port(port_id)` frame. Dropping the port without `close` also detaches and closes.
//! - Steady state allocates nothing: rings are mmap'd at open, bursts write into caller vectors.
//!
//! Kernel facts found while building this (Linux 6.18, veth):
//! - A socket that shares a UMEM takes the copy/zero-copy mode and the need-wakeup setting of the
//!   socket that registered it (`xp_assign_dev_shared`); it must bind with `XDP_SHARED_UMEM`
//!   alone (EINVAL otherwise) and needs its own fill/completion rings when it is on another
//!   device or queue. Consequence: if the first port of a UMEM is zero-copy, every later port
//!   tries zero-copy too and fails to bind on devices that cannot (veth).
//! - Ring `mmap`s must happen before `bind`; after bind the kernel answers EBUSY.
//! - In copy mode one `sendto` transmits at most 32 descriptors (`TX_BATCH_SIZE`), so `service`
//!   kicks again while the tx ring is not empty.
//! - A tx descriptor the kernel finds invalid (zero length, crossing a chunk) is consumed but
//!   never completed: it would leak the frame, so `tx_burst` drops such descriptors itself.
//! - A veth made with defaults has as many rx queues as CPUs (2 here) and the peer's sender CPU
//!   picks the queue (its tx queue = our rx queue), so in native mode a socket on queue 0 alone
//!   misses traffic. In generic mode veth records no rx queue (it does only with NAPI, i.e. native
//!   XDP or GRO on), so the program sees `rx_queue_index == 0` for everything.
//! - Zero-copy bind on veth fails with EOPNOTSUPP; native mode in copy works (that is what `Auto`
//!   gets on veth: "mode=native copy").
//! - The XDP program detaches when its `BPF_LINK_CREATE` fd closes (port drop or process exit);
//!   `ip -d link show DEV` shows no `xdp` line afterwards. An already attached (netlink) XDP
//!   program makes `BPF_LINK_CREATE` fail with EBUSY.

mod ring;
pub mod socket;
pub mod xdp;

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use crate::packet::{Desc, FRAME_SIZE, Frames, MAX_FRAME_LEN, Owner};
use crate::port::{Port, PortKind, TxResult};

use socket::{Umem, XskSocket};
use xdp::XdpProgram;

/// Bytes an Ethernet + VLAN header adds to the MTU.
const L2_OVERHEAD: u32 = 18;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, else generic.
    #[default]
    Auto,
    /// Native (driver) mode, `XDP_FLAGS_DRV_MODE`.
    Native,
    /// Generic (skb) mode, `XDP_FLAGS_SKB_MODE`.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

impl std::str::FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "native" | "drv" => Ok(XdpMode::Native),
            "generic" | "skb" => Ok(XdpMode::Generic),
            _ => Err(format!("unknown XDP mode {s:?} (auto, native, generic)")),
        }
    }
}

/// Options of an AF_XDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfxdpOptions {
    /// XDP attach mode.
    pub mode: XdpMode,
    /// Entries in each of a socket's four rings; a power of two.
    pub ring_size: u32,
    /// Frames kept in each socket's fill ring (so a port holds up to queues * fill_frames
    /// frames for receiving); at most `ring_size`.
    pub fill_frames: u32,
}

impl Default for AfxdpOptions {
    fn default() -> Self {
        AfxdpOptions {
            mode: XdpMode::Auto,
            ring_size: 2048,
            fill_frames: 1024,
        }
    }
}

/// Why an AF_XDP port could not be opened. Each message names the interface and the step.
#[derive(Debug, thiserror::Error)]
pub enum AfxdpError {
    /// No netdev of that name in this network namespace.
    #[error("{ifname}: netdev does not exist")]
    NoDevice { ifname: String },
    /// The MTU does not fit one frame.
    #[error(
        "{ifname}: MTU {mtu} too large: MTU + {L2_OVERHEAD} (Ethernet + VLAN header) must be at most {limit}, the largest frame uvs holds"
    )]
    MtuTooLarge {
        ifname: String,
        mtu: u32,
        limit: usize,
    },
    /// Bad [`AfxdpOptions`].
    #[error("{ifname}: invalid options: {reason}")]
    BadOptions { ifname: String, reason: String },
    /// A system call failed.
    #[error("{ifname}: {step} failed: {source}")]
    Sys {
        ifname: String,
        step: String,
        source: io::Error,
    },
    /// The kernel refused the XDP program; `log` is the verifier's log.
    #[error("{ifname}: BPF_PROG_LOAD failed: {source}; verifier log: {log}")]
    ProgLoad {
        ifname: String,
        source: io::Error,
        log: String,
    },
}

impl AfxdpError {
    pub(crate) fn sys(ifname: &str, step: impl Into<String>, source: io::Error) -> AfxdpError {
        AfxdpError::Sys {
            ifname: ifname.to_string(),
            step: step.into(),
            source,
        }
    }

    /// The errno behind this error, if a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            AfxdpError::Sys { source, .. } | AfxdpError::ProgLoad { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// Kernel counters of a port, summed over its sockets (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfxdpStats {
    /// Received frames dropped by the kernel (e.g. rx ring full).
    pub rx_dropped: u64,
    /// Invalid descriptors found in fill rings.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors found in the tx ring.
    pub tx_invalid_descs: u64,
    /// Times a frame arrived with the rx ring full.
    pub rx_ring_full: u64,
    /// Times a frame arrived with the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the tx ring empty when woken.
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP port on an existing netdev.
pub struct AfxdpPort {
    /// First field: dropped first, so the program detaches before the sockets close.
    xdp: Option<XdpProgram>,
    socks: Vec<XskSocket>,
    ifname: String,
    port_id: u16,
    mode: XdpMode,
    mtu: u32,
    zero_copy: bool,
    fill_frames: u32,
    rx_next: usize,
    tx_outstanding: u32,
}

impl AfxdpPort {
    /// Open `ifname` as port `port_id`. See the module doc.
    pub fn open(
        ifname: &str,
        port_id: u16,
        frames: &mut Frames,
        shared: Option<RawFd>,
        opts: &AfxdpOptions,
    ) -> Result<AfxdpPort, AfxdpError> {
        check_options(ifname, opts)?;
        let ifindex = ifindex(ifname)?;
        let mtu = read_mtu(ifname)?;
        if (mtu + L2_OVERHEAD) as usize > MAX_FRAME_LEN {
            return Err(AfxdpError::MtuTooLarge {
                ifname: ifname.to_string(),
                mtu,
                limit: MAX_FRAME_LEN,
            });
        }
        let queues = rx_queues(ifname)?;
        let xdp = XdpProgram::attach(ifname, ifindex, queues, opts.mode)?;
        let mut port = AfxdpPort {
            mode: xdp.mode,
            xdp: Some(xdp),
            socks: Vec::with_capacity(queues as usize),
            ifname: ifname.to_string(),
            port_id,
            mtu,
            zero_copy: false,
            fill_frames: opts.fill_frames,
            rx_next: 0,
            tx_outstanding: 0,
        };
        for q in 0..queues {
            let sock = match (shared, port.socks.first()) {
                (Some(fd), _) => open_socket(ifname, ifindex, q, opts, Umem::Shared(fd), false)?,
                (None, Some(first)) => {
                    let fd = first.fd();
                    open_socket(ifname, ifindex, q, opts, Umem::Shared(fd), false)?
                }
                (None, None) => {
                    let r = frames.region();
                    let umem = Umem::Register {
                        base: r.base(),
                        len: r.len(),
                    };
                    open_socket(ifname, ifindex, q, opts, umem, port.mode == XdpMode::Native)?
                }
            };
            port.socks.push(sock);
        }
        port.zero_copy = port.socks.first().is_some_and(|s| is_zero_copy(s.fd()));
        port.refill(frames);
        let xdp = port.xdp.as_ref().expect("just attached");
        let inserted = port
            .socks
            .iter()
            .try_for_each(|s| xdp.insert(ifname, s.queue, s.fd()));
        if let Err(e) = inserted {
            port.close(frames);
            return Err(e);
        }
        Ok(port)
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

    /// Number of queues (sockets).
    pub fn queues(&self) -> usize {
        self.socks.len()
    }

    /// Frames received on each queue since open (index = queue id).
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

    /// Top every fill ring up to `fill_frames` frames held for receiving.
    fn refill(&mut self, frames: &mut Frames) {
        let owner = Owner::Port(self.port_id);
        for s in &mut self.socks {
            let want = self.fill_frames.saturating_sub(s.rx_held);
            if want == 0 {
                continue;
            }
            let n = s.fill.reserve(want);
            let mut k = 0;
            while k < n {
                let Some(chunk) = frames.alloc_chunk(owner) else {
                    break;
                };
                s.fill.write(k, chunk);
                k += 1;
            }
            if k > 0 {
                s.fill.submit(k);
                s.rx_held += k;
            }
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
        if self.tx_outstanding > 0
            && s.tx.in_flight() > 0
            && (!self.zero_copy || s.tx.needs_wakeup())
        {
            s.kick_tx();
        }
    }
}

/// Open one socket; the registering socket tries zero-copy first when `try_zc`.
fn open_socket(
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

fn is_zero_copy(fd: RawFd) -> bool {
    let mut o = libc::xdp_options { flags: 0 };
    let mut len = size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: `o`/`len` are live and sized as declared.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut o as *mut libc::xdp_options).cast(),
            &mut len,
        )
    };
    r == 0 && o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0
}

fn check_options(ifname: &str, o: &AfxdpOptions) -> Result<(), AfxdpError> {
    let bad = |reason: String| {
        Err(AfxdpError::BadOptions {
            ifname: ifname.to_string(),
            reason,
        })
    };
    if !o.ring_size.is_power_of_two() || !(64..=1 << 16).contains(&o.ring_size) {
        return bad(format!(
            "ring_size {} must be a power of two in 64..=65536",
            o.ring_size
        ));
    }
    if o.fill_frames == 0 || o.fill_frames > o.ring_size {
        return bad(format!(
            "fill_frames {} must be in 1..={} (ring_size)",
            o.fill_frames, o.ring_size
        ));
    }
    Ok(())
}

fn ifindex(ifname: &str) -> Result<u32, AfxdpError> {
    let none = || AfxdpError::NoDevice {
        ifname: ifname.to_string(),
    };
    let c = std::ffi::CString::new(ifname).map_err(|_| none())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(none()) } else { Ok(idx) }
}

fn read_mtu(ifname: &str) -> Result<u32, AfxdpError> {
    let path = format!("/sys/class/net/{ifname}/mtu");
    let s = std::fs::read_to_string(&path)
        .map_err(|e| AfxdpError::sys(ifname, format!("reading {path}"), e))?;
    s.trim().parse().map_err(|_| {
        AfxdpError::sys(
            ifname,
            format!("reading {path}"),
            io::Error::other(format!("not a number: {:?}", s.trim())),
        )
    })
}

fn rx_queues(ifname: &str) -> Result<u32, AfxdpError> {
    let path = format!("/sys/class/net/{ifname}/queues");
    let dir = std::fs::read_dir(&path)
        .map_err(|e| AfxdpError::sys(ifname, format!("listing {path}"), e))?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    Ok(n.max(1))
}

/// A tx descriptor the kernel will accept: non-empty and inside one chunk.
#[inline]
fn tx_valid(d: &Desc) -> bool {
    d.len > 0 && (d.addr & (FRAME_SIZE as u64 - 1)) + d.len as u64 <= FRAME_SIZE as u64
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
                out.push(Desc {
                    addr: d.addr,
                    len: d.len,
                });
            }
            if avail > 0 {
                s.rx.release(avail);
                s.rx_held -= avail;
                s.rx_packets += avail as u64;
                got += avail;
            }
        }
        self.rx_next = (self.rx_next + 1) % n;
        got as usize
    }

    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let mut res = TxResult::default();
        let owner = Owner::Port(self.port_id);
        let Some(s) = self.socks.first_mut() else {
            res.dropped = batch.len() as u32;
            for d in batch.drain(..) {
                frames.free(d.addr);
            }
            return res;
        };
        let room = s.tx.reserve(batch.len().min(u32::MAX as usize) as u32);
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
            if !self.zero_copy || s.tx.needs_wakeup() {
                s.kick_tx();
            }
        }
        res
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

    fn partial_csum_in(&self) -> bool {
        true
    }

    fn details(&self) -> String {
        format!(
            "mode={} {} queues={} mtu={}",
            self.mode,
            if self.zero_copy { "zero-copy" } else { "copy" },
            self.socks.len(),
            self.mtu
        )
    }

    fn close(&mut self, frames: &mut Frames) {
        self.xdp = None;
        self.socks.clear();
        self.tx_outstanding = 0;
        frames.reclaim(Owner::Port(self.port_id));
    }
}

impl fmt::Debug for AfxdpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AfxdpPort({} id={} {})",
            self.ifname,
            self.port_id,
            self.details()
        )
    }
}
