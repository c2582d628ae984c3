//! Decapsulated inner frames waiting for their tunnel port's pass, grouped as they arrive.
//!
//! Contract: frames pushed with the same (tunnel port, partial-checksum flag) form one group and
//! keep their order in it; groups come out in the order their first frame went in. A group is
//! one burst of the inner pass (`Pipeline::tunnels`), so the pass needs no sort and no copy: the
//! common burst (one tunnel port behind one underlay port) is one group, and a push is one
//! compare with the last group and one store. The groups' vectors keep their capacity across
//! bursts (no allocation once warm).

use crate::fdb::PortId;
use crate::packet::Desc;

/// One group: the inner frames of one tunnel port whose outer frames came in on ports that
/// may (or may not) carry partial checksums.
#[derive(Default)]
pub(crate) struct Group {
    pub port: PortId,
    /// The outer frames came in on a port whose frames may carry partial checksums: only
    /// then can an inner frame's L4 checksum be partial (see `ingress`).
    pub partial: bool,
    pub frames: Vec<Desc>,
}

/// The groups of one burst (see the module docs).
#[derive(Default)]
pub(crate) struct InnerBursts {
    groups: Vec<Group>,
    /// Groups in use (the rest are kept for their capacity).
    used: usize,
}

impl InnerBursts {
    /// Append the inner frame `d` of tunnel port `port` to its group; returns the group's
    /// index, which [`InnerBursts::group_mut`] takes until the next `clear` or `drain`.
    #[inline(always)]
    pub fn push(&mut self, port: PortId, partial: bool, d: Desc) -> usize {
        if let Some(last) = self.used.checked_sub(1)
            && let g = &mut self.groups[last]
            && g.port == port
            && g.partial == partial
        {
            g.frames.push(d);
            return last;
        }
        self.push_new(port, partial, d)
    }

    /// The frames of group `group`, an index `push` returned since the last `clear` or
    /// `drain`, to append to (the frames of a burst from one tunnel port and peer: no compare).
    #[inline(always)]
    pub fn group_mut(&mut self, group: usize) -> &mut Vec<Desc> {
        debug_assert!(group < self.used);
        &mut self.groups[group].frames
    }

    /// `push` for a frame of another group than the last one.
    #[cold]
    #[inline(never)]
    fn push_new(&mut self, port: PortId, partial: bool, d: Desc) -> usize {
        let used = &mut self.groups[..self.used];
        if let Some(i) = used
            .iter()
            .position(|g| g.port == port && g.partial == partial)
        {
            used[i].frames.push(d);
            return i;
        }
        if self.used == self.groups.len() {
            self.groups.push(Group::default());
        }
        let g = &mut self.groups[self.used];
        (g.port, g.partial) = (port, partial);
        // (A drain dropped early leaves frames behind: they were the caller's to free.)
        g.frames.clear();
        g.frames.push(d);
        self.used += 1;
        self.used - 1
    }

    /// No frame waiting.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The groups in use, in the order their first frame was pushed.
    pub fn groups_mut(&mut self) -> &mut [Group] {
        &mut self.groups[..self.used]
    }

    /// Every waiting frame with its tunnel port, emptying the groups.
    pub fn drain(&mut self) -> impl Iterator<Item = (PortId, Desc)> + '_ {
        let used = std::mem::take(&mut self.used);
        self.groups[..used].iter_mut().flat_map(|g| {
            let port = g.port;
            g.frames.drain(..).map(move |d| (port, d))
        })
    }

    /// Forget every group (their frames must have been taken or freed).
    pub fn clear(&mut self) {
        for g in &mut self.groups[..self.used] {
            g.frames.clear();
        }
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u64) -> Desc {
        Desc::new(i * 4096, 60)
    }

    fn contents(b: &mut InnerBursts) -> Vec<(PortId, bool, Vec<u64>)> {
        b.groups_mut()
            .iter()
            .map(|g| {
                (
                    g.port,
                    g.partial,
                    g.frames.iter().map(|x| x.addr / 4096).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn frames_are_grouped_by_port_and_flag_in_order_of_arrival() {
        let mut b = InnerBursts::default();
        assert!(b.is_empty());
        // Port 3 first, then 2, then 3 with partial checksums, interleaved.
        for (i, (p, partial)) in [
            (3, false),
            (3, false),
            (2, false),
            (3, false),
            (3, true),
            (2, false),
        ]
        .into_iter()
        .enumerate()
        {
            b.push(p, partial, d(i as u64));
        }
        assert!(!b.is_empty());
        assert_eq!(
            contents(&mut b),
            vec![
                (3, false, vec![0, 1, 3]),
                (2, false, vec![2, 5]),
                (3, true, vec![4]),
            ]
        );
        b.clear();
        assert!(b.is_empty());
        assert!(contents(&mut b).is_empty());
        // Reused groups start empty, with the new burst's ports.
        b.push(7, true, d(9));
        assert_eq!(contents(&mut b), vec![(7, true, vec![9])]);
    }

    #[test]
    fn push_names_the_group_that_group_mut_gives() {
        let mut b = InnerBursts::default();
        let g3 = b.push(3, false, d(0));
        let g2 = b.push(2, false, d(1));
        assert_eq!((g3, g2), (0, 1));
        // An earlier group found again (not the last one), then appended to by index.
        assert_eq!(b.push(3, false, d(2)), g3);
        b.group_mut(g3).push(d(3));
        b.group_mut(g2).push(d(4));
        assert_eq!(b.push(2, false, d(5)), g2);
        assert_eq!(
            contents(&mut b),
            vec![(3, false, vec![0, 2, 3]), (2, false, vec![1, 4, 5])]
        );
    }

    #[test]
    fn drain_yields_every_frame_once_and_empties() {
        let mut b = InnerBursts::default();
        for i in 0..10u64 {
            b.push((i % 3) as PortId, i % 2 == 0, d(i));
        }
        let mut got: Vec<(PortId, u64)> = b.drain().map(|(p, x)| (p, x.addr / 4096)).collect();
        got.sort_by_key(|&(_, a)| a);
        let want: Vec<(PortId, u64)> = (0..10u64).map(|i| ((i % 3) as PortId, i)).collect();
        assert_eq!(got, want);
        assert!(b.is_empty());
        b.push(1, false, d(1));
        assert_eq!(contents(&mut b), vec![(1, false, vec![1])]);
    }
}
