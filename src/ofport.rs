//! OpenFlow port numbers: each bridge numbers its ports 1..=0xfeff, as OVS does.
//!
//! Contract:
//! - A number belongs to one port of one bridge for the life of that port; flows name ports by
//!   these numbers (or by name, resolved to the number when the flow is added), never by the
//!   datapath's internal port index, so a flow can only ever reach a port of its own bridge.
//! - A new port gets, in this order: the number it asked for (`ofport_request`, refused if taken
//!   or out of range); the number its name had last time on this bridge, if free (a container's
//!   veth coming back keeps its number); the lowest number that no port has, no flow of the
//!   bridge refers to and no other name had before; failing that, the lowest number no port has
//!   and no flow refers to.
//! - Removing a port frees its number and remembers it for the name (at most `REMEMBERED` names
//!   per bridge, oldest forgotten first).
//! - IO-free; lookups by number are one indexed load (the hot path's `output:N`).

use crate::fdb::PortId;

/// The highest OpenFlow port number a port can have (OFPP_MAX).
pub const OFPP_MAX: u16 = 0xfeff;
/// The bridge's local port (OFPP_LOCAL): its internal port named as the bridge (see
/// [`OfPorts::choose_local`]).
pub const OFPP_LOCAL: u16 = 0xfffe;
/// Names whose last number a bridge remembers.
pub const REMEMBERED: usize = 4096;
/// No port at this number.
const NONE: PortId = PortId::MAX;

/// Why a port number cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfPortError {
    /// `ofport_request` outside 1..=0xfeff.
    #[error("ofport_request: {0} out of range (1 to 65279)")]
    OutOfRange(u32),
    /// `ofport_request` names a number another port has.
    #[error("ofport_request: {num} is already port '{owner}'s number")]
    Taken {
        /// The number asked for.
        num: u16,
        /// The port that has it.
        owner: String,
    },
    /// Every number is in use.
    #[error("no free OpenFlow port number (every one of 1 to 65279 is a port's or a flow's)")]
    Exhausted,
}

/// One bridge's port numbers.
#[derive(Debug, Default, Clone)]
pub struct OfPorts {
    /// Internal port id by number (`NONE` where no port has it).
    by_num: Vec<PortId>,
    /// Live ports: (name, number).
    live: Vec<(String, u16)>,
    /// Numbers that removed ports had: (name, number), oldest first.
    remembered: Vec<(String, u16)>,
}

impl OfPorts {
    /// The internal id of the port with number `num`.
    #[inline]
    pub fn port(&self, num: u16) -> Option<PortId> {
        match self.by_num.get(num as usize) {
            Some(&p) if p != NONE => Some(p),
            _ => None,
        }
    }

    /// The number of the live port `name`.
    pub fn by_name(&self, name: &str) -> Option<u16> {
        self.live.iter().find(|(n, _)| n == name).map(|(_, o)| *o)
    }

    /// The name of the live port with number `num`.
    pub fn name_of(&self, num: u16) -> Option<&str> {
        self.live
            .iter()
            .find(|(_, o)| *o == num)
            .map(|(n, _)| n.as_str())
    }

