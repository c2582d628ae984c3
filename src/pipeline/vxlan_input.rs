//! `vxlan4-input`: VPP's `ip4-vxlan-bypass`, run on a burst as it comes off its port, before
//! `ethernet-input`. On a VTEP's underlay bridge (one whose gateway address is a tunnel's local
//! address, with no active flow table), the plain VXLAN packets to that gateway are taken out
//! of the burst and decapsulated at once: they never become [`Meta`]s, skip the underlay
//! bridge's forwarding and the router, and their inner frames are grouped in `decapped`
//! ([`InnerBursts`]: by tunnel port and partial-checksum flag) for the burst's tunnel pass.
//!
//! Contract:
//! - Taken: an untagged frame (on a port whose untagged VLAN is 0) to the gateway's MAC from a
//!   valid source MAC, IPv4 with a 20-byte header, not a fragment, UDP, to the gateway's
//!   address, a good header checksum, a total length the frame holds, a source that passes the
//!   bridge's reverse-path filter, to a UDP port a tunnel listens on. Everything else stays in
//!   the burst, in order, and runs the whole pipeline as before (the router decapsulates what
//!   it finds addressed to a tunnel, and counts what is wrong with the rest).
//! - The taken frames are counted as received on their port (`rx_packets`, `rx_bytes`, as
//!   `ethernet-input` counts the rest), and the underlay bridge learns their source MAC on that
//!   port (the peer VTEP's MAC, which encapsulation's egress lookup uses), once per source per
//!   burst, honouring the port's learning switch and MAC limit.
//! - A taken packet that is not good VXLAN for a tunnel (bad flags, unknown VNI or remote VTEP,
//!   truncated) is counted on its port by reason and freed; one whose inner frame is itself
//!   VXLAN to one of our tunnels is counted `vxlan-nested` on the tunnel port and freed; one a
//!   tunnel does not listen for (`vxlan::decap` says so) stays in the burst.
//! - The underlay's flow table, when active, decides first: then nothing is taken here (the
//!   router's path decapsulates after the flows, see tests/vxlan_mem.rs).

use super::inner::InnerBursts;
use super::{Dest, Meta, l2, vxlan};
use crate::datapath::Datapath;
use crate::fdb::PortId;
use crate::packet::{Desc, Frames};
use crate::udp_port_set::UdpPortSet;
use crate::wire::vxlan::HEADER_LEN as VXLAN_LEN;
use crate::wire::{EtherType, IpProtocol, ethernet, ipv4, udp};

/// Where the inner frame starts in an untagged outer frame with a 20-byte IPv4 header.
const INNER_AT: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + VXLAN_LEN;
/// The shortest outer frame that holds an inner Ethernet header.
const MIN_OUTER: usize = INNER_AT + ethernet::HEADER_LEN;
const L3: usize = ethernet::HEADER_LEN;

/// What a burst's frames are checked against: the underlay bridge's gateway and filter.
struct Underlay {
    bridge: u16,
    gw_mac: u64,
    gw_ip: [u8; 4],
    rp: crate::route::RpFilter,
    /// Inner frames behind this port may carry partial checksums.
    partial: bool,
}

/// The underlay `in_port`'s burst is checked against, if its frames can be taken here.
fn underlay(dp: &Datapath, in_port: PortId) -> Option<Underlay> {
    let port = dp.port(in_port)?;
    // Untagged frames from this port are in VLAN 0 (where gateways live).
    let untagged_in_0 = port.vlan.untagged_vlan() == Some(0);
    if !untagged_in_0 {
        return None;
    }
    let b = dp.bridge(port.bridge)?;
    let gw = b.gateway?;
    if (b.flows.active && !b.fail_open) || !dp.tunnel_locals.contains(&gw.ip) {
        return None;
    }
    Some(Underlay {
        bridge: port.bridge,
        gw_mac: gw.mac.to_u64(),
        gw_ip: gw.ip,
        rp: b.rp_filter,
        partial: port.partial_csum_in,
    })
}

