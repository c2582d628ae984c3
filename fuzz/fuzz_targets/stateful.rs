#![no_main]
//! cargo fuzz target: see uvs::fuzzing::stateful.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uvs::fuzzing::stateful(data));
