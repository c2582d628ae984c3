//! Connection tracking for the router's NAT (masquerade/SNAT and DNAT port mappings).
//!
//! Contract:
//! - A connection is keyed by its original tuple ([`FlowKey`], the first packet's 5-tuple) and
//!   its reply tuple (what the answer carries, after NAT: Linux conntrack's two tuples). Both
//!   are entries of one hash index pointing at one connection slot, so a packet finds its
//!   connection from either direction with one lookup ([`Conntrack::lookup`]).
//! - At most [`CtConfig::limit`] connections. A full table makes `insert` look for one expired
//!   connection among [`EVICT_SCAN`] slots, else drop the least recently seen unassured one
//!   among them (Linux's early_drop: TCP not yet established or closing, UDP/ICMP without a
//!   reply) that its owner may take (below), and otherwise fail with [`CtError::TableFull`];
//!   the caller counts a drop. Both index entries
//!   are inserted together or not at all (a tuple with no free index slot within
//!   `MAX_PROBE` of its home fails with [`CtError::Collision`]).
//! - At most [`CtConfig::per_source`] connections per original source address (Linux's
//!   connlimit): one container cannot take the table or a peer's NAT ports
//!   ([`CtError::SourceLimit`]). Counted per source in a map sized at construction. A source
//!   at its limit makes room from its own connections as a full table does (one of its expired
//!   ones, else its least recently seen unassured one, such as a closed TCP connection in
//!   TIME_WAIT, looked for among [`RECLAIM_SCAN`] slots): only a source whose connections are
//!   all live and assured is refused. (A container closing 700 short connections a second
//!   filled its share with TIME_WAIT entries in 23 s and was then refused everything, ping
//!   included, for up to two minutes: found in a soak test.)
//! - Every connection is charged to an [`Owner`] (the caller passes the port its first packet
//!   came in on) and the table counts connections per owner. A full table makes room for a new
//!   connection by max-min sharing between owners: when an owner holds at least two more
//!   connections than the one inserting, one of its connections goes (an expired one first,
//!   then its least recently seen unassured one, then its least recently seen: `reclaimed`),
//!   looked for among [`RECLAIM_SCAN`] slots; otherwise the inserting owner can only make room
//!   from expired connections or its own unassured ones (early drop). So a port that holds the
//!   table with established connections from many source addresses (which the per-source limit
//!   cannot see) gives way to a port holding fewer, and no owner takes another's connections
//!   while it holds as many.
//! - Time is passed in (whole seconds). Each state has an idle timeout ([`Timeouts`]); an
//!   expired connection is invisible to lookups (removed on sight) and [`Conntrack::expire`]
//!   removes them `budget` slots at a time so the worker spreads the scan.
//! - NAT ports come from [`PortAllocator`] pools owned by the table; a port is never handed out
//!   while its reply tuple belongs to a live connection, and removing a connection (expiry,
//!   eviction, `remove`, `flush`) releases its port.
//! - One worker owns a table: no locks. Lookup, update and insert do not allocate (the slot array
//!   and index are sized from `limit` at construction); only `add_pool` and `iter` may.

pub mod fragments;
mod index;
mod key;
mod ports;
mod state;
mod table;

#[cfg(test)]
mod tests;

pub use fragments::{DatagramId, DatagramTable, FragmentStats};
pub use key::{FlowKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
pub use ports::{DEFAULT_MAX_PROBES, DEFAULT_PORT_RANGE, PortAllocator};
pub use state::{State, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Timeouts, UDP_STREAM_AFTER_S};
pub use table::{Conn, ConnId, ConnInfo, Conntrack, CtStats, NatInfo, NatKind, PoolId};

/// The largest `limit` a table accepts (2^22 = 4,194,304 connections: the index packs the slot
/// number into 22 bits next to the 104-bit key).
pub const MAX_LIMIT: usize = index::MAX_CONNS;

/// Default connection limit (65,536; Linux sizes `nf_conntrack_max` from memory, commonly
/// 65,536 to 262,144). Memory: about 100 bytes of slot plus 64 bytes of index per connection.
pub const DEFAULT_LIMIT: usize = 65_536;

/// How many connection slots a full table's `insert` examines for an expired one to evict.
pub const EVICT_SCAN: usize = 16;

/// How many slots a full table's `insert` examines for a connection of an owner holding more
/// than the inserting one (see the module contract).
pub const RECLAIM_SCAN: usize = 256;

/// Who a connection is charged to: the port its first packet came in on (max-min sharing of a
/// full table, see the module contract).
pub type Owner = u16;

/// Default most connections per original source address (a quarter of [`DEFAULT_LIMIT`]).
pub const DEFAULT_PER_SOURCE: usize = DEFAULT_LIMIT / 4;

/// Which way a packet travels relative to the connection's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Same direction as the packet that created the connection.
    Original,
    /// The answer direction.
    Reply,
}

