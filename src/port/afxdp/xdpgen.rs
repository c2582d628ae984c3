//! A packet generator for benchmarks that costs the kernel no skb and no syscall per frame:
//! XDP "live frames" (`BPF_PROG_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+, the
//! mechanism behind xdp-tools' `xdp-trafficgen`).
//!
//! Contract:
//! - [`Generator::new`] loads a 4-instruction XDP program, `return bpf_redirect(ifindex, 0)`,
//!   for netdev `ifname` (looked up in the calling thread's network namespace).
//! - [`Generator::run`] makes the kernel run that program on copies of one frame, `batch` at a
//!   time, for about `seconds`: every copy is redirected to the netdev's `ndo_xdp_xmit` (a veth
//!   puts it straight into its peer's receive ring, whose NAPI runs on this CPU). It returns how
//!   many copies the program redirected (offered, not delivered: a full peer ring drops them
//!   and the veth counts `peer_tq_xdp_xmit_err`).
//! - A veth's `ndo_xdp_xmit` needs its peer's NAPI: the peer has an XDP program (an AF_XDP
//!   switch port) or GRO on (`ethtool -K PEER gro on`); otherwise every frame is dropped.
//! - Needs CAP_BPF/CAP_NET_ADMIN. Errors name the step and the errno (with the verifier log
//!   for a program the kernel refused).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::xdp::{bpf, insn, load_xdp};

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`.
const LIVE_FRAMES: u32 = 1 << 1;
/// `BPF_FUNC_redirect`.
const BPF_FUNC_REDIRECT: i32 = 23;
/// Copies per `BPF_PROG_RUN` call at first; the loop sizes calls to [`CALL_S`] after that.
const FIRST_REPEAT: u32 = 16_384;
/// Seconds of frames per call. Each call costs ~24 ms of setup and teardown on Linux 6.18
/// during which nothing is offered (measured: 1 copy 0.02 ms, 20 copies 24 ms, 20,000 copies
/// 26 ms): long calls keep those gaps to a few percent of the run, so a switch behind the
/// generator stays saturated.
const CALL_S: f64 = 0.5;

/// `union bpf_attr` for BPF_PROG_TEST_RUN (`test`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// A failed step of the generator.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// No such netdev here.
    #[error("{0}: no such network device in this namespace")]
    NoDevice(String),
    /// The frame is shorter than an Ethernet header or longer than a page's room.
    #[error("frame: {0} bytes (14..=3,000)")]
    FrameLength(usize),
    /// The kernel refused the program.
    #[error("BPF_PROG_LOAD: {0}; verifier log: {1}")]
    Load(io::Error, String),
    /// The kernel refused the run (EINVAL: no live-frames support before Linux 5.18).
    #[error("BPF_PROG_RUN (live frames): {0}")]
    Run(io::Error),
}

/// The loaded redirect program and its frame.
pub struct Generator {
    prog: OwnedFd,
    frame: Vec<u8>,
}

impl Generator {
    /// Load the program that redirects every frame to `ifname`.
    pub fn new(ifname: &str, frame: &[u8]) -> Result<Self, GenError> {
        if !(14..=3000).contains(&frame.len()) {
            return Err(GenError::FrameLength(frame.len()));
        }
        let name = std::ffi::CString::new(ifname).map_err(|_| GenError::NoDevice(ifname.into()))?;
        // SAFETY: `name` is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(GenError::NoDevice(ifname.into()));
        }
        let prog = [
            // r1 = ifindex; r2 = 0 (flags) (BPF_ALU64 | BPF_MOV | BPF_K)
            insn(0xb7, 1, 0, 0, ifindex as i32),
            insn(0xb7, 2, 0, 0, 0),
            // call bpf_redirect; exit with its XDP_REDIRECT
            insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT),
            insn(0x95, 0, 0, 0, 0),
        ];
        let prog = load_xdp(&prog, "uvs_gen").map_err(|(e, log)| GenError::Load(e, log))?;
        Ok(Generator {
            prog,
            frame: frame.to_vec(),
        })
    }

    /// Offer copies of the frame for about `seconds`, `batch` per kernel batch (1..=256);
    /// returns the copies offered and the time taken.
    pub fn run(&self, seconds: f64, batch: u32) -> Result<(u64, Duration), GenError> {
        let start = Instant::now();
        let until = Duration::from_secs_f64(seconds.max(0.0));
        let mut repeat = FIRST_REPEAT;
        let mut sent = 0u64;
        while start.elapsed() < until {
            let call = Instant::now();
            let mut attr = TestRunAttr {
                prog_fd: self.prog.as_raw_fd() as u32,
                data_size_in: self.frame.len() as u32,
                data_in: self.frame.as_ptr() as u64,
                repeat,
                flags: LIVE_FRAMES,
                batch_size: batch.clamp(1, 256),
                ..Default::default()
            };
            match bpf(BPF_PROG_TEST_RUN, &mut attr) {
                Ok(_) => sent += u64::from(repeat),
                // A signal cut the run short; how far it got is not reported.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => break,
                Err(e) => return Err(GenError::Run(e)),
            }
            // Size the next call to CALL_S of frames, never past the end.
            let took = call.elapsed().as_secs_f64().max(1e-6);
            let left = until.saturating_sub(start.elapsed()).as_secs_f64();
            let rate = f64::from(repeat) / took;
            repeat = (rate * left.min(CALL_S)).clamp(1.0, 1e9) as u32;
        }
        Ok((sent, start.elapsed()))
    }
}
