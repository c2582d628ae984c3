//! Room beyond a source's share for its light flows: where frames wait for another worker
//! (steered to a connection's owner, `peers`; relayed for transmission, `relay`), each source
//! (input port) has a bounded share, so a flood loses its own excess. A source's share is one
//! FIFO, though: a container's bulk TCP fills it, and its own pings and DNS queries, arriving
//! while it is full, were dropped with the excess (`tests/hostile.rs`: a victim's pings lost
//! 4-10% beside its own iperf3 while another tenant's flood kept the uplink's worker busy).
//!
//! Contract:
//! - A frame over its source's share still passes if its flow (a [`flow_hash`] bucket of
//!   [`FLOW_BUCKETS`], mixed with the source) has fewer than [`LIGHT_FRAMES`] such frames
//!   waiting and the source fewer than [`LIGHT_SOURCE`]: a flow that keeps little in flight
//!   (a ping, a DNS query, a new connection's handshake) gets through; a bulk flow gains at
//!   most [`LIGHT_FRAMES`]. Still bounded: a source has at most its share plus
//!   [`LIGHT_SOURCE`] waiting, however many flows it makes.
//! - The hash is computed only for frames over the share (the congested path): a frame within
//!   its share costs nothing more.
//! - [`LightShare`] keeps the counts where one thread owns them (an outbox); `relay` keeps the
//!   same counts in atomics, given back by the owner as it sends.

use crate::packet::flow_hash::flow_hash;

/// Flow buckets a port's light frames are counted in.
pub(crate) const FLOW_BUCKETS: usize = 256;
/// Frames one flow bucket may have waiting beyond its source's share.
pub(crate) const LIGHT_FRAMES: u32 = 4;
/// Frames one source may have waiting beyond its share, all its flows together.
pub(crate) const LIGHT_SOURCE: u32 = 32;

/// The flow bucket of `frame` from source bucket `source`.
pub(crate) fn bucket(source: usize, frame: &[u8]) -> usize {
    (flow_hash(frame) ^ (source as u32).wrapping_mul(0x9e37_79b9)) as usize % FLOW_BUCKETS
}

/// One source's frames admitted beyond its share, by flow bucket (few: at most
/// [`LIGHT_SOURCE`]).
#[derive(Default)]
pub(crate) struct LightShare {
    total: u32,
    flows: Vec<(u16, u32)>,
}

impl LightShare {
    /// Whether a frame of `bucket`, over its source's share, may pass; counted if so.
    pub fn admit(&mut self, bucket: usize) -> bool {
        if self.total >= LIGHT_SOURCE {
            return false;
        }
        let b = bucket as u16;
        let i = match self.flows.iter().position(|&(f, _)| f == b) {
            Some(i) => i,
            None => {
                self.flows.push((b, 0));
                self.flows.len() - 1
            }
        };
        if self.flows[i].1 >= LIGHT_FRAMES {
            return false;
        }
        self.flows[i].1 += 1;
        self.total += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_light_flow_passes_beside_a_bulk_one_and_the_source_stays_bounded() {
        let mut s = LightShare::default();
        // The bulk flow gets LIGHT_FRAMES beyond the share, then no more.
        let admitted = (0..100).filter(|_| s.admit(7)).count() as u32;
        assert_eq!(admitted, LIGHT_FRAMES);
        // Another flow still gets through.
        assert!(s.admit(8));
        // A source making a new flow per frame: bounded by LIGHT_SOURCE in all.
        let more = (0..1000).filter(|i| s.admit(9 + i % 200)).count() as u32;
        assert_eq!(LIGHT_FRAMES + 1 + more, LIGHT_SOURCE);
        assert!(!s.admit(8), "the source's light frames are bounded");
    }
}
