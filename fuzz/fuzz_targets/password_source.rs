//! `password_source` text (from the config file or `--password-source`): parsing never panics, a
//! parsed source prints back to text that parses to the same source, and a `command:` source
//! splits into a non-empty argv whose words never come back with an unescaped quote state.
#![no_main]

use kubex_cred::config::{PasswordSource, split_command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = split_command(text);
    if let Ok(source) = text.parse::<PasswordSource>() {
        let again: PasswordSource = source.to_string().parse().expect("a printed source parses");
        assert_eq!(again, source);
        if let PasswordSource::Command(cmd) = &source {
            let argv = split_command(cmd).expect("a parsed command splits");
            assert!(!argv.is_empty());
        }
    }
});
