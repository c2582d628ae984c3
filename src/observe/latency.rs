//! Latency percentiles for the benchmarks: `uvs latency` reads `ping` output on stdin, records
//! every `time=X ms` sample in an HDR histogram (`hdrhistogram`, microsecond resolution, three
//! significant digits) and prints `p50 p99 p99.9 max count` (milliseconds, one line), so the
//! netns bench scripts report the same percentiles for uvs, the kernel and OVS from one run.
//! With fewer than 1000 samples p99.9 is the largest sample; the count is printed to say so.

use hdrhistogram::Histogram;

/// Percentiles of a set of round-trip times, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} {:.3} {:.3} {:.3} {}",
            self.p50, self.p99, self.p999, self.max, self.count
        )
    }
}

/// Every `time=X ms` (or `time<X ms`) value in `ping` output, in milliseconds.
pub fn ping_rtts(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| {
            let at = l.find("time=").or_else(|| l.find("time<"))?;
            let rest = &l[at + 5..];
            let num = rest.split_whitespace().next()?;
            let ms: f64 = num.parse().ok()?;
            let unit = rest.split_whitespace().nth(1).unwrap_or("ms");
            Some(if unit.starts_with("us") {
                ms / 1000.0
            } else {
                ms
            })
        })
        .filter(|v| v.is_finite() && *v >= 0.0)
        .collect()
}

/// Percentiles of `samples` (milliseconds); None when there are none.
pub fn percentiles(samples: &[f64]) -> Option<Percentiles> {
    // Microseconds from 1 µs to 1 hour, 3 significant digits.
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
    for s in samples {
        let us = (s * 1000.0).round().clamp(1.0, 3_600_000_000.0) as u64;
        h.record(us).ok()?;
    }
    if h.is_empty() {
        return None;
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Some(Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_lines() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
            64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.052 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=1.50 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time<1 ms\n\
            rtt min/avg/max/mdev = 0.052/0.776/1.500/0.724 ms\n";
        assert_eq!(ping_rtts(out), vec![0.052, 1.5, 1.0]);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=1000 µs: p50 = 0.5 ms, p99 = 0.99 ms, p99.9 = 0.999 ms, max = 1 ms.
        let s: Vec<f64> = (1..=1000).map(|us| us as f64 / 1000.0).collect();
        let p = percentiles(&s).unwrap();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 0.5).abs() < 0.001, "{p:?}");
        assert!((p.p99 - 0.99).abs() < 0.002, "{p:?}");
        assert!((p.p999 - 0.999).abs() < 0.002, "{p:?}");
        assert!((p.max - 1.0).abs() < 0.002, "{p:?}");
        assert_eq!(p.to_string().split(' ').count(), 5);
        assert!(percentiles(&[]).is_none());
    }
}
