//! Meters (`add-meter BRIDGE meter=N,kbps,band=type=drop,rate=R[,burst_size=B]`): token buckets
//! that drop what exceeds a rate. IO-free: time is passed in milliseconds.

use std::collections::BTreeMap;

/// One meter: a token bucket in bits, refilled at `rate_kbps`.
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    /// Rate in kbit/s.
    pub rate_kbps: u64,
    /// Bucket size in kbit (default: one second of rate, at least 64 kbit).
    pub burst_kbits: u64,
    tokens_bits: f64,
    last_ms: u64,
    /// Packets passed.
    pub passed: u64,
    /// Packets dropped by the band.
    pub dropped: u64,
    /// Bytes of the packets passed and dropped (OpenFlow's meter and band statistics).
    pub passed_bytes: u64,
    pub dropped_bytes: u64,
    /// When it was written (ms, the datapath's clock): its age is OpenFlow's duration.
    pub created_ms: u64,
    /// The bucket every worker's copy of this meter draws from (several workers); None: the
    /// fields above.
    shared: Option<crate::tokens::SharedTokens>,
}

impl Meter {
    /// A full bucket.
    pub fn new(rate_kbps: u64, burst_kbits: u64) -> Meter {
        Meter {
            rate_kbps,
            burst_kbits,
            tokens_bits: burst_kbits as f64 * 1000.0,
            last_ms: 0,
            passed: 0,
            dropped: 0,
            passed_bytes: 0,
            dropped_bytes: 0,
            created_ms: 0,
            shared: None,
        }
    }

    /// Draw from `bucket`, shared with the other workers' copies of this meter.
    pub fn share(mut self, bucket: std::sync::Arc<crate::tokens::SharedBucket>) -> Meter {
        self.shared = Some(crate::tokens::SharedTokens(bucket));
        self
    }

    /// Account a packet of `bytes` at `now_ms`; false if it exceeds the rate (drop).
    #[inline]
    pub fn admit(&mut self, bytes: u32, now_ms: u64) -> bool {
        if let Some(crate::tokens::SharedTokens(b)) = &self.shared {
            let cap = (self.burst_kbits * 1000) as i64;
            b.refill(self.rate_kbps, cap, now_ms);
            let ok = b.take(i64::from(bytes) * 8, i64::MAX);
            self.count(ok, bytes);
            return ok;
        }
        let cap = self.burst_kbits as f64 * 1000.0;
        let dt = now_ms.saturating_sub(self.last_ms) as f64;
        self.last_ms = now_ms.max(self.last_ms);
        self.tokens_bits = (self.tokens_bits + dt * self.rate_kbps as f64).min(cap);
        let need = bytes as f64 * 8.0;
        let ok = self.tokens_bits >= need;
        if ok {
            self.tokens_bits -= need;
        }
        self.count(ok, bytes);
        ok
    }

    #[inline]
    fn count(&mut self, passed: bool, bytes: u32) {
        if passed {
            self.passed += 1;
            self.passed_bytes += u64::from(bytes);
        } else {
            self.dropped += 1;
            self.dropped_bytes += u64::from(bytes);
        }
    }
}

/// `text` as the running configuration writes it (defaults spelled out), or None when it
/// does not parse: a reload compares meters in this form, so a file that leaves the burst at
/// its default is not a change (found trying uvs as a new user: every SIGHUP re-added the
/// meters and zeroed their counters).
pub fn canonical(text: &str) -> Option<String> {
    let (id, m) = parse_meter(text).ok()?;
    Some(format!(
        "meter={id},kbps,band=type=drop,rate={},burst_size={}",
        m.rate_kbps, m.burst_kbits
    ))
}

/// Parse `meter=N,kbps,band=type=drop,rate=R[,burst_size=B]` (ovs-ofctl add-meter syntax; only
/// kbps drop bands). Returns the meter id and the meter.
pub fn parse_meter(s: &str) -> Result<(u32, Meter), String> {
    let mut id = None;
    let mut rate = None;
    let mut burst = None;
    let mut kbps = false;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "meter" => {
                id = Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("meter: bad value '{v}'"))?,
                )
            }
            "kbps" => kbps = true,
            "pktps" => return Err("pktps: only kbps meters are supported".into()),
            "burst" | "stats" => {}
            "band" => {
                if v != "type=drop" {
                    return Err(format!("band: '{v}' (only type=drop)"));
                }
            }
            "type" => {
                if v != "drop" {
                    return Err(format!("band: type '{v}' (only drop)"));
                }
            }
            "rate" => {
                rate = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|r| *r > 0)
                        .ok_or_else(|| format!("rate: bad value '{v}'"))?,
                )
            }
            "burst_size" => {
                burst = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("burst_size: bad value '{v}'"))?,
                )
            }
            _ => return Err(format!("unknown meter field '{k}'")),
        }
    }
    let id = id.ok_or("meter: missing (meter=N)")?;
    if id == 0 {
        // A flow's `meter:N` cannot name 0 (found trying uvs as a new user: it was saved).
        return Err("meter: ids start at 1".into());
    }
    if !kbps {
        return Err("kbps: missing (only kbps meters are supported)".into());
    }
    let rate = rate.ok_or("rate: missing (band=type=drop,rate=R)")?;
    Ok((id, Meter::new(rate, burst.unwrap_or(rate.max(64)))))
}

/// A bridge's meters by id.
pub type Meters = BTreeMap<u32, Meter>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_limits_rate() {
        let (id, mut m) = parse_meter("meter=1,kbps,band=type=drop,rate=800").unwrap();
        assert_eq!(id, 1);
        assert_eq!(
            parse_meter("meter=0,kbps,band=type=drop,rate=800").unwrap_err(),
            "meter: ids start at 1"
        );
        // Bucket: 800 kbit. 1000-byte packets are 8 kbit: 100 pass at once, then ~100/s.
        let passed = (0..200).filter(|_| m.admit(1000, 0)).count();
        assert_eq!(passed, 100);
        let later = (0..200).filter(|_| m.admit(1000, 500)).count();
        assert_eq!(later, 50, "half a second refills 400 kbit");
        assert!(
            parse_meter("meter=1,pktps,band=type=drop,rate=1")
                .unwrap_err()
                .contains("pktps")
        );
        assert!(
            parse_meter("meter=1,kbps,band=type=dscp_remark,rate=1")
                .unwrap_err()
                .contains("band")
        );
        assert!(
            parse_meter("kbps,band=type=drop,rate=1")
                .unwrap_err()
                .contains("meter")
        );
    }
}
