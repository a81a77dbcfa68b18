//! The fuzz targets' bodies (`danmaku::fuzz`) over the committed seed corpus `fuzz/seeds/TARGET/`: CI runs every
//! invariant the fuzzer checks, on inputs that reach each parser's branches, without a fuzzing toolchain. A crash
//! the fuzzer finds is minimised and added there, so that it stays fixed. Time: well under 1 s.

use std::path::Path;

fn run_corpus(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Name the input in the failure: the panic itself says which invariant broke.
        println!("{target}: {}", path.display());
        body(&data);
        inputs += 1;
    }
    assert!(inputs >= 5, "{}: only {inputs} seeds", dir.display());
}

#[test]
fn ws_frames_seeds() {
    run_corpus("ws_frames", danmaku::fuzz::ws_frames);
}

#[test]
fn client_msg_seeds() {
    run_corpus("client_msg", danmaku::fuzz::client_msg);
}

#[test]
fn comment_seeds() {
    run_corpus("comment", danmaku::fuzz::comment);
}

#[test]
fn token_seeds() {
    run_corpus("token", danmaku::fuzz::token);
}
