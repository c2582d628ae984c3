//! TCP checksums on the wire: a tshark capture in a namespace, each frame's TCP checksum found
//! complete and right, or the right partial (pseudo-header) sum that a CHECKSUM_PARTIAL frame
//! carries between a veth and its peer.

use super::netns::tshark;

/// tshark arguments that print, per captured TCP frame from `src`: checksum status, IP
/// addresses, IP total and header length, TCP checksum, frame length.
pub fn tcp_fields(filter: &str) -> Vec<String> {
    [
        "-c",
        "300",
        "-f",
        filter,
        "-o",
        "tcp.check_checksum:TRUE",
        "-T",
        "fields",
        "-e",
        "tcp.checksum.status",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "ip.len",
        "-e",
        "ip.hdr_len",
        "-e",
        "tcp.checksum",
        "-e",
        "frame.len",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The folded pseudo-header sum a partial TCP checksum field holds (what the kernel writes
/// with CHECKSUM_PARTIAL): source, destination, protocol 6, TCP length.
pub fn pseudo_sum(src: &str, dst: &str, tcp_len: u32) -> u16 {
    let mut s: u32 = 6 + tcp_len;
    for a in [src, dst] {
        let ip: std::net::Ipv4Addr = a.parse().expect("ipv4");
        let o = ip.octets();
        s += u32::from(u16::from_be_bytes([o[0], o[1]]))
            + u32::from(u16::from_be_bytes([o[2], o[3]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// What a capture shows: (frames, frames with a complete right checksum, frames with the right
/// partial sum, bad ones as text, longest frame, average frame length).
pub struct Wire {
    pub frames: usize,
    pub good: usize,
    pub partial: usize,
    pub bad: Vec<String>,
    pub longest: usize,
    pub average: usize,
}

pub fn check_wire(out: &str) -> Wire {
    let mut w = Wire {
        frames: 0,
        good: 0,
        partial: 0,
        bad: Vec::new(),
        longest: 0,
        average: 0,
    };
    let mut total = 0;
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() < 7 || f[1].is_empty() {
            continue;
        }
        w.frames += 1;
        let len: usize = f[6].parse().unwrap_or(0);
        total += len;
        w.longest = w.longest.max(len);
        if f[0] == "1" {
            w.good += 1;
            continue;
        }
        let ip_len: u32 = f[3].parse().unwrap_or(0);
        let hl: u32 = f[4].parse().unwrap_or(0);
        let field = u16::from_str_radix(f[5].trim_start_matches("0x"), 16).unwrap_or(0);
        let want = pseudo_sum(f[1], f[2], ip_len.saturating_sub(hl));
        if field == want || (want == 0xffff && field == 0) {
            w.partial += 1;
        } else {
            w.bad
                .push(format!("{l} (partial sum would be {want:#06x})"));
        }
    }
    w.average = total / w.frames.max(1);
    w
}

/// Capture TCP frames matching `filter` on `dev` in `ns` while `load` runs; returns the
/// capture's verdict and what `load` returned.
pub fn capture_during<T>(ns: &str, dev: &str, filter: &str, load: impl FnOnce() -> T) -> (Wire, T) {
    let args = tcp_fields(filter);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cap = tshark(ns, dev, &args);
    let r = load();
    let out = cap.wait_with_output().expect("tshark");
    let w = check_wire(&String::from_utf8_lossy(&out.stdout));
    eprintln!(
        "{ns}/{dev}: {} TCP frames, {} complete, {} partial, {} bad, longest {} B, average {} B",
        w.frames,
        w.good,
        w.partial,
        w.bad.len(),
        w.longest,
        w.average
    );
    (w, r)
}
