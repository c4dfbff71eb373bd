//! Shell completion through the real shells: the script `kubex-cred completions SHELL` prints is
//! loaded into bash, zsh and fish, and their completion is run on typed lines.

use crate::support::{self, Out, Sandbox};

/// What the shell offers for `line` (the last word being completed), one candidate per entry.
fn offered(sb: &Sandbox, shell: &str, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = match shell {
        "bash" => format!(
            "source <(kubex-cred completions bash)\n\
             COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
             _clap_complete_kubex_cred kubex-cred '{current}' '{previous}'\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words = quoted.join(" "),
            cword = words.len() - 1,
            current = words[words.len() - 1],
            previous = words[words.len().saturating_sub(2)],
        ),
        "zsh" => format!(
            "compdef() {{ : }}\n\
             _describe() {{ local name=${{@[-1]}}; print -l -- ${{(P)name}} }}\n\
             source <(kubex-cred completions zsh)\n\
             words=({words}); CURRENT={current}\n\
             _clap_dynamic_completer_kubex_cred",
            words = quoted.join(" "),
            current = words.len(),
        ),
        "fish" => format!("kubex-cred completions fish | source; complete -C '{line}'"),
        other => panic!("no shell {other}"),
    };
    let mut c = sb.cmd(shell);
    if shell == "zsh" {
        c.arg("-f");
    }
    c.arg("-c").arg(&script);
    let out: Out = support::run_with_input(c, b"");
    assert_eq!(out.code, 0, "{shell} on {line:?}: {out:?}");
    // zsh and fish show `value:description` / `value<TAB>description`.
    out.stdout
        .lines()
        .map(|l| l.split(['\t', ':']).next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_zsh_and_fish_complete_commands_flags_values_and_profile_names() {
    let (sb, emu) = support::logged_in(std::time::Duration::from_secs(300));
    let origin = emu.origin();
    sb.run(&["login", "--profile", "lab", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n").code(0);
    for shell in ["bash", "zsh", "fish"] {
        let commands = offered(&sb, shell, "kubex-cred ");
        for command in ["get", "status", "login", "profile", "exec"] {
            assert!(commands.iter().any(|c| c == command), "{shell}: {command} not in {commands:?}");
        }
        assert!(!commands.iter().any(|c| c == "manpage"), "{shell}: a hidden command offered: {commands:?}");
        let flags = offered(&sb, shell, "kubex-cred get --f");
        assert!(flags.iter().any(|f| f == "--format"), "{shell}: {flags:?}");
        let values = offered(&sb, shell, "kubex-cred get --format ");
        for value in ["token", "header", "json", "env"] {
            assert!(values.iter().any(|v| v == value), "{shell}: {value} not in {values:?}");
        }
        let profiles = offered(&sb, shell, "kubex-cred get --profile ");
        assert!(
            profiles.iter().any(|p| p == "lab") && profiles.iter().any(|p| p == "default"),
            "{shell}: {profiles:?}"
        );
        let hidden = offered(&sb, shell, "kubex-cred daemon --");
        assert!(hidden.iter().any(|f| f == "--sink"), "{shell}: {hidden:?}");
        assert!(!hidden.iter().any(|f| f == "--detached"), "{shell}: a hidden flag offered: {hidden:?}");
    }
}