impl Direction {
    /// 0 for Original, 1 for Reply (index into per-direction counters).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a conntrack operation failed. Each message names the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CtError {
    /// The table holds `limit` live connections and none of those examined had expired.
    #[error("conntrack table full ({limit} connections)")]
    TableFull {
        /// The configured limit.
        limit: usize,
    },
    /// The original or reply tuple already belongs to a live connection.
    #[error("conntrack tuple already in use: {} {key}", key.proto_name())]
    Exists {
        /// The clashing tuple.
        key: FlowKey,
    },
    /// No free port in the probed window of the pool for this remote.
    #[error("NAT ports exhausted on {}.{}.{}.{} proto {proto} toward {}.{}.{}.{}:{rport}",
        addr[0], addr[1], addr[2], addr[3], remote[0], remote[1], remote[2], remote[3])]
    PortsExhausted {
        /// The pool's NAT address.
        addr: [u8; 4],
        /// The pool's protocol.
        proto: u8,
        /// The remote address.
        remote: [u8; 4],
        /// The remote port.
        rport: u16,
    },
    /// A port range whose start is after its end.
    #[error("empty NAT port range {lo}-{hi}")]
    EmptyPortRange {
        /// Range start.
        lo: u16,
        /// Range end.
        hi: u16,
    },
    /// A limit of 0 or above [`MAX_LIMIT`].
    #[error("conntrack limit {limit} out of range 1..={MAX_LIMIT}")]
    BadLimit {
        /// The requested limit.
        limit: usize,
    },
    /// The source address holds its [`CtConfig::per_source`] connections, none of which could
    /// make room (expired or unassured).
    #[error("{}.{}.{}.{} holds its {limit} connections, all live and assured (the per-source limit; with several workers, this worker's share of it)", src[0], src[1], src[2], src[3])]
    SourceLimit {
        /// The source address.
        src: [u8; 4],
        /// The per-source limit.
        limit: usize,
    },
    /// No index slot near one of the tuples' hash (crafted collisions).
    #[error("conntrack hash collision: no free slot near {} {key}", key.proto_name())]
    Collision {
        /// The tuple.
        key: FlowKey,
    },
    /// No pool with this id.
    #[error("no NAT pool {pool}")]
    NoSuchPool {
        /// The id asked for.
        pool: PoolId,
    },
    /// The pool serves another protocol than the connection's.
    #[error("NAT pool {pool} is for protocol {pool_proto}, connection is protocol {proto}")]
    PoolProto {
        /// The pool.
        pool: PoolId,
        /// The pool's protocol.
        pool_proto: u8,
        /// The connection's protocol.
        proto: u8,
    },
}

/// Construction parameters of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtConfig {
    /// Maximum live connections, 1..=[`MAX_LIMIT`]. Default [`DEFAULT_LIMIT`].
    pub limit: usize,
    /// Idle timeouts per state.
    pub timeouts: Timeouts,
    /// Seed of the index hash. Default: random per table (the standard library's
    /// `RandomState`), so colliding tuples cannot be computed from outside; fix it in tests.
    pub hash_seed: u64,
    /// Most connections per original source address (clamped to `limit`). Default
    /// [`DEFAULT_PER_SOURCE`].
    pub per_source: usize,
}

/// A random u64 from the standard library's per-process random keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6374);
    h.finish()
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            limit: DEFAULT_LIMIT,
            timeouts: Timeouts::default(),
            hash_seed: random_seed(),
            per_source: DEFAULT_PER_SOURCE,
        }
    }
}
