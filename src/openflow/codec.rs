//! Byte-level helpers for OpenFlow messages: a bounds-checked reader, a big-endian writer, the
//! 8-byte header and the error taxonomy.
//!
//! Contract:
//! - `Reader` never panics: every read past the end is `Err(OfErr::BadLen)`.
//! - `OfErr` names what went wrong in OpenFlow's terms; `OfErr::code(version)` gives the
//!   (type, code) pair OVS uses for that version (OpenFlow 1.0 with Nicira's extension codes, or
//!   OpenFlow 1.3), so `ovs-ofctl` prints the name (`OFPBRC_BAD_TYPE`, `OFPBMC_BAD_PREREQ`, ...).

/// OpenFlow 1.0 wire version.
pub const OF10: u8 = 0x01;
/// OpenFlow 1.3 wire version.
pub const OF13: u8 = 0x04;
/// The Nicira vendor / experimenter id.
pub const NX_VENDOR: u32 = 0x0000_2320;
/// Length of the common header.
pub const HEADER_LEN: usize = 8;

/// Why a message was refused, in OpenFlow's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfErr {
    /// HELLO without a common version.
    HelloIncompatible,
    /// A version this connection did not negotiate.
    BadVersion,
    /// A message type the switch does not handle.
    BadType,
    /// A stats / multipart type the switch does not handle.
    BadStat,
    /// A vendor / experimenter id the switch does not know.
    BadVendor,
    /// A vendor message subtype the switch does not know.
    BadSubtype,
    /// Permission or state problem.
    Eperm,
    /// A length field that does not fit the message.
    BadLen,
    /// A buffer id that names no buffered packet.
    BufferUnknown,
    /// A table id out of range.
    BadTableId,
    /// A port that does not exist or cannot be used here.
    BadPort,
    /// An action type the switch does not know.
    BadActionType,
    /// An action whose length is wrong.
    BadActionLen,
    /// A vendor action subtype the switch does not know.
    BadActionExpType,
    /// An output to a port that cannot be used.
    BadOutPort,
    /// An action argument out of range.
    BadActionArg,
    /// An instruction the switch does not know.
    UnknownInst,
    /// An instruction the switch does not support.
    UnsupInst,
    /// A match type other than OXM.
    BadMatchType,
    /// A match whose length is wrong.
    BadMatchLen,
    /// A match field the switch does not support.
    BadField,
    /// A match value out of range.
    BadValue,
    /// A match mask the switch cannot use.
    BadMask,
    /// A match field without its prerequisite.
    BadPrereq,
    /// A match field given twice.
    DupField,
    /// The switch refused the flow (its message is logged).
    FlowModFailed,
    /// A flow_mod command out of range.
    BadCommand,
    /// A meter_mod the switch cannot carry out.
    MeterFailed,
    /// A meter_mod with flags uvs does not support (packets per second).
    MeterBadFlags,
    /// A meter_mod whose bands are not one drop band.
    MeterBadBand,
    /// A meter_mod command out of range.
    MeterBadCommand,
    /// OFPMC_ADD of a meter id that exists.
    MeterExists,
    /// OFPMC_MODIFY of a meter id that does not exist.
    MeterUnknown,
    /// A role request with a role that does not exist.
    BadRole,
    /// A role request whose generation id is older than the newest seen (OFPRRFC_STALE).
    RoleStale,
    /// A slave connection sent a message that changes the switch (OFPBRC_IS_SLAVE).
    IsSlave,
    /// A group_mod command out of range.
    GroupBadCommand,
    /// A group type uvs does not have (fast failover).
    GroupBadType,
    /// A group the bridge refused.
    GroupInvalid,
    /// OFPGC_ADD of a group id that exists.
    GroupExists,
    /// OFPGC_MODIFY of a group id that does not exist.
    GroupUnknown,
    /// A flow's `group:N` action to a group the bridge does not have.
    BadOutGroup,
    /// An action names a field uvs does not know or support (OFPBAC_BAD_SET_TYPE).
    BadSetType,
    /// An action's bits go past the end of its field, or are none (OFPBAC_BAD_SET_LEN).
    BadSetLen,
    /// An action writes a field uvs cannot write, or a value it cannot set
    /// (OFPBAC_BAD_SET_ARGUMENT).
    BadSetArg,
    /// A port_mod for a port the bridge does not have (OFPPMFC_BAD_PORT).
    PortModBadPort,
    /// A port_mod whose hardware address is not the port's (OFPPMFC_BAD_HW_ADDR).
    PortModBadHwAddr,
    /// A port_mod of configuration bits uvs does not keep (STP; OFPPMFC_BAD_CONFIG).
    PortModBadConfig,
}

