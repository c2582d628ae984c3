//! The demo's DNS client: one `A` query over UDP from inside a container's namespace to a
//! gateway's port 53, the packet `nslookup NAME GATEWAY` sends, without depending on busybox
//! or on the host's search domains.
//!
//! Contract: [`lookup`] opens its socket on a helper thread that has entered the namespace
//! (`port::sys::in_netns`: `setns` on that thread only; the demo's own threads never change
//! namespace), sends the query up to [`TRIES`] times, one second apart, and returns the
//! response code and the `A` addresses of the first reply from the server whose id matches.
//! Err when the namespace cannot be entered or no reply came.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::port::sys::{NetnsError, in_netns};

/// Queries sent before giving up.
pub const TRIES: u32 = 3;

/// What the server answered.
pub struct Answer {
    /// NOERROR, NXDOMAIN, ...
    pub code: ResponseCode,
    /// The `A` records of the answer section.
    pub addrs: Vec<Ipv4Addr>,
}

/// Asks `server`:53 for `name`'s `A` records from network namespace `ns`.
pub fn lookup(ns: &str, server: &str, name: &str) -> Result<Answer, String> {
    let server: Ipv4Addr = server
        .parse()
        .map_err(|e| format!("server {server:?}: {e}"))?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let query = query(id, name)?;
    let path = format!("/var/run/netns/{ns}");
    let nsf = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    match in_netns(nsf.as_fd(), || {
        ask(SocketAddr::from((server, 53)), id, &query)
    }) {
        Ok(answer) => answer,
        Err(NetnsError::Enter(e)) => Err(format!("entering {ns}: {e}")),
        Err(NetnsError::Panicked) => Err(format!("the DNS query thread in {ns} panicked")),
    }
}

/// The query's bytes: one question, `name` `A`, recursion desired (as nslookup asks).
fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let qname = Name::from_ascii(name).map_err(|e| format!("name {name:?}: {e}"))?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname, RecordType::A));
    m.to_vec().map_err(|e| format!("name {name:?}: {e}"))
}

/// Sends `query` to `server` until a reply with `id` comes from it (at most [`TRIES`] sends).
fn ask(server: SocketAddr, id: u16, query: &[u8]) -> Result<Answer, String> {
    let sock = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| format!("udp socket: {e}"))?;
    let mut buf = [0u8; 1500];
    for _ in 0..TRIES {
        sock.send_to(query, server)
            .map_err(|e| format!("send to {server}: {e}"))?;
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
                break;
            }
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if from == server && m.metadata.id == id {
                return Ok(Answer {
                    code: m.metadata.response_code,
                    addrs: a_records(&m),
                });
            }
        }
    }
    Err(format!("no answer from {server} after {TRIES} tries"))
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}
