//! Facts about the netdev read from the kernel: ifindex, MTU, number of rx queues.
//!
//! Contract: each function names the interface and the step in its error; nothing is cached.

use std::io;

use super::AfxdpError;

/// The interface index; `NoDevice` if there is no such netdev in this namespace.
pub fn ifindex(ifname: &str) -> Result<u32, AfxdpError> {
    let none = || AfxdpError::NoDevice {
        ifname: ifname.to_string(),
    };
    let c = std::ffi::CString::new(ifname).map_err(|_| none())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(none()) } else { Ok(idx) }
}

/// The MTU from `/sys/class/net/IF/mtu`.
pub fn read_mtu(ifname: &str) -> Result<u32, AfxdpError> {
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

/// The number of `rx-*` entries in `/sys/class/net/IF/queues` (at least 1).
pub fn rx_queues(ifname: &str) -> Result<u32, AfxdpError> {
    let path = format!("/sys/class/net/{ifname}/queues");
    let dir = std::fs::read_dir(&path)
        .map_err(|e| AfxdpError::sys(ifname, format!("listing {path}"), e))?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    Ok(n.max(1))
}
