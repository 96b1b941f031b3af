//! Actionable messages for kernels that refuse what the sandbox needs.

/// Kernel settings that decide whether an unprivileged user may create a
/// user namespace, as read from /proc/sys (None when the file is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsernsSettings {
    /// Debian/Ubuntu patch: `kernel.unprivileged_userns_clone`
    pub unprivileged_userns_clone: Option<u64>,
    /// `user.max_user_namespaces`
    pub max_user_namespaces: Option<u64>,
    /// Ubuntu 23.10+ AppArmor: `kernel.apparmor_restrict_unprivileged_userns`
    pub apparmor_restrict: Option<u64>,
}

fn read_num(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl UsernsSettings {
    pub fn read() -> Self {
        UsernsSettings {
            unprivileged_userns_clone: read_num("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read_num("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict: read_num("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

/// What to do when creating a user namespace failed.
pub fn userns_hint(s: &UsernsSettings) -> String {
    let mut found = Vec::new();
    if s.unprivileged_userns_clone == Some(0) {
        found.push("`kernel.unprivileged_userns_clone` is 0: run `sysctl -w kernel.unprivileged_userns_clone=1`");
    }
    if s.max_user_namespaces == Some(0) {
        found.push(
            "`user.max_user_namespaces` is 0: run `sysctl -w user.max_user_namespaces=15000`",
        );
    }
    if s.apparmor_restrict == Some(1) {
        found.push(
            "AppArmor restricts unprivileged user namespaces (`kernel.apparmor_restrict_unprivileged_userns` is 1): \
             run `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or give kiln an AppArmor profile with `userns,`",
        );
    }
    if found.is_empty() {
        "user namespaces are refused by the kernel; check `kernel.unprivileged_userns_clone`, \
         `user.max_user_namespaces` and AppArmor's `kernel.apparmor_restrict_unprivileged_userns` \
         (and, in a container, its seccomp profile)"
            .to_string()
    } else {
        found.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_setting() {
        let cases = [
            (
                UsernsSettings {
                    unprivileged_userns_clone: Some(0),
                    ..Default::default()
                },
                "kernel.unprivileged_userns_clone=1",
            ),
            (
                UsernsSettings {
                    max_user_namespaces: Some(0),
                    ..Default::default()
                },
                "user.max_user_namespaces=15000",
            ),
            (
                UsernsSettings {
                    apparmor_restrict: Some(1),
                    max_user_namespaces: Some(100),
                    ..Default::default()
                },
                "apparmor_restrict_unprivileged_userns=0",
            ),
            (
                UsernsSettings::default(),
                "check `kernel.unprivileged_userns_clone`",
            ),
        ];
        for (s, want) in cases {
            let h = userns_hint(&s);
            assert!(h.contains(want), "{s:?}: {h}");
        }
    }
}
