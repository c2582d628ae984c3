//! A port without a device: the IO side of a VXLAN tunnel port. The pipeline encapsulates the
//! frames queued for it and sends them out through the underlay, so this port never receives and
//! never holds a frame.

use std::os::fd::RawFd;

use super::{Port, PortKind, TxResult};
use crate::packet::{Desc, Frames};

/// The IO object of a tunnel port.
#[derive(Debug, Default)]
pub struct TunnelPort;

impl Port for TunnelPort {
    fn kind(&self) -> PortKind {
        PortKind::Vxlan
    }

    fn rx_burst(&mut self, _frames: &mut Frames, _out: &mut Vec<Desc>, _max: usize) -> usize {
        0
    }

    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        // The pipeline drains tunnel queues itself; anything left here has nowhere to go.
        TxResult::drop_all(frames, batch)
    }

    fn service(&mut self, _frames: &mut Frames) {}

    fn poll_fds(&self, _out: &mut Vec<RawFd>) {}

    fn mtu(&self) -> u32 {
        // The real limit (the underlay MTU minus 50) is checked when encapsulating.
        u16::MAX as u32
    }

    fn partial_csum_in(&self) -> bool {
        // A peer VTEP on a veth hands over CHECKSUM_PARTIAL frames whose partial checksum is the
        // inner TCP/UDP one: complete it once the frame is decapsulated.
        true
    }

    fn close(&mut self, _frames: &mut Frames) {}
}
