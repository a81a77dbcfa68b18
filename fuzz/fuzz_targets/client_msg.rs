//! libFuzzer entry point of `danmaku::fuzz::client_msg` (the body lives in the crate so that `cargo test` runs it over
//! the seed corpus too).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| danmaku::fuzz::client_msg(data));
