//! The daemon's request decoder: never panics, whatever a local client sends.
#![no_main]

use kubex_cred::config::ConfigFile;
use kubex_cred::protocol::{Decoded, Op, decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Decoded::Request(Op::Get { profile, .. }) = decode_request(data) {
        let _ = ConfigFile::default().resolve(&profile);
    }
});
