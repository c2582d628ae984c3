//! Ingress stage: count, parse the Ethernet header and VLAN tag, classify into a VLAN by the
//! port's mode, refuse bad source MACs, complete partial checksums.

use super::{Dest, Meta, csum};
use crate::counters::DropReason;
use crate::datapath::{Datapath, VlanMode};
use crate::fdb::PortId;
use crate::packet::{Desc, Frames};
use crate::wire::{EtherType, ethernet};

/// Parse `batch` into `meta`. Returns the port's bridge, or None (all frames dropped) when the
/// port is unknown. `partial_csum`: whether to look for partial checksums to complete (None:
/// if the port says its frames may carry them).
pub(super) fn run(
    dp: &mut Datapath,
    frames: &mut Frames,
    in_port: PortId,
    batch: &mut Vec<Desc>,
    meta: &mut Vec<Meta>,
    partial_csum: Option<bool>,
) -> Option<u16> {
    let Some(port) = dp.ports.get_mut(in_port as usize).and_then(|p| p.as_mut()) else {
        for d in batch.drain(..) {
            frames.free(d.addr);
        }
        return None;
    };
    let bridge = port.bridge;
    let c = &mut port.counters;
    // A trunk whose list lacks VLAN 0 does not carry untagged frames: they are taken out
    // first (rare, out of line), so the per-frame parse checks nothing more for it.
    if let VlanMode::Trunk(set) = &port.vlan
        && !set.contains(0)
    {
        drop_untagged(frames, batch, c);
    }
    // Counted once per burst; the checksum flag is checked once per burst too.
    let (bytes, completed) = if partial_csum.unwrap_or(port.partial_csum_in) {
        parse_all::<true>(frames, batch, &port.vlan, c, meta)
    } else {
        parse_all::<false>(frames, batch, &port.vlan, c, meta)
    };
    c.rx_packets += batch.len() as u64;
    c.rx_bytes += bytes;
    c.csum_completed += completed;
    batch.clear();
    Some(bridge)
}

/// Parse every frame of `batch` into `meta` (dropped ones counted in `c` and freed); returns
/// the burst's bytes and the number of checksums completed. `FIX`: complete partial checksums.
#[inline(never)]
fn parse_all<const FIX: bool>(
    frames: &mut Frames,
    batch: &[Desc],
    mode: &VlanMode,
    c: &mut crate::counters::PortCounters,
    meta: &mut Vec<Meta>,
) -> (u64, u64) {
    let (mut bytes, mut completed) = (0u64, 0u64);
    // The VLAN of untagged (and priority-tagged) frames, read once per burst (a trunk's: 0;
    // one that does not carry them had them taken out already).
    let untagged = mode.untagged_vlan().unwrap_or(0);
    // Written in place behind the vector's length, which is set once at the end: a `push` per
    // frame re-read and re-stored the length and checked the capacity (~5 instructions a frame).
    meta.reserve(batch.len());
    let start = meta.len();
    let spare = &mut meta.spare_capacity_mut()[..batch.len()];
    let mut kept = 0;
    for &d in batch {
        bytes += d.len as u64;
        match classify(frames.data_mut(d), mode, untagged, FIX) {
            Ok((m, fixed)) => {
                completed += fixed as u64;
                spare[kept].write(Meta { desc: d, ..m });
                kept += 1;
            }
            Err(r) => {
                c.drop(r);
                frames.free(d.addr);
            }
        }
    }
    // SAFETY: the `kept` slots after `start` were written above (`spare` is the vector's
    // reserved capacity from `start` on), and `kept <= batch.len()` fits that capacity.
    unsafe { meta.set_len(start + kept) };
    (bytes, completed)
}