impl OfErr {
    /// Every error, for checks that a (type, code) pair on the wire is one uvs sends.
    pub const ALL: [OfErr; 48] = [
        OfErr::HelloIncompatible,
        OfErr::BadVersion,
        OfErr::BadType,
        OfErr::BadStat,
        OfErr::BadVendor,
        OfErr::BadSubtype,
        OfErr::Eperm,
        OfErr::BadLen,
        OfErr::BufferUnknown,
        OfErr::BadTableId,
        OfErr::BadPort,
        OfErr::BadActionType,
        OfErr::BadActionLen,
        OfErr::BadActionExpType,
        OfErr::BadOutPort,
        OfErr::BadActionArg,
        OfErr::UnknownInst,
        OfErr::UnsupInst,
        OfErr::BadMatchType,
        OfErr::BadMatchLen,
        OfErr::BadField,
        OfErr::BadValue,
        OfErr::BadMask,
        OfErr::BadPrereq,
        OfErr::DupField,
        OfErr::FlowModFailed,
        OfErr::BadCommand,
        OfErr::MeterFailed,
        OfErr::MeterBadFlags,
        OfErr::MeterBadBand,
        OfErr::MeterBadCommand,
        OfErr::MeterExists,
        OfErr::MeterUnknown,
        OfErr::BadRole,
        OfErr::RoleStale,
        OfErr::IsSlave,
        OfErr::GroupBadCommand,
        OfErr::GroupBadType,
        OfErr::GroupInvalid,
        OfErr::GroupExists,
        OfErr::GroupUnknown,
        OfErr::BadOutGroup,
        OfErr::BadSetType,
        OfErr::BadSetLen,
        OfErr::BadSetArg,
        OfErr::PortModBadPort,
        OfErr::PortModBadHwAddr,
        OfErr::PortModBadConfig,
    ];

