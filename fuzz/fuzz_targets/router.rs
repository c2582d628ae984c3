#![no_main]
//! cargo fuzz target: see uvs::fuzzing::router.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uvs::fuzzing::router(data));