/// Take the plain VXLAN packets to the underlay's gateway out of `batch` (see the module
/// docs); their inner frames are appended to `decapped`. Returns how many were taken.
pub(super) fn run(
    dp: &mut Datapath,
    frames: &mut Frames,
    in_port: PortId,
    batch: &mut Vec<Desc>,
    (decapped, memo): (&mut InnerBursts, &mut Option<Memo>),
    now: u64,
) -> usize {
    let Some(u) = underlay(dp, in_port) else {
        return 0;
    };
    // The last burst's template, if nothing changed since (see [`Memo`]).
    let mut remembered = memo
        .take()
        .filter(|m| m.in_port == in_port && m.second == now && m.epoch == dp.epoch());
    let mut burst = Burst {
        in_port,
        now,
        last: None,
        last_rp: None,
        last_src: u64::MAX,
    };
    let mut short: Option<Template> = None;
    // What the template's tunnel last learned from its remote.
    let mut learned = LastLearned::NOTHING;
    let (mut kept, mut bytes) = (0, 0u64);
    let mut i = 0;
    while i < batch.len() {
        if let Some(t) = &short {
            let (n, b) = t.take_run(
                dp,
                frames,
                &batch[i..],
                decapped.group_mut(t.group),
                &mut learned,
            );
            i += n;
            bytes += b;
            if i == batch.len() {
                break;
            }
        } else if let Some(m) = remembered.take() {
            // The burst's first frame compared with the last burst's template: taken like
            // the frames behind it, its inner frame opening the template's group.
            let d = batch[i];
            if let Some((inner, raw)) = frames
                .standard_data(d)
                .and_then(|data| m.template.take(data, d, &dp.tunnel_udp_ports))
            {
                learned = m.learned;
                if raw != learned.raw {
                    learned.learn(dp, frames, &m.template, d, raw);
                }
                i += 1;
                bytes += u64::from(d.len);
                let group = decapped.push(m.template.port, u.partial, inner);
                short = Some(Template {
                    group,
                    ..m.template
                });
                continue;
            }
        }
        let d = batch[i];
        i += 1;
        match full_check(dp, frames, &u, &mut burst, d) {
            Full::Keep => {
                batch[kept] = d;
                kept += 1;
            }
            Full::Taken(port, inner, t) => {
                // `decap` learned the inner source; the template's tunnel and remote are new.
                learned = LastLearned::NOTHING;
                bytes += u64::from(d.len);
                let group = decapped.push(port, u.partial, inner);
                short = Some(Template { group, ..t });
            }
            Full::Dropped => bytes += u64::from(d.len),
        }
    }
    // The template the burst ended with, else the unused one it was given.
    *memo = short
        .map(|template| Memo {
            in_port,
            second: now,
            epoch: dp.epoch(),
            template,
            learned,
        })
        .or(remembered);
    let taken = batch.len() - kept;
    batch.truncate(kept);
    if taken > 0
        && let Some(p) = dp.port_mut(in_port)
    {
        p.counters.rx_packets += taken as u64;
        p.counters.rx_bytes += bytes;
    }
    taken
}

/// A burst's last template, for the next burst from the same port: its first frame, when it
/// matches, is taken like the frames behind it instead of taking the full check (whose
/// reverse-path filter, tunnel lookup and learning of the outer source MAC were ~680
/// instructions, ~21 a frame of a 32-frame burst). Good only within the same second (`now`:
/// the outer source MAC is learned, so its FDB entry refreshed, at least once a second, and
/// the tunnel relearns its inner MACs as often) and while [`Datapath::epoch`] holds (no
/// configuration or table changed from outside forwarding since). One such change forwarding
/// itself can make is not seen: the underlay bridge learning the peer VTEP's MAC on another
/// port (another frame from that MAC); it is learned back within the second.
#[derive(Clone, Copy)]
pub(super) struct Memo {
    in_port: PortId,
    second: u64,
    epoch: u64,
    /// Its `group` is the last burst's: replaced when used.
    template: Template,
    /// What the template's tunnel last learned from its remote.
    learned: LastLearned,
}

/// The inner source a template's tunnel last learned from its remote, so that a run of
/// frames from one source learns it once: the inner frame's bytes 6..14 (source MAC and
/// EtherType) as one word, compared first (one load), and its (VLAN, MAC) key.
#[derive(Clone, Copy)]
struct LastLearned {
    /// Bytes 6..14 of the last untagged inner frame learned; `u64::MAX` after a tagged one
    /// (its VID lies past the word, so the key decides for every tagged frame). All-ones bytes
    /// are a broadcast source, which `ethernet-input` drops: not learned from a run.
    raw: u64,
    /// VLAN << 48 | MAC (`u64::MAX`: nothing; a key is below 2^60).
    key: u64,
}

impl LastLearned {
    const NOTHING: LastLearned = LastLearned {
        raw: u64::MAX,
        key: u64::MAX,
    };

