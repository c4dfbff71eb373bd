//! The password lives in the real Secret Service, and only there.

use crate::support::{Emulator, Options, Sandbox};

#[test]
fn login_stores_in_the_secret_service_get_reads_logout_deletes() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "s3cret-pw")]);
    sb.login(&emu, "apiUser", "s3cret-pw").code(0);

    let items = sb.keychain_items();
    assert!(items.contains("attribute.service = kubex-cred"), "{items}");
    assert!(items.contains(&format!("attribute.username = apiUser@{}", emu.url())), "{items}");
    assert!(items.contains("secret = s3cret-pw"), "{items}");

    let token = sb.run(&["get", "--no-daemon"], b"").code(0).token();
    assert_eq!(emu.call_api(&format!("Authorization: Bearer {token}")), 200);

    sb.run(&["logout"], b"").code(0);
    assert!(!sb.keychain_items().contains("kubex-cred"), "{}", sb.keychain_items());
    let calls = emu.authorize_calls();
    sb.run(&["get", "--no-daemon"], b"").fails(3, "run `kubex-cred login`");
    assert_eq!(emu.authorize_calls(), calls, "no password, no Authorize call");
    sb.run(&["logout"], b"").code(0);
}

#[test]
fn a_second_login_replaces_the_password() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "old")]);
    sb.login(&emu, "apiUser", "old").code(0);
    emu.set_password("apiUser", "new");
    sb.run(&["get", "--no-daemon"], b"").fails(4, "401");
    sb.login(&emu, "apiUser", "new").code(0);
    let items = sb.keychain_items();
    assert!(items.contains("secret = new") && !items.contains("secret = old"), "{items}");
    assert_eq!(items.matches("[/").count(), 1, "one entry per user and instance: {items}");
    sb.run(&["get", "--no-daemon"], b"").code(0).token();
}

#[test]
fn no_secret_service_is_exit_8() {
    let sb = Sandbox::without_keyring();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").fails(8, "keychain unavailable");
    assert_eq!(emu.authorize_calls(), 0, "login checks the keychain before spending a password attempt");
    assert!(!sb.config_file().exists(), "nothing written");

    std::fs::create_dir_all(sb.config_file().parent().expect("dir")).expect("mkdir");
    let config = format!("default_profile = \"p\"\n[profiles.p]\nurl = \"{}\"\nuser = \"apiUser\"\n", emu.url());
    std::fs::write(sb.config_file(), config).expect("write config");
    sb.run(&["get", "--no-daemon"], b"").fails(8, "Secret Service");
    sb.run(&["logout"], b"").fails(8, "keychain unavailable");
}
