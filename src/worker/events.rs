//! PORT_STATUS events from the worker (see `crate::events`): a port added, deleted, or whose
//! link state changed. Made only while an OpenFlow connection listens.

use super::{LinkState, Worker};
use crate::events::{Event, PortStatus};
use crate::openflow::PortInfo;

impl Worker {
    /// Tell the control plane that port `id` was added, deleted or changed (`reason`, OFPPR_*).
    /// For a delete, call it before the port is removed.
    pub(crate) fn port_status(&self, id: u16, reason: u8) {
        if !self.dp.events.listening() {
            return;
        }
        let Some(st) = self.dp.port(id) else { return };
        let up = self.life(id).is_none_or(|l| l.state == LinkState::Up)
            && reason != crate::events::PORT_DELETE;
        let bridge = self
            .dp
            .bridge(st.bridge)
            .map(|b| b.name.clone())
            .unwrap_or_default();
        self.dp.events.send(Event::PortStatus(PortStatus {
            bridge,
            reason,
            port: PortInfo {
                ofport: st.ofport,
                name: st.name.clone(),
                up,
                mac: 0,
            },
        }));
    }
}
