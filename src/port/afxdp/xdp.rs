//! The XDP side of an AF_XDP port, with the raw `bpf()` syscall (no libbpf).
//!
//! Contract:
//! - [`XdpProgram::attach`] creates an `XSKMAP` (u32 queue id -> u32 socket fd), loads the
//!   6-instruction redirect program below and attaches it to the netdev with `BPF_LINK_CREATE`.
//!   The program is `bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`: a queue without a
//!   socket in the map passes its packets to the kernel stack.
//! - The program stays attached exactly as long as the returned value (its link fd) lives:
//!   dropping it, or the process exiting, detaches it. Nothing is pinned.
//! - [`XdpProgram::insert`] puts a bound socket into the map at its queue id.
//! - Errors carry the failing step and the errno; a failed program load carries the verifier log.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};

use super::{AfxdpError, XdpMode};

// Constants from linux/bpf.h and linux/if_link.h that libc 0.2.191 does not export.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type` value of BPF_XDP.
const BPF_XDP: u32 = 37;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_PASS: i32 = 2;
/// `BPF_FUNC_redirect_map`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BpfInsn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

pub(super) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// `union bpf_attr` for BPF_MAP_CREATE (leading fields; the kernel zero-extends).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD (leading fields).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE (leading fields, padded with zeros).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

/// Call `bpf(cmd, attr, sizeof attr)`; returns the non-negative result or the errno.
pub(super) fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of `union bpf_attr`; the kernel
    // reads/writes at most size_of::<A>() bytes of it. Pointers inside it are valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut A).cast::<libc::c_void>(),
            size_of::<A>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(super) fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf() as a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// The attached redirect program: link (attachment), map and program fds.
pub struct XdpProgram {
    /// Declared first so that it is dropped first: detach before closing anything else.
    link: OwnedFd,
    map: OwnedFd,
    _prog: OwnedFd,
    /// The mode that was attached.
    pub mode: XdpMode,
}

impl XdpProgram {
    /// Create the map (`queues` entries), load the program and attach it in `mode` to `ifindex`.
    pub fn attach(
        ifname: &str,
        ifindex: u32,
        queues: u32,
        mode: XdpMode,
    ) -> Result<XdpProgram, AfxdpError> {
        let map =
            create_xskmap(queues).map_err(|e| AfxdpError::sys(ifname, "BPF_MAP_CREATE", e))?;
        let prog = load_prog(map.as_raw_fd()).map_err(|(e, log)| AfxdpError::ProgLoad {
            ifname: ifname.to_string(),
            source: e,
            log,
        })?;
        let tries: &[XdpMode] = match mode {
            XdpMode::Auto => &[XdpMode::Native, XdpMode::Generic],
            XdpMode::Native => &[XdpMode::Native],
            XdpMode::Generic => &[XdpMode::Generic],
        };
        let mut earlier = String::new();
        let mut last = None;
        for &m in tries {
            let flags = if m == XdpMode::Native {
                XDP_FLAGS_DRV_MODE
            } else {
                XDP_FLAGS_SKB_MODE
            };
            let mut attr = LinkCreateAttr {
                prog_fd: prog.as_raw_fd() as u32,
                target_ifindex: ifindex,
                attach_type: BPF_XDP,
                flags,
                ..Default::default()
            };
            match bpf(BPF_LINK_CREATE, &mut attr) {
                Ok(fd) => {
                    return Ok(XdpProgram {
                        link: owned(fd),
                        map,
                        _prog: prog,
                        mode: m,
                    });
                }
                Err(e) => {
                    if let Some((pm, pe)) = last.replace((m, e)) {
                        earlier = format!(" after native failed with \"{pe}\"");
                        debug_assert_eq!(pm, XdpMode::Native);
                    }
                }
            }
        }
        let (m, e) = last.expect("at least one mode tried");
        Err(AfxdpError::sys(
            ifname,
            format!("BPF_LINK_CREATE ({m}){earlier}"),
            e,
        ))
    }

