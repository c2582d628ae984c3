//! Which worker polls which rx queue of a netdev (OVS's `pmd-rxq-assign`, `pmd-rxq-affinity`).
//!
//! Contract: [`owners`] is a pure function of the netdev's queue count, the number of workers
//! and the pinned queues, so every worker computes the same assignment on its own and each
//! binds exactly the queues it owns; no queue is bound by two workers, none is left unbound.
//! - A pinned queue (`rxq_affinity=QUEUE:CORE`) goes to the worker on that core. Pins naming a
//!   queue the netdev does not have are ignored (the queue count can change with the device).
//! - The other queues go round-robin, in queue order, to the workers that have no pinned queue
//!   (OVS's default `pmd-rxq-isolate=true`: a worker given a queue by hand polls only what it was
//!   given); when every worker has a pinned queue, to all workers.
//! - With no pin at all this is queue `q` -> worker `q % workers`.

/// One pinned queue: `(queue, worker index)`.
pub type Pin = (u32, u32);

/// The worker of each of `queues` rx queues (index = queue), see the module documentation.
pub fn owners(queues: u32, workers: u32, pinned: &[Pin]) -> Vec<u32> {
    let workers = workers.max(1);
    let pin_of = |q: u32| {
        pinned
            .iter()
            .rev()
            .find(|(pq, w)| *pq == q && *w < workers)
            .map(|&(_, w)| w)
    };
    let isolated: Vec<bool> = (0..workers)
        .map(|w| (0..queues).any(|q| pin_of(q) == Some(w)))
        .collect();
    let mut free: Vec<u32> = (0..workers).filter(|&w| !isolated[w as usize]).collect();
    if free.is_empty() {
        free = (0..workers).collect();
    }
    let mut next = 0usize;
    (0..queues)
        .map(|q| {
            pin_of(q).unwrap_or_else(|| {
                let w = free[next % free.len()];
                next += 1;
                w
            })
        })
        .collect()
}

/// The queues `worker` owns, in queue order.
pub fn mine(queues: u32, workers: u32, pinned: &[Pin], worker: u32) -> Vec<u32> {
    owners(queues, workers, pinned)
        .iter()
        .enumerate()
        .filter(|(_, w)| **w == worker)
        .map(|(q, _)| q as u32)
        .collect()
}

/// OVS's `pmd-rxq-assign=cycles` for `rxq-rebalance`: given each queue's measured load (any
/// unit: frames here), the worker of each queue, in input order. Queues go in order of
/// decreasing load (ties: input order) to the worker with the least load so far (ties: the
/// lowest number), so the busiest queues are spread first and the totals come out even.
pub fn balance(loads: &[u64], workers: u32) -> Vec<u32> {
    let workers = workers.max(1) as usize;
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(loads[i]));
    let mut total = vec![0u64; workers];
    let mut count = vec![0usize; workers];
    let mut out = vec![0u32; loads.len()];
    for i in order {
        // Least load; among equals the fewest queues, so idle queues spread too.
        let w = (0..workers)
            .min_by_key(|&w| (total[w], count[w], w))
            .expect("at least one worker");
        total[w] += loads[i];
        count[w] += 1;
        out[i] = w as u32;
    }
    out
}

/// [`balance`]'s assignment `to`, with the ports whose move does not help left where they
/// are (`from`): a port moved is reopened (down for a moment, its MACs learned again), so it
/// moves only if keeping it costs the busiest worker more than 5 % over the balanced
/// assignment. `port` names each queue's port (any id); ports are tried lightest first.
/// (Found trying uvs as a new user: a port already one queue per worker had its queues
/// swapped, reopened and pinned for nothing.)
pub fn sticky(
    loads: &[u64],
    from: &[u32],
    mut to: Vec<u32>,
    port: &[usize],
    workers: u32,
) -> Vec<u32> {
    let busiest = |a: &[u32]| {
        let mut t = vec![0u64; workers.max(1) as usize];
        for (i, l) in loads.iter().enumerate() {
            t[a[i] as usize] += l;
        }
        t.into_iter().max().unwrap_or(0)
    };
    let bound = busiest(&to) * 105 / 100;
    let mut ports: Vec<usize> = port.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let load_of = |p: usize| -> u64 {
        (0..loads.len())
            .filter(|&i| port[i] == p)
            .map(|i| loads[i])
            .sum()
    };
    ports.sort_by_key(|&p| load_of(p));
    for p in ports {
        let moved = (0..to.len()).any(|i| port[i] == p && to[i] != from[i]);
        if !moved {
            continue;
        }
        let mut trial = to.clone();
        for i in (0..trial.len()).filter(|&i| port[i] == p) {
            trial[i] = from[i];
        }
        if busiest(&trial) <= bound {
            to = trial;
        }
    }
    to
}

