#![no_main]
//! cargo fuzz target: see uvs::fuzzing::openflow.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    uvs::fuzzing::openflow(data);
});
