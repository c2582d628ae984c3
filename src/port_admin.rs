//! A port's OpenFlow configuration (OFPPC_* bits), what `ovs-ofctl mod-port` and
//! OFPT_PORT_MOD change: `down` (the switch neither receives from nor sends to the port),
//! `no-receive`, `no-forward`, `no-flood` (left out of NORMAL's and `FLOOD`'s floods; `ALL`
//! still sends there) and `no-packet-in` (frames from the port never go to a controller).
//!
//! Contract:
//! - IO-free; the datapath reads the bits per port and burst (receive, send) or per flooded
//!   frame (`no_flood`), never per byte.
//! - In the switch only: `down` does not set the netdev down (OVS does, for its system ports);
//!   the port keeps its link state, sockets and counters, and what it receives meanwhile is
//!   dropped as `port-no-recv`, what would go out as `port-no-fwd`.
//! - Not configuration: as in OVS, a restart or a re-added port starts with every bit clear.
//! - STP bits (`stp`, `receive-stp`) are refused: uvs has no STP.

/// `OFPPC_PORT_DOWN`.
pub const PORT_DOWN: u32 = 1 << 0;
/// `OFPPC_NO_RECV`.
pub const NO_RECV: u32 = 1 << 2;
/// `OFPPC_NO_FLOOD` (OpenFlow 1.0 only; 1.3 has no such bit).
pub const NO_FLOOD: u32 = 1 << 4;
/// `OFPPC_NO_FWD`.
pub const NO_FWD: u32 = 1 << 5;
/// `OFPPC_NO_PACKET_IN`.
pub const NO_PACKET_IN: u32 = 1 << 6;
/// The bits uvs keeps.
pub const SUPPORTED: u32 = PORT_DOWN | NO_RECV | NO_FLOOD | NO_FWD | NO_PACKET_IN;

/// One port's configuration bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortConfig(u32);

/// `mod-port` words: (word, bit, set).
const WORDS: [(&str, u32, bool); 10] = [
    ("up", PORT_DOWN, false),
    ("down", PORT_DOWN, true),
    ("receive", NO_RECV, false),
    ("no-receive", NO_RECV, true),
    ("forward", NO_FWD, false),
    ("no-forward", NO_FWD, true),
    ("flood", NO_FLOOD, false),
    ("no-flood", NO_FLOOD, true),
    ("packet-in", NO_PACKET_IN, false),
    ("no-packet-in", NO_PACKET_IN, true),
];

impl PortConfig {
    /// The OFPPC bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// True when nothing is set (a port as added).
    pub fn is_clear(self) -> bool {
        self.0 == 0
    }

    /// What the switch receives from the port is dropped.
    #[inline]
    pub fn drops_rx(self) -> bool {
        self.0 & (PORT_DOWN | NO_RECV) != 0
    }

    /// What the switch would send to the port is dropped.
    #[inline]
    pub fn drops_tx(self) -> bool {
        self.0 & (PORT_DOWN | NO_FWD) != 0
    }

    /// The port is left out of floods.
    #[inline]
    pub fn no_flood(self) -> bool {
        self.0 & NO_FLOOD != 0
    }

    /// Frames from the port never go to a controller.
    #[inline]
    pub fn no_packet_in(self) -> bool {
        self.0 & NO_PACKET_IN != 0
    }

    /// The configuration with the bits of `mask` taken from `bits` (OFPT_PORT_MOD's
    /// `config`/`mask`). A bit uvs does not keep is refused, naming it.
    pub fn with(self, bits: u32, mask: u32) -> Result<PortConfig, String> {
        let unknown = mask & !SUPPORTED;
        if unknown != 0 {
            return Err(format!(
                "config: bits {unknown:#x} not supported (uvs keeps down, no-receive, no-forward, no-flood, no-packet-in; it has no STP)"
            ));
        }
        Ok(PortConfig((self.0 & !mask) | (bits & mask)))
    }

    /// `ovs-ofctl mod-port`'s word as (bits, mask).
    pub fn parse_word(word: &str) -> Result<(u32, u32), String> {
        if let Some(&(_, bit, set)) = WORDS.iter().find(|(w, _, _)| *w == word) {
            return Ok((if set { bit } else { 0 }, bit));
        }
        if word.contains("stp") {
            return Err(format!("'{word}': uvs has no STP"));
        }
        let all: Vec<&str> = WORDS.iter().map(|(w, _, _)| *w).collect();
        Err(format!(
            "'{word}': not a mod-port action ({})",
            all.join(", ")
        ))
    }

    /// The set bits as `mod-port` words (`down`, `no-receive`, ...), for `show`.
    pub fn words(self) -> Vec<&'static str> {
        WORDS
            .iter()
            .filter(|(_, bit, set)| *set && self.0 & bit != 0)
            .map(|(w, _, _)| *w)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_set_and_clear_their_bit() {
        let mut c = PortConfig::default();
        for w in ["down", "no-flood", "no-packet-in"] {
            let (b, m) = PortConfig::parse_word(w).unwrap();
            c = c.with(b, m).unwrap();
        }
        assert!(c.drops_rx() && c.drops_tx() && c.no_flood() && c.no_packet_in());
        assert_eq!(c.words(), ["down", "no-flood", "no-packet-in"]);
        let (b, m) = PortConfig::parse_word("up").unwrap();
        c = c.with(b, m).unwrap();
        assert!(!c.drops_rx() && !c.drops_tx() && c.no_flood());
        let (b, m) = PortConfig::parse_word("no-receive").unwrap();
        let c = c.with(b, m).unwrap();
        assert!(c.drops_rx() && !c.drops_tx());
        let (b, m) = PortConfig::parse_word("no-forward").unwrap();
        let c = PortConfig::default().with(b, m).unwrap();
        assert!(!c.drops_rx() && c.drops_tx());
        assert_eq!(c.bits(), NO_FWD);
    }

    #[test]
    fn unknown_words_and_bits_are_refused() {
        assert!(
            PortConfig::parse_word("no-stp")
                .unwrap_err()
                .contains("no STP")
        );
        let e = PortConfig::parse_word("sideways").unwrap_err();
        assert!(
            e.contains("not a mod-port action") && e.contains("no-flood"),
            "{e}"
        );
        // OFPPC_NO_STP (1.0's bit 1) in the mask.
        assert!(
            PortConfig::default()
                .with(2, 2)
                .unwrap_err()
                .contains("0x2")
        );
        // Bits outside the mask are left alone.
        let c = PortConfig::default().with(SUPPORTED, NO_FLOOD).unwrap();
        assert_eq!(c.bits(), NO_FLOOD);
    }
}
