//! `group:N`: the packet through group N. `all` runs each bucket on its own copy, `indirect`
//! its one bucket on a copy, `select` one bucket (weighted, by a hash of the packet's
//! addresses, protocol and ports, so a connection stays on one bucket) on a copy. The frame
//! itself goes on with the flow's next action. A missing group does nothing.

use super::{Credit, Emitted, Env, LIST, Stack, Start, Tracer, packet_key, run_clone};
use crate::flow::group::GroupType;
use crate::packet::Frames;
use crate::pipeline::Meta;

/// A hash of the fields a select group balances on.
fn flow_hash(k: &crate::flow::PacketKey) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in [
        k.dl_src,
        k.dl_dst,
        u64::from(k.nw_src),
        u64::from(k.nw_dst),
        u64::from(k.nw_proto),
        (u64::from(k.tp_src) << 16) | u64::from(k.tp_dst),
    ] {
        h = (h ^ v).wrapping_mul(0x100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

/// Run group `id` for frame `m` at (table, ct state, resubmit depth); whether a copy was sent
/// somewhere.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub(super) fn run<T: Tracer>(
    env: &mut Env,
    frames: &mut Frames,
    m: &Meta,
    out: &mut Emitted,
    credit: &mut Credit,
    stack: &mut Stack,
    t: &mut T,
    id: u32,
    (table, ct, depth): (u8, (u8, u16), usize),
) -> bool {
    let groups = env.groups;
    let Some(g) = groups.get(&id) else {
        t.line(|| format!("    group:{id}: no such group"));
        return false;
    };
    // A slice of the group's buckets: nothing is allocated per packet.
    let first = match g.kind {
        GroupType::All | GroupType::Indirect => 0,
        GroupType::Select => {
            let port = env.port;
            let k = packet_key(frames.data(m.desc), m, port.ofport, port.tun_id, ct);
            g.select(flow_hash(&k))
                .and_then(|b| g.buckets.iter().position(|x| std::ptr::eq(x, b)))
                .unwrap_or(g.buckets.len())
        }
    };
    let n = match g.kind {
        GroupType::All => g.buckets.len(),
        _ => 1,
    };
    let buckets = &g.buckets[first.min(g.buckets.len())..(first + n).min(g.buckets.len())];
    if !T::DRY {
        let st = env
            .group_stats
            .entry(id)
            .or_insert_with(|| crate::flow::group::GroupStats::of(g, env.now_ms));
        let len = u64::from(m.desc.len);
        st.packets += 1;
        st.bytes += len;
        for b in st.buckets.iter_mut().skip(first).take(buckets.len()) {
            b.0 += 1;
            b.1 += len;
        }
    }
    t.line(|| {
        format!(
            "    group:{id} ({}, {} bucket(s))",
            g.kind.name(),
            buckets.len()
        )
    });
    let mut sent = false;
    for b in buckets {
        let start = Start {
            prog: (LIST, 0),
            list: &b.actions,
            table,
            ct,
            base: depth + 1,
        };
        sent |= run_clone(env, frames, m, out, credit, stack, t, start);
        if stack.too_deep {
            break;
        }
    }
    sent
}
