//! libFuzzer entry point of `danmaku::fuzz::token` (the body lives in the crate so that `cargo test` runs it over
//! the seed corpus too).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| danmaku::fuzz::token(data));