    /// (type, code) for `version`.
    pub fn code(self, version: u8) -> (u16, u16) {
        use OfErr::*;
        let v10 = version == OF10;
        match self {
            HelloIncompatible => (0, 0),
            BadVersion => (1, 0),
            BadType => (1, 1),
            BadStat => (1, 2),
            BadVendor => (1, 3),
            BadSubtype => (1, 4),
            Eperm => (1, 5),
            BadLen => (1, 6),
            BufferUnknown => (1, 8),
            BadTableId if v10 => (1, 512),
            BadTableId => (5, 2),
            BadPort if v10 => (1, 514),
            BadPort => (1, 11),
            BadActionType => (2, 0),
            BadActionLen => (2, 1),
            BadActionExpType => (2, 3),
            BadOutPort => (2, 4),
            BadActionArg => (2, 5),
            UnknownInst if v10 => (1, 1),
            UnknownInst => (3, 0),
            UnsupInst if v10 => (1, 1),
            UnsupInst => (3, 1),
            BadMatchType if v10 => (1, 6),
            BadMatchType => (4, 0),
            BadMatchLen if v10 => (1, 6),
            BadMatchLen => (4, 1),
            BadField if v10 => (3, 5),
            BadField => (4, 6),
            BadValue if v10 => (1, 258),
            BadValue => (4, 7),
            BadMask if v10 => (1, 259),
            BadMask => (4, 8),
            BadPrereq if v10 => (1, 260),
            BadPrereq => (4, 9),
            DupField if v10 => (1, 261),
            DupField => (4, 10),
            FlowModFailed if v10 => (3, 2),
            FlowModFailed => (5, 0),
            BadCommand if v10 => (3, 4),
            BadCommand => (5, 6),
            MeterFailed | MeterBadFlags | MeterBadBand | MeterBadCommand | MeterExists
            | MeterUnknown
                if v10 =>
            {
                (1, 1)
            }
            MeterFailed => (12, 0),
            MeterExists => (12, 1),
            MeterUnknown => (12, 3),
            MeterBadCommand => (12, 4),
            MeterBadFlags => (12, 5),
            MeterBadBand => (12, 8),
            BadRole | RoleStale if v10 => (1, 1),
            BadRole => (11, 2),
            RoleStale => (11, 0),
            IsSlave => (1, 10),
            GroupBadCommand | GroupBadType | GroupInvalid | GroupExists | GroupUnknown if v10 => {
                (1, 1)
            }
            GroupBadCommand => (6, 11),
            GroupBadType => (6, 10),
            GroupInvalid => (6, 1),
            GroupExists => (6, 0),
            GroupUnknown => (6, 8),
            // OpenFlow 1.0 has no groups: the flow_mod failed.
            BadOutGroup if v10 => (3, 2),
            BadOutGroup => (2, 9),
            // Nicira's codes in 1.0 (they go out as vendor errors), OpenFlow 1.2's after.
            BadSetType if v10 => (1, 523),
            BadSetType => (2, 13),
            BadSetLen if v10 => (1, 524),
            BadSetLen => (2, 14),
            BadSetArg if v10 => (1, 525),
            BadSetArg => (2, 15),
            // OFPET_PORT_MOD_FAILED: 4 in 1.0 (no BAD_CONFIG there: EPERM), 7 in 1.3.
            PortModBadPort if v10 => (4, 0),
            PortModBadPort => (7, 0),
            PortModBadHwAddr if v10 => (4, 1),
            PortModBadHwAddr => (7, 1),
            PortModBadConfig if v10 => (1, 5),
            PortModBadConfig => (7, 2),
        }
    }
}

/// Shorthand for results of decoders.
pub type OfResult<T> = Result<T, OfErr>;

/// A bounds-checked big-endian reader.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Bytes left.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> OfResult<&'a [u8]> {
        if self.left() < n {
            return Err(OfErr::BadLen);
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }
    /// Skip `n` bytes.
    pub fn skip(&mut self, n: usize) -> OfResult<()> {
        self.bytes(n).map(|_| ())
    }
    /// The rest.
    pub fn rest(&mut self) -> &'a [u8] {
        let b = &self.buf[self.pos..];
        self.pos = self.buf.len();
        b
    }
    /// One byte.
    pub fn u8(&mut self) -> OfResult<u8> {
        Ok(self.bytes(1)?[0])
    }
    /// A big-endian u16.
    pub fn u16(&mut self) -> OfResult<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A big-endian u32.
    pub fn u32(&mut self) -> OfResult<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A big-endian u64.
    pub fn u64(&mut self) -> OfResult<u64> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    /// A 6-byte MAC as u64.
    pub fn mac(&mut self) -> OfResult<u64> {
        Ok(self
            .bytes(6)?
            .iter()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }
}

/// A big-endian writer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    /// The bytes written.
    pub buf: Vec<u8>,
}