    /// The inner frame of `d` (taken by `t`; bytes 6..14 `raw`) differs from the last one
    /// learned in those bytes: learn its (VLAN, MAC) on `t`'s tunnel unless that is the last
    /// key learned. Out of line: a run's frames mostly share their source.
    #[cold]
    #[inline(never)]
    fn learn(&mut self, dp: &mut Datapath, frames: &Frames, t: &Template, d: Desc, raw: u64) {
        let Some(inner) = frames.standard_data(d).and_then(|b| b.get(INNER_AT..)) else {
            return;
        };
        let src = ethernet::Frame::new_unchecked(inner).src_u64();
        let vlan = crate::wire::vlan::tci(inner).map(|t| t & 0x0fff);
        self.raw = if vlan.is_some() { u64::MAX } else { raw };
        let key = src | u64::from(vlan.unwrap_or(0)) << 48;
        if self.key != key {
            self.key = key;
            vxlan::learn_remote(dp, t.port, vlan.unwrap_or(0), src, t.remote());
        }
    }
}

/// What the full check remembers within a burst.
struct Burst {
    in_port: PortId,
    now: u64,
    /// The last tunnel `vxlan::decap` accepted.
    last: Option<vxlan::DecapHit>,
    /// The last source address the reverse-path filter judged, and its verdict.
    last_rp: Option<([u8; 4], bool)>,
    /// The outer source MAC last checked and learned.
    last_src: u64,
}

/// The full check's verdict on one frame.
enum Full {
    /// Not taken: it stays in the burst.
    Keep,
    /// Decapsulated: (tunnel port, inner frame, what the next frames may be compared with).
    Taken(PortId, Desc, Template),
    /// Counted on the port by reason and freed.
    Dropped,
}

/// Check every condition of the module docs on the frame `d`, learn its outer source MAC, and
/// decapsulate it (`vxlan::decap`). Out of line: mostly once per burst, after which the
/// burst's frames take [`Template::take`].
#[inline(never)]
fn full_check(
    dp: &mut Datapath,
    frames: &mut Frames,
    u: &Underlay,
    b: &mut Burst,
    d: Desc,
) -> Full {
    let data = frames.data(d);
    let Some(h) = data.first_chunk::<MIN_OUTER>() else {
        return Full::Keep;
    };
    let eth = ethernet::Frame::new_unchecked(&h[..]);
    let ip = ipv4::Packet::new_unchecked(&h[L3..L3 + ipv4::MIN_HEADER_LEN]);
    if eth.dst_u64() != u.gw_mac || eth.ethertype() != EtherType::IPV4 || ip.dst() != u.gw_ip {
        return Full::Keep;
    }
    let Some(total) = plain_udp(h, data.len()) else {
        return Full::Keep;
    };
    let src = eth.src_u64();
    if src != b.last_src {
        if super::ingress::is_group(src) || src == 0 || src == u.gw_mac {
            // `ethernet-input` (`l2-learn` for the gateway's MAC) drops and counts it.
            return Full::Keep;
        }
        l2::learn_one(dp, u.bridge, b.in_port, (0, src), b.now);
        b.last_src = src;
    }
    let remote = ip.src();
    let rp_ok = match b.last_rp {
        Some((s, ok)) if s == remote => ok,
        _ => {
            let ok = dp.routes.rp_ok(u.rp, u.bridge, remote);
            b.last_rp = Some((remote, ok));
            ok
        }
    };
    if !rp_ok {
        return Full::Keep;
    }
    let dport = udp::Datagram::new_unchecked(&h[L3 + ipv4::MIN_HEADER_LEN..]).dst_port();
    if !dp.tunnel_udp_ports.contains(dport) {
        return Full::Keep;
    }
    let t = Template::of(h);
    let m = outer_meta(d, src, eth.dst_u64());
    match vxlan::decap(dp, frames, &m, (ipv4::MIN_HEADER_LEN, total), &mut b.last) {
        Ok(Some(vxlan::Opened::Inner(port, inner))) => {
            Full::Taken(port, inner, Template { port, ..t })
        }
        Ok(Some(vxlan::Opened::Dropped)) => {
            frames.free(d.addr);
            Full::Dropped
        }
        Ok(None) => Full::Keep,
        Err(r) => {
            vxlan::count(dp, b.in_port, r);
            frames.free(d.addr);
            Full::Dropped
        }
    }
}

