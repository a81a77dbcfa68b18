//! libFuzzer entry point of `danmaku::fuzz::ws_frames` (the body lives in the crate so that `cargo test` runs it over
//! the seed corpus too).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| danmaku::fuzz::ws_frames(data));