impl Writer {
    /// Append one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Append a u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Append a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Append a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Append a 6-byte MAC from u64.
    pub fn mac(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes()[2..]);
        self
    }
    /// Append `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }
    /// Append bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// Append `s` as a NUL-padded field of `n` bytes (cut to `n - 1`).
    pub fn str_field(&mut self, s: &str, n: usize) -> &mut Self {
        let b = s.as_bytes();
        let k = b.len().min(n - 1);
        self.bytes(&b[..k]).zeros(n - k)
    }
    /// Pad with zeros to a multiple of 8 bytes from `start`.
    pub fn pad8_from(&mut self, start: usize) -> &mut Self {
        let len = self.buf.len() - start;
        self.zeros((8 - len % 8) % 8)
    }
    /// Write `v` as a u16 at `at` (a length filled in later).
    pub fn put_u16(&mut self, at: usize, v: u16) {
        self.buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    /// Current length.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Nothing written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Wire version.
    pub version: u8,
    /// Message type.
    pub typ: u8,
    /// Total length including the header.
    pub length: u16,
    /// Transaction id.
    pub xid: u32,
}

impl Header {
    /// Parse the first 8 bytes (`None`: fewer than 8 bytes).
    pub fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            version: b[0],
            typ: b[1],
            length: u16::from_be_bytes([b[2], b[3]]),
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// Start a message: a writer holding the header with a length to fill in by `finish`.
pub fn start(version: u8, typ: u8, xid: u32) -> Writer {
    let mut w = Writer::default();
    w.u8(version).u8(typ).u16(0).u32(xid);
    w
}

/// Fill in the length of a message started with `start`.
pub fn finish(mut w: Writer) -> Vec<u8> {
    let n = u16::try_from(w.len()).unwrap_or(u16::MAX);
    w.put_u16(2, n);
    w.buf
}

/// OFPT_ERROR for `err` about the message `req` (its first 64 bytes are echoed). In OpenFlow
/// 1.0 the codes from 256 up are Nicira extension errors: as OVS does, they go out as a vendor
/// error (type `NXET_VENDOR`, code `NXVC_VENDOR_ERROR`, then the vendor id, type and code),
/// which ovs-ofctl decodes (sent plainly, it printed a decode error).
pub fn error_msg(version: u8, xid: u32, err: OfErr, req: &[u8]) -> Vec<u8> {
    const NXET_VENDOR: u16 = 0xb0c2;
    let (t, c) = err.code(version);
    let mut w = start(version, 1, xid);
    if version == OF10 && c >= 256 {
        w.u16(NXET_VENDOR).u16(0).u32(NX_VENDOR).u16(t).u16(c);
    } else {
        w.u16(t).u16(c);
    }
    w.bytes(&req[..req.len().min(64)]);
    finish(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u16(), Err(OfErr::BadLen));
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.u8(), Err(OfErr::BadLen));
    }

    #[test]
    fn error_message_bytes() {
        // OFPT_ERROR, OFPBRC_BAD_TYPE about an 8-byte request, OpenFlow 1.0.
        let req = [1, 99, 0, 8, 0, 0, 0, 7];
        let e = error_msg(OF10, 7, OfErr::BadType, &req);
        assert_eq!(
            e,
            [1, 1, 0, 20, 0, 0, 0, 7, 0, 1, 0, 1, 1, 99, 0, 8, 0, 0, 0, 7]
        );
        assert_eq!(OfErr::BadPrereq.code(OF13), (4, 9));
        assert_eq!(OfErr::BadPrereq.code(OF10), (1, 260));
        // An extension error in OpenFlow 1.0: NXET_VENDOR, NXVC_VENDOR_ERROR, Nicira's id,
        // then type 1 code 259 (OFPBMC_BAD_MASK as OVS encodes it there).
        let e = error_msg(OF10, 7, OfErr::BadMask, &req);
        assert_eq!(
            e,
            [
                1, 1, 0, 28, 0, 0, 0, 7, 0xb0, 0xc2, 0, 0, 0, 0, 0x23, 0x20, 0, 1, 1, 3, 1, 99, 0,
                8, 0, 0, 0, 7
            ]
        );
    }
}