    /// Live ports as (name, number), in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.live.iter().map(|(n, o)| (n.as_str(), *o))
    }

    /// Choose the number for a new port `name` (see the module contract). `referenced` says
    /// whether a flow of the bridge refers to a number. Changes nothing.
    pub fn choose(
        &self,
        name: &str,
        request: Option<u32>,
        referenced: &dyn Fn(u16) -> bool,
    ) -> Result<u16, OfPortError> {
        let live = |n: u16| self.port(n).is_some();
        if let Some(r) = request {
            if r == 0 || r > OFPP_MAX as u32 {
                return Err(OfPortError::OutOfRange(r));
            }
            let n = r as u16;
            if live(n) {
                return Err(OfPortError::Taken {
                    num: n,
                    owner: self.name_of(n).unwrap_or("?").to_string(),
                });
            }
            return Ok(n);
        }
        if let Some(&(_, n)) = self.remembered.iter().rev().find(|(s, _)| s == name)
            && !live(n)
        {
            return Ok(n);
        }
        let other_name = |n: u16| self.remembered.iter().any(|(_, o)| *o == n);
        (1..=OFPP_MAX)
            .find(|&n| !live(n) && !referenced(n) && !other_name(n))
            .or_else(|| (1..=OFPP_MAX).find(|&n| !live(n) && !referenced(n)))
            .ok_or(OfPortError::Exhausted)
    }

    /// The number of the bridge's own internal port (a TAP named as the bridge, OVS's
    /// `LOCAL`): [`OFPP_LOCAL`], unless a port has it.
    pub fn choose_local(&self) -> Result<u16, OfPortError> {
        match self.name_of(OFPP_LOCAL) {
            Some(owner) => Err(OfPortError::Taken {
                num: OFPP_LOCAL,
                owner: owner.to_string(),
            }),
            None => Ok(OFPP_LOCAL),
        }
    }

    /// Give number `num` (from `choose`) to port `id` named `name`.
    pub fn insert(&mut self, name: &str, num: u16, id: PortId) {
        let i = num as usize;
        if self.by_num.len() <= i {
            self.by_num.resize(i + 1, NONE);
        }
        self.by_num[i] = id;
        self.live.push((name.to_string(), num));
        self.remembered.retain(|(s, _)| s != name);
    }

    /// Free the number of port `name`, remembering it for the name.
    pub fn remove(&mut self, name: &str) {
        let Some(pos) = self.live.iter().position(|(n, _)| n == name) else {
            return;
        };
        let (name, num) = self.live.remove(pos);
        if let Some(slot) = self.by_num.get_mut(num as usize) {
            *slot = NONE;
        }
        while self.by_num.last() == Some(&NONE) {
            self.by_num.pop();
        }
        self.remembered.retain(|(s, _)| *s != name);
        if num == OFPP_LOCAL {
            // Given by being the bridge's own port, never by a name's memory: a port of
            // another type with that name gets an ordinary number.
            return;
        }
        if self.remembered.len() >= REMEMBERED {
            self.remembered.remove(0);
        }
        self.remembered.push((name, num));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: u16) -> bool {
        false
    }

    #[test]
    fn lowest_free_then_stable_for_a_name() {
        let mut p = OfPorts::default();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            let num = p.choose(n, None, &none).unwrap();
            assert_eq!(num, i as u16 + 1);
            p.insert(n, num, 10 + i as u16);
        }
        assert_eq!(p.port(2), Some(11));
        p.remove("b");
        assert_eq!(p.port(2), None);
        // A new name does not take b's old number while another is free.
        assert_eq!(p.choose("d", None, &none).unwrap(), 4);
        // b coming back gets 2 again.
        assert_eq!(p.choose("b", None, &none).unwrap(), 2);
    }

    #[test]
    fn numbers_flows_refer_to_are_not_reused() {
        let mut p = OfPorts::default();
        p.insert("a", 1, 0);
        let referenced = |n: u16| n == 2;
        assert_eq!(p.choose("x", None, &referenced).unwrap(), 3);
    }

    #[test]
    fn local_is_one_port_s() {
        let mut p = OfPorts::default();
        assert_eq!(p.choose_local(), Ok(OFPP_LOCAL));
        p.insert("br0", OFPP_LOCAL, 3);
        assert_eq!(p.port(OFPP_LOCAL), Some(3));
        assert_eq!(
            p.choose_local(),
            Err(OfPortError::Taken {
                num: OFPP_LOCAL,
                owner: "br0".into()
            })
        );
        // Ordinary numbers are still handed out from 1.
        assert_eq!(p.choose("a", None, &none), Ok(1));
        p.remove("br0");
        assert_eq!(p.port(OFPP_LOCAL), None);
        assert_eq!(p.choose_local(), Ok(OFPP_LOCAL));
        // The name does not keep LOCAL: another port called br0 gets an ordinary number.
        assert_eq!(p.choose("br0", None, &none), Ok(1));
    }

    #[test]
    fn requests_are_checked() {
        let mut p = OfPorts::default();
        p.insert("a", 7, 0);
        assert_eq!(
            p.choose("b", Some(7), &none),
            Err(OfPortError::Taken {
                num: 7,
                owner: "a".into()
            })
        );
        assert_eq!(
            p.choose("b", Some(0), &none),
            Err(OfPortError::OutOfRange(0))
        );
        assert_eq!(
            p.choose("b", Some(0xff00), &none),
            Err(OfPortError::OutOfRange(0xff00))
        );
        assert_eq!(p.choose("b", Some(65279), &none), Ok(65279));
        assert!(
            OfPortError::Taken {
                num: 7,
                owner: "a".into()
            }
            .to_string()
            .contains("ofport_request")
        );
    }

    #[test]
    fn reuses_other_names_numbers_only_when_nothing_else_is_left() {
        let mut p = OfPorts::default();
        p.insert("a", 1, 0);
        p.remove("a");
        let all_but_1 = |n: u16| n != 1;
        assert_eq!(p.choose("z", None, &all_but_1).unwrap(), 1);
        let everything = |_: u16| true;
        assert_eq!(
            p.choose("z", None, &everything),
            Err(OfPortError::Exhausted)
        );
    }
}