    /// Redirect queue `queue` to socket `xsk_fd`.
    pub fn insert(&self, ifname: &str, queue: u32, xsk_fd: RawFd) -> Result<(), AfxdpError> {
        let key = queue;
        let value = xsk_fd as u32;
        let mut attr = MapElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map(|_| ())
            .map_err(|e| AfxdpError::sys(ifname, format!("BPF_MAP_UPDATE_ELEM (queue {queue})"), e))
    }

    /// The link fd (closing it detaches the program).
    pub fn link_fd(&self) -> RawFd {
        self.link.as_raw_fd()
    }

    /// The ifindex the program is attached to now (None: detached, e.g. its netdev was
    /// deleted; the kernel reports ifindex 0 then).
    pub fn attached_ifindex(&self) -> Option<u32> {
        let mut info = LinkInfo::default();
        let mut attr = InfoByFdAttr {
            bpf_fd: self.link.as_raw_fd() as u32,
            info_len: size_of::<LinkInfo>() as u32,
            info: &mut info as *mut LinkInfo as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
        (info.ifindex != 0).then_some(info.ifindex)
    }

    /// The program attached by this process to `ifindex`, shared by every worker's port on
    /// that netdev (each worker inserts its own queues' sockets in its map), or a new one
    /// ([`XdpProgram::attach`]) if none is attached there. It detaches when the last port
    /// holding it drops it. A program whose netdev went away (an ifindex can be reused by a
    /// new netdev) is not handed out.
    pub fn shared(
        ifname: &str,
        ifindex: u32,
        queues: u32,
        mode: XdpMode,
    ) -> Result<Arc<XdpProgram>, AfxdpError> {
        static ATTACHED: Mutex<Vec<(u32, Weak<XdpProgram>)>> = Mutex::new(Vec::new());
        let mut all = ATTACHED.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(_, w)| w.strong_count() > 0);
        let live = all
            .iter()
            .filter(|(i, _)| *i == ifindex)
            .filter_map(|(_, w)| w.upgrade())
            .find(|p| p.attached_ifindex() == Some(ifindex));
        if let Some(p) = live {
            return Ok(p);
        }
        let p = Arc::new(XdpProgram::attach(ifname, ifindex, queues, mode)?);
        all.push((ifindex, Arc::downgrade(&p)));
        Ok(p)
    }
}

/// `BPF_OBJ_GET_INFO_BY_FD`'s part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_link_info` up to the XDP member of its union (at offset 16: the union holds
/// 8-byte aligned members), with room for the union's larger members.
#[repr(C, align(8))]
#[derive(Default)]
struct LinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _rest: [u32; 11],
}

fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"uvs_xsks");
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries.max(1),
        map_name: name,
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// Load the redirect program; on failure return the errno and the verifier log.
fn load_prog(map_fd: RawFd) -> Result<OwnedFd, (io::Error, String)> {
    let prog = [
        // r2 = *(u32 *)(r1 + 16): xdp_md.rx_queue_index (BPF_LDX | BPF_MEM | BPF_W)
        insn(0x61, 2, 1, 16, 0),
        // r1 = map (BPF_LD | BPF_IMM | BPF_DW, two slots, src = BPF_PSEUDO_MAP_FD)
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // r3 = XDP_PASS: the action when the map has no socket at this queue (BPF_ALU64|MOV|K)
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // call bpf_redirect_map (BPF_JMP | BPF_CALL)
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // exit (BPF_JMP | BPF_EXIT)
        insn(0x95, 0, 0, 0, 0),
    ];
    load_xdp(&prog, "uvs_xsks")
}

/// Load XDP program `prog` named `name` (at most 15 bytes); on failure return the errno and
/// the verifier log.
pub(super) fn load_xdp(prog: &[BpfInsn], name: &str) -> Result<OwnedFd, (io::Error, String)> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => return Ok(owned(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err((e, String::new())),
        Err(_) => {}
    }
    // Retry with the verifier log on, to report why.
    let mut log = vec![0u8; 64 * 1024];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((
                e,
                String::from_utf8_lossy(&log[..end]).trim_end().to_string(),
            ))
        }
    }
}
