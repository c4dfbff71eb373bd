//! git's credential attributes: never panic, and never accept a value with CR, LF or NUL.
#![no_main]

use std::sync::OnceLock;

use kubex_cred::config::ConfigFile;
use kubex_cred::protocol::Overrides;
use libfuzzer_sys::fuzz_target;

fn config() -> &'static ConfigFile {
    static CONFIG: OnceLock<ConfigFile> = OnceLock::new();
    CONFIG.get_or_init(|| {
        toml::from_str(
            "default_profile = \"a\"\n[profiles.a]\nurl = \"https://acme.kubex.ai/api/v2\"\nuser = \"u\"\n\
             [profiles.b]\nurl = \"https://h:8443/CIRBA/api/v2\"\nuser = \"v\"\n",
        )
        .expect("fixed config")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(attrs) = kubex_cred::git::read_attributes(data) {
        let secrets = [&attrs.password, &attrs.credential].map(|v| v.as_ref().map(|s| s.expose().as_str()));
        let values = [&attrs.protocol, &attrs.host, &attrs.path, &attrs.username].map(|v| v.as_deref());
        for value in values.into_iter().chain(secrets).flatten().chain(attrs.capabilities.iter().map(String::as_str)) {
            assert!(!value.contains(['\r', '\n', '\0']), "a record delimiter got through: {value:?}");
        }
        if let Some(p) = attrs.target().and_then(|t| kubex_cred::git::matching_profile(&t, config(), &Overrides::default())) {
            assert_eq!(attrs.protocol.as_deref(), Some("https"));
            assert!(p.name == "a" || p.name == "b");
        }
    }
});