/// The VXLAN flags byte's I bit and the VNI, within the 8 bytes of the VXLAN header read as
/// one word: the reserved fields are ignored on receipt (RFC 7348).
const VX_MASK: u64 = u64::from_ne_bytes([0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0]);

/// What a frame taken by the full check shares with the frames behind it in the burst from the
/// same peer VTEP to the same tunnel: the Ethernet header (the gateway's MAC, a source MAC
/// already checked and learned, IPv4), the IPv4 addresses (a remote the reverse-path filter
/// and the tunnel accepted, the gateway's address), the UDP port and the VXLAN I flag and VNI,
/// and the IPv4 version and header length (0x45: the word at byte 7 holds them; it ends before
/// the TOS, byte 15, which may change from packet to packet of one peer, `tos inherit`, and
/// which no check depends on). A frame that equals it there, is UDP and not a fragment
/// ([`PLAIN_UDP`], a constant) and has a good checksum and consistent lengths passes every
/// check the full one would make. Compared as whole words (native byte order: only equality matters).
#[derive(Clone, Copy)]
struct Template {
    /// Bytes 0..8 and 7..15 (up to the IPv4 version/IHL; the TOS, byte 15, left out).
    eth: [u64; 2],
    /// Bytes 26..34: source and destination address.
    ips: u64,
    /// Bytes 36..38: the UDP destination port.
    dport: [u8; 2],
    /// Bytes 42..50 under [`VX_MASK`].
    vx: u64,
    port: PortId,
    /// The `decapped` group its inner frames go to (`InnerBursts::group_mut`).
    group: usize,
}

/// Bytes 20..28 of an outer frame under [`FRAG_PROTO`] equal [`PLAIN_UDP`] when the packet is
/// UDP and not a fragment (MF clear, offset 0; DF, the TTL and the checksum ignored).
const FRAG_PROTO: u64 = u64::from_ne_bytes([0x3f, 0xff, 0, 0xff, 0, 0, 0, 0]);
const PLAIN_UDP: u64 = u64::from_ne_bytes([0, 0, 0, 17, 0, 0, 0, 0]);

/// `N` bytes at `at` of `h` as a native-order word.
#[inline(always)]
fn word<const N: usize>(h: &[u8; MIN_OUTER], at: usize) -> [u8; N] {
    *h[at..]
        .first_chunk::<N>()
        .expect("within the outer headers")
}

impl Template {
    fn of(h: &[u8; MIN_OUTER]) -> Template {
        Template {
            eth: [
                u64::from_ne_bytes(word(h, 0)),
                u64::from_ne_bytes(word(h, 7)),
            ],
            ips: u64::from_ne_bytes(word(h, L3 + 12)),
            dport: word(h, L3 + ipv4::MIN_HEADER_LEN + 2),
            vx: u64::from_ne_bytes(word(h, INNER_AT - VXLAN_LEN)) & VX_MASK,
            port: 0,
            group: 0,
        }
    }

    /// The peer VTEP's address.
    fn remote(&self) -> [u8; 4] {
        *self.ips.to_ne_bytes().first_chunk().expect("8 bytes")
    }

    /// Decapsulate the frames at the head of `outer` that [`Template::take`] accepts: their
    /// inner frames are appended to `group` (the template's), the tunnel learns each inner
    /// (VLAN, MAC) that differs from `learned` (the last one it learned from this template's
    /// remote, see [`LastLearned`]). Returns how many outer frames were taken and their
    /// bytes. Out of line, so the loop keeps the template in registers (the burst's other
    /// frames take the full check).
    #[inline(never)]
    fn take_run(
        &self,
        dp: &mut Datapath,
        frames: &Frames,
        outer: &[Desc],
        group: &mut Vec<Desc>,
        learned: &mut LastLearned,
    ) -> (usize, u64) {
        // The inner frames are written straight into `group`'s spare capacity and its length
        // set once at the end: `Vec::push` reloaded and stored the vector's length and checked
        // its capacity on every frame (the learning call in the loop is opaque to the
        // compiler), and a local array appended in chunks cost a `memcpy` a burst.
        group.reserve(outer.len());
        let spare = group.spare_capacity_mut();
        let (mut n, mut bytes) = (0, 0u64);
        for (slot, &d) in spare.iter_mut().zip(outer) {
            // A large buffer's frame ends the run (the full check takes it).
            let Some((inner, raw)) = frames
                .standard_data(d)
                .and_then(|data| self.take(data, d, &dp.tunnel_udp_ports))
            else {
                break;
            };
            // The tunnel learns each (VLAN, MAC) once per run of it here; `Tunnel::learn`
            // keeps its own last-learned check across bursts.
            if raw != learned.raw {
                learned.learn(dp, frames, self, d, raw);
            }
            bytes += u64::from(d.len);
            slot.write(inner);
            n += 1;
        }
        // SAFETY: the loop initialised the first `n` slots of the spare capacity (each taken
        // frame wrote its slot before `n` counted it), and `n <= outer.len()`, which
        // `reserve` made room for.
        unsafe { group.set_len(group.len() + n) };
        (n, bytes)
    }

