#![no_main]
//! cargo fuzz target: see uvs::fuzzing::dns.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uvs::fuzzing::dns(data));
