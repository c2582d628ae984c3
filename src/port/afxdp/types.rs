//! The public vocabulary of AF_XDP ports: attach mode, options, errors and kernel counters.
//!
//! Contract: every [`AfxdpError`] message starts with the interface name and names the failing
//! step and, for system calls, the errno; [`AfxdpOptions::validate`] rejects options the kernel
//! would refuse later with a less helpful errno.

use std::fmt;
use std::io;

/// Bytes an Ethernet + VLAN header adds to the MTU.
pub(crate) const L2_OVERHEAD: u32 = 18;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfxdpOptions {
    /// XDP attach mode.
    pub mode: XdpMode,
    /// Entries in each of a socket's four rings; a power of two.
    pub ring_size: u32,
    /// The most frames one socket may hold for receiving (fill ring + rx ring), reached only
    /// under load and only as the frame budget lends them; at most `ring_size`.
    pub fill_frames: u32,
    /// Frames one socket holds for receiving when idle: its base in the frame budget. A port is
    /// admitted only if `queues * fill_min` frames can be committed to it.
    pub fill_min: u32,
    /// The most transmitted frames a port keeps in flight (tx + completion rings); more are
    /// dropped as `tx-ring-full`, so a stalled device cannot hold the pool.
    pub tx_max: u32,
    /// How long `bind` is retried while it answers EBUSY: a queue whose previous socket shared
    /// a UMEM stays busy until a kernel work item releases its pool (`xp_release_deferred`,
    /// which waits for the RTNL lock), so re-adding a port just deleted can meet it. Zero (the
    /// default) on the worker, which must not sleep; the off-worker open waits.
    pub busy_wait: std::time::Duration,
    /// `(worker, workers)` when several workers share the netdev: this port binds the queues
    /// [`super::rxq::owners`] gives `worker` (`q % workers` without pins), shares the netdev's XDP program with the other
    /// workers' ports (`XdpProgram::shared`) and transmits on its first queue; a worker left
    /// without a queue (fewer queues than workers) binds none and has its frames sent by the
    /// owner of queue `worker % queues` (`Port::tx_by_worker`). None: one worker, every
    /// queue.
    pub share: Option<(u32, u32)>,
    /// Queues pinned to workers (`rxq_affinity`, resolved to worker indexes): see
    /// [`super::rxq`]. Used only with `share`.
    pub pinned: Vec<super::rxq::Pin>,
}

impl Default for AfxdpOptions {
    fn default() -> Self {
        AfxdpOptions {
            mode: XdpMode::Auto,
            ring_size: 4096,
            fill_frames: 4096,
            fill_min: 128,
            tx_max: 1024,
            busy_wait: std::time::Duration::ZERO,
            share: None,
            pinned: Vec::new(),
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
    /// The frame budget cannot serve the port.
    #[error("{ifname}: frame budget: {source}")]
    Budget {
        ifname: String,
        source: crate::packet::budget::BudgetError,
    },
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

impl AfxdpOptions {
    /// Check the ring sizes; `ifname` only names the port in the error.
    pub fn validate(&self, ifname: &str) -> Result<(), AfxdpError> {
        let o = self;
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
        if o.fill_min == 0 || o.fill_min > o.fill_frames {
            return bad(format!(
                "fill_min {} must be in 1..={} (fill_frames)",
                o.fill_min, o.fill_frames
            ));
        }
        if o.tx_max == 0 || o.tx_max > o.ring_size {
            return bad(format!(
                "tx_max {} must be in 1..={} (ring_size)",
                o.tx_max, o.ring_size
            ));
        }
        Ok(())
    }
}