/// Parse `QUEUE:CORE[,QUEUE:CORE...]` (OVS's `pmd-rxq-affinity` syntax); empty: no pin. Errors
/// name the field and the bad item.
pub fn parse_affinity(text: &str) -> Result<Vec<(u32, usize)>, String> {
    let mut out: Vec<(u32, usize)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("rxq_affinity: '{item}' is not QUEUE:CORE (for example 0:1,1:3)");
        let (q, c) = item.split_once(':').ok_or_else(bad)?;
        let q: u32 = q.trim().parse().map_err(|_| bad())?;
        let c: usize = c.trim().parse().map_err(|_| bad())?;
        if q >= 1024 {
            return Err(format!("rxq_affinity: queue {q} out of range (0 to 1023)"));
        }
        if out.iter().any(|(pq, _)| *pq == q) {
            return Err(format!("rxq_affinity: queue {q} pinned twice"));
        }
        out.push((q, c));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The case found trying uvs as a new user: port 0's two busy queues both on worker 1,
    /// port 1 already one queue per worker. Port 0 is split; port 1 stays as it is.
    #[test]
    fn a_balanced_port_is_not_moved() {
        let loads = [80_341, 80_424, 20_336, 20_098];
        let from = [1, 1, 0, 1];
        let port = [0, 0, 1, 1];
        let to = balance(&loads, 2);
        assert_ne!(to[2..], from[2..], "balance alone swaps port 1: {to:?}");
        let kept = sticky(&loads, &from, to, &port, 2);
        assert_eq!(kept[2..], from[2..], "{kept:?}");
        assert_ne!(kept[0], kept[1], "port 0 is split: {kept:?}");
        // A port whose move is what balances the workers still moves.
        let kept = sticky(&[100, 100], &[0, 0], balance(&[100, 100], 2), &[0, 0], 2);
        assert_ne!(kept[0], kept[1]);
    }

    #[test]
    fn without_pins_queue_q_goes_to_worker_q_mod_workers() {
        assert_eq!(owners(4, 2, &[]), vec![0, 1, 0, 1]);
        assert_eq!(owners(1, 2, &[]), vec![0]);
        assert_eq!(owners(3, 1, &[]), vec![0, 0, 0]);
        assert_eq!(mine(4, 2, &[], 1), vec![1, 3]);
    }

    #[test]
    fn pinned_queues_isolate_their_worker() {
        // Queue 0 pinned to worker 1: worker 1 polls queue 0 only, worker 0 the rest.
        assert_eq!(owners(4, 2, &[(0, 1)]), vec![1, 0, 0, 0]);
        // Both queues on worker 1: worker 0 polls nothing.
        assert_eq!(owners(2, 2, &[(0, 1), (1, 1)]), vec![1, 1]);
        assert!(mine(2, 2, &[(0, 1), (1, 1)], 0).is_empty());
        // Every worker pinned: unpinned queues round-robin over all of them.
        assert_eq!(owners(4, 2, &[(0, 1), (1, 0)]), vec![1, 0, 0, 1]);
    }

    #[test]
    fn every_queue_has_exactly_one_owner() {
        let pins = [(5, 2), (1, 0), (9, 3)];
        for queues in 0..12 {
            for workers in 1..5 {
                let o = owners(queues, workers, &pins);
                assert_eq!(o.len(), queues as usize);
                let bound: usize = (0..workers)
                    .map(|w| mine(queues, workers, &pins, w).len())
                    .sum();
                assert_eq!(bound, queues as usize, "{queues} queues, {workers} workers");
                assert!(o.iter().all(|w| *w < workers));
            }
        }
    }

    #[test]
    fn pins_outside_the_device_or_the_workers_are_ignored() {
        assert_eq!(owners(2, 2, &[(7, 1)]), vec![0, 1]);
        assert_eq!(owners(2, 2, &[(0, 9)]), vec![0, 1]);
    }

    #[test]
    fn balance_spreads_the_busiest_queues_first() {
        // Two busy queues of one port land on different workers; the idle ones fill in.
        assert_eq!(balance(&[900, 10, 800, 0], 2), vec![0, 1, 1, 1]);
        let w = balance(&[100, 100, 0, 0], 2);
        assert_ne!(w[0], w[1]);
        assert_ne!(w[2], w[3]);
        // No load at all: round-robin by count.
        assert_eq!(balance(&[0, 0, 0, 0], 2), vec![0, 1, 0, 1]);
        // The largest total on a worker is within the largest queue of the ideal.
        let loads = [70, 60, 50, 40, 30, 20, 10];
        let w = balance(&loads, 3);
        let mut t = [0u64; 3];
        for (i, l) in loads.iter().enumerate() {
            t[w[i] as usize] += l;
        }
        let ideal = loads.iter().sum::<u64>() / 3;
        assert!(*t.iter().max().unwrap() <= ideal + 70, "{t:?}");
        assert_eq!(balance(&[5, 6], 1), vec![0, 0]);
    }

    #[test]
    fn affinity_text_parses_and_errors_name_the_field() {
        assert_eq!(parse_affinity("0:1, 1:3").unwrap(), vec![(0, 1), (1, 3)]);
        assert!(parse_affinity("").unwrap().is_empty());
        for bad in ["0", "a:1", "0:x", "0:1,0:2", "5000:1"] {
            let e = parse_affinity(bad).unwrap_err();
            assert!(e.starts_with("rxq_affinity: "), "{bad}: {e}");
        }
    }
}