    /// The inner frame of the outer frame `d` (whose bytes are `data`), and its bytes 6..14
    /// (source MAC and EtherType, for learning: [`LastLearned`]), if it matches (see
    /// [`Template`]) and is not itself VXLAN to one of our tunnel UDP `ports`
    /// (`vxlan::nested`). None: for the full check.
    #[inline(always)]
    fn take(&self, data: &[u8], d: Desc, ports: &UdpPortSet) -> Option<(Desc, u64)> {
        let h = data.first_chunk::<MIN_OUTER>()?;
        if u64::from_ne_bytes(word(h, 0)) != self.eth[0]
            || u64::from_ne_bytes(word(h, 7)) != self.eth[1]
            || u64::from_ne_bytes(word(h, L3 + 12)) != self.ips
            || word::<2>(h, L3 + ipv4::MIN_HEADER_LEN + 2) != self.dport
            || u64::from_ne_bytes(word(h, INNER_AT - VXLAN_LEN)) & VX_MASK != self.vx
            || u64::from_ne_bytes(word(h, L3 + 6)) & FRAG_PROTO != PLAIN_UDP
        {
            return None;
        }
        // Version and header length are the template's (0x45), the protocol UDP, no
        // fragment: what `plain_udp` checks besides these.
        let total = fitting_total(h, data.len())?;
        let udp = udp::Datagram::new_unchecked(&h[L3 + ipv4::MIN_HEADER_LEN..]);
        if usize::from(udp.len()) != total - ipv4::MIN_HEADER_LEN {
            return None;
        }
        let inner_bytes = data.get(INNER_AT..L3 + total)?;
        if vxlan::nested(ports, inner_bytes) {
            // The full check drops it (`vxlan::decap`).
            return None;
        }
        let raw = u64::from_ne_bytes(word(h, INNER_AT + 6));
        let inner = Desc::new(d.addr + INNER_AT as u64, (total + L3 - INNER_AT) as u32);
        Some((inner, raw))
    }
}

/// The IPv4 total length of the outer frame whose first bytes are `h` (`len` bytes in all), if
/// its header is a plain one every taken packet needs: 20 bytes, UDP, not a fragment, a total
/// length that holds an inner Ethernet header and that the frame holds, a good checksum.
#[inline(always)]
fn plain_udp(h: &[u8; MIN_OUTER], len: usize) -> Option<usize> {
    let ip = ipv4::Packet::new_unchecked(&h[L3..L3 + ipv4::MIN_HEADER_LEN]);
    let plain = h[L3] == 0x45 && ip.ip_protocol() == IpProtocol::UDP && !ip.is_fragment();
    if !plain {
        return None;
    }
    fitting_total(h, len)
}

/// The IPv4 total length of the outer frame whose first bytes are `h` (`len` bytes in all), if
/// it holds an inner Ethernet header, the frame holds it, and the 20-byte header's checksum is
/// good (the part of [`plain_udp`] the burst shortcut still makes).
#[inline(always)]
fn fitting_total(h: &[u8; MIN_OUTER], len: usize) -> Option<usize> {
    let ip_h = word::<{ ipv4::MIN_HEADER_LEN }>(h, L3);
    let total = usize::from(u16::from_be_bytes([ip_h[2], ip_h[3]]));
    (total >= MIN_OUTER - L3 && total <= len - L3 && ipv4::checksum_ok(&ip_h)).then_some(total)
}

/// The metadata `ethernet-input` would give an untagged IPv4 frame on the underlay.
#[cold]
fn outer_meta(desc: Desc, src: u64, dst: u64) -> Meta {
    Meta {
        desc,
        vlan: 0,
        tagged: false,
        dst,
        src,
        ethertype: EtherType::IPV4,
        l3: L3 as u8,
        dest: Dest::Normal,
        raw: false,
    }
}
