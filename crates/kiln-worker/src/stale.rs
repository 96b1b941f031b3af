//! Temporary names that carry the process that made them
//! (`PREFIX<pid>-t<start time>-...`), so a later kiln process can tell
//! the leftovers of a killed one from a running one's.

use std::fs;

/// Whether `name` is `PREFIX<pid>-...` or `PREFIX<pid>-t<start>-...` of a
/// process that no longer exists. With the start time (see
/// [`start_time`]) a reused pid counts as gone too.
pub(crate) fn owner_is_gone(name: &std::ffi::OsStr, prefix: &str) -> bool {
    let Some(mut parts) = name
        .to_str()
        .and_then(|n| n.strip_prefix(prefix))
        .map(|n| n.split('-'))
    else {
        return false;
    };
    let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let start = parts
        .next()
        .and_then(|t| t.strip_prefix('t'))
        .and_then(|t| t.parse::<u64>().ok());
    match start_time(pid) {
        Ok(Some(now)) => start.is_some_and(|s| s != now),
        // no such process, or a zombie: it will not use its files again
        Ok(None) => true,
        // /proc hides other users' processes (hidepid): ask the kernel
        Err(_) => rustix::process::Pid::from_raw(pid as i32)
            .is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH)),
    }
}

/// The start time of process `pid` (field 22 of proc_pid_stat(5), clock
/// ticks since boot), which tells a reused pid from the process that had
/// it; `Ok(None)` when there is no such process or it is a zombie.
pub(crate) fn start_time(pid: u32) -> std::io::Result<Option<u64>> {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // the command name (field 2) may hold spaces and `)`: fields after the
    // last `)` start at field 3, the state
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| std::io::Error::other("unreadable stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return Ok(None);
    }
    fields
        .get(22 - 3)
        .and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| std::io::Error::other("unreadable stat"))
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn start_times_tell_processes_apart() {
        let me = start_time(std::process::id()).unwrap().unwrap();
        assert!(me > 0);
        assert_eq!(start_time(1).unwrap().map(|t| t <= me), Some(true));
        assert_eq!(start_time(99_999_999).unwrap(), None);
        // a zombie counts as gone
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while start_time(pid).unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
    }
}
