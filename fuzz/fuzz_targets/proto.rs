//! libFuzzer's inputs to `ringkv_fuzz_checks::proto::check` (fuzz/checks/src/proto.rs says
//! what it checks).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_fuzz_checks::proto::check(data));