/// Parse one frame. Returns its metadata (desc left default) and whether a checksum was
/// completed.
#[inline(always)]
fn classify(
    data: &mut [u8],
    mode: &VlanMode,
    untagged: u16,
    fix_csum: bool,
) -> Result<(Meta, bool), DropReason> {
    let eth = ethernet::Frame::new_checked(&*data).map_err(|_| DropReason::Runt)?;
    let src = eth.src_u64();
    if is_group(src) {
        return Err(DropReason::SrcMulticast);
    }
    if src == 0 {
        return Err(DropReason::SrcZero);
    }
    let dst = eth.dst_u64();
    let (tagged, vid, l3_off, ethertype) = match eth.ethertype() {
        EtherType::VLAN => {
            // A tag needs an inner EtherType and something after it: a frame that ends right
            // after its tag is a runt (it was learned, then lost without a counter).
            if data.len() <= 18 {
                return Err(DropReason::Runt);
            }
            let tci = u16::from_be_bytes([data[14], data[15]]);
            let inner = u16::from_be_bytes([data[16], data[17]]);
            // A priority tag over another tag is refused on every port: taken as untagged, it
            // got a tagged frame in through an access port, or a VLAN a limited trunk does
            // not carry onto other trunks (the classic double-tag VLAN hop).
            if tci & 0x0fff == 0 && (inner == EtherType::VLAN || inner == EtherType::QINQ) {
                return Err(DropReason::VlanDenied);
            }
            (true, tci & 0x0fff, 18, inner)
        }
        EtherType::QINQ => return Err(DropReason::QinQ),
        t => (false, 0, 14, t),
    };
    // Untagged or priority-tagged frames join the access VLAN (a trunk's: VLAN 0, if it
    // carries it).
    let vlan = if vid == 0 {
        untagged
    } else {
        match mode {
            // VID 4095 is reserved (IEEE 802.1Q): no port carries it (the configuration
            // refuses it too).
            VlanMode::Trunk(set) if set.contains(vid) && vid != 4095 => vid,
            VlanMode::Native { .. } if mode.carries_tag(vid) && vid != 4095 => vid,
            _ => return Err(DropReason::VlanDenied),
        }
    };
    let completed = fix_csum && csum::complete(ethertype, &mut data[l3_off..]);
    Ok((
        Meta {
            desc: Desc::default(),
            vlan,
            tagged,
            dst,
            src,
            ethertype,
            l3: l3_off as u8,
            dest: Dest::Normal,
            raw: false,
        },
        completed,
    ))
}

/// A port that does not carry untagged frames (a trunk whose list lacks VLAN 0): take its
/// untagged and priority-tagged frames out of `batch`, counted as received and dropped
/// (`vlan-denied`). Frames too short to tell are left to the parse (a runt).
#[cold]
#[inline(never)]
fn drop_untagged(
    frames: &mut Frames,
    batch: &mut Vec<Desc>,
    c: &mut crate::counters::PortCounters,
) {
    batch.retain(|&d| {
        let data = frames.data(d);
        let tagged = data.len() < 16
            || (u16::from_be_bytes([data[12], data[13]]) == EtherType::VLAN
                && u16::from_be_bytes([data[14], data[15]]) & 0x0fff != 0);
        if !tagged {
            c.rx_packets += 1;
            c.rx_bytes += u64::from(d.len);
            // An 802.1ad frame is `qinq` here too, as on every other port.
            let qinq = u16::from_be_bytes([data[12], data[13]]) == EtherType::QINQ;
            c.drop(if qinq {
                DropReason::QinQ
            } else {
                DropReason::VlanDenied
            });
            frames.free(d.addr);
        }
        tagged
    });
}

/// True if `mac` (as u64) is a group address.
#[inline]
pub(super) fn is_group(mac: u64) -> bool {
    // The group bit is the lowest bit of the first byte: bit 40 of the packed address.
    mac & (1 << 40) != 0
}

#[cfg(test)]
mod tests {
    use super::is_group;
    use crate::wire::MacAddr;

    #[test]
    fn group_bit_matches_mac_addr() {
        for m in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "02:00:00:00:00:01",
            "00:11:22:33:44:55",
        ] {
            let m: MacAddr = m.parse().unwrap();
            assert_eq!(is_group(m.to_u64()), m.is_multicast(), "{m}");
        }
    }
}
