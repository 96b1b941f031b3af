//! Help lines that name a cause kiln knows better than the failing command.

/// Words of a step's output that mean it tried to switch users or give
/// files away: what the single-ID mapping cannot do.
const ID_CHANGES: &[&str] = &[
    "setgroups",
    "setgid",
    "setegid",
    "setresgid",
    "setuid",
    "seteuid",
    "setresuid",
    "chown",
    "lchown",
    "fchown",
    "initgroups",
];

/// With the single-ID fallback in effect (`fallback`: the runtime's
/// warning for it, which names the user and how to add a range), a failure
/// whose output shows a user switch or a chown refused gets a help line
/// that says why and both fixes.
pub fn single_id(tail: &str, fallback: Option<&str>) -> Option<String> {
    let fallback = fallback?;
    let refused = tail.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        let denied = l.contains("operation not permitted")
            || l.contains("invalid argument")
            || l.contains("permission denied")
            || l.contains(" failed");
        denied && ID_CHANGES.iter().any(|w| l.contains(w))
    });
    if !refused {
        return None;
    }
    Some(format!(
        "the step could not switch to another user or give files to one (apt's `_apt` sandbox \
         user, `useradd`, `chown`): {fallback}; or keep apt as root with \
         `apt-get -o APT::Sandbox::User=root ...`"
    ))
}

#[cfg(test)]
mod tests {
    use super::single_id;

    #[test]
    fn names_the_fallback_only_when_an_id_change_was_refused() {
        let apt = "Reading package lists...\nE: setgroups 65534 failed - setgroups (1: Operation not permitted)\nE: seteuid 42 failed - seteuid (22: Invalid argument)\n";
        let chown = "chown: changing ownership of '/app': Invalid argument\n";
        let other = "make: *** [all] Error 2\n";
        let warning = kiln_runtime::subid::single_id_warning("kilnnosub");
        let fallback = Some(warning.as_str());
        let h = single_id(apt, fallback).expect("apt's sandbox user");
        assert!(
            h.contains("single ID") && h.contains("--add-subuids"),
            "{h}"
        );
        assert!(h.contains("APT::Sandbox::User=root"), "{h}");
        assert!(single_id(chown, fallback).is_some());
        assert_eq!(single_id(other, fallback), None);
        assert_eq!(
            single_id(apt, None),
            None,
            "with a range the cause is another"
        );
    }
}
