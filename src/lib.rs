//! uvs: a poll-mode userspace virtual switch.
//!
//! The datapath core (`wire`, `fdb`, `pipeline`, `datapath`) is IO-free and deterministic: time is
//! passed in, frames live in a `packet::Frames` region, and ports are reached only through the
//! `port::Port` trait. Only `port/` (and the mapping in `packet/`) talks to the kernel.

pub mod clock;
pub mod cni;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod counters;
pub mod datapath;
pub mod demo;
pub mod dns;
pub mod etcd;
pub mod events;
pub mod fdb;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod learned;
pub mod log_limit;
pub mod nat;
pub mod neigh;
pub mod observe;
pub mod ofport;
pub mod openflow;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod port_admin;
pub mod route;
pub mod tokens;
pub mod udp_port_set;
pub mod vxlan;
pub mod wire;
pub mod worker;
