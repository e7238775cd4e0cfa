//! What /proc/PID/stat tells of processes: resident memory of whole process trees, CPU
//! time, parent and start time.

use std::collections::HashMap;

use crate::process::Pid;

/// One process as /proc shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: Pid,
    ppid: Pid,
    rss_pages: u64,
}

/// `root` and all its descendants (empty when `root` is gone).
pub fn tree_pids(root: Pid) -> Vec<Pid> {
    let procs = all_procs();
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for p in &procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    if !procs.iter().any(|p| p.pid == root) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        out.push(pid);
        stack.extend(children.get(&pid).into_iter().flatten().copied());
    }
    out
}

/// For each root, the resident memory in bytes of it and all its descendants. Roots that
/// are gone are missing from the result.
pub fn tree_rss(roots: &[Pid]) -> HashMap<Pid, u64> {
    let procs = all_procs();
    let page = page_size();
    sum_trees(&procs, roots)
        .into_iter()
        .map(|(root, pages)| (root, pages * page))
        .collect()
}

/// Resident memory of `pid` alone (not its children), in bytes.
pub fn rss(pid: Pid) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn all_procs() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<Pid>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(pid, &stat)
        })
        .collect()
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// The fields of /proc/PID/stat from field 3 (state) on: the command name in field 2 may
/// contain spaces and parentheses, so they start after its last `)`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// Numeric fields `numbers` (as proc(5) counts them, from 3 on) of /proc/PID/stat.
fn stat_numbers<const N: usize>(pid: Pid, numbers: [usize; N]) -> Option<[u64; N]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat)?;
    let mut out = [0; N];
    for (value, n) in out.iter_mut().zip(numbers) {
        *value = fields.get(n.checked_sub(3)?)?.parse().ok()?;
    }
    Some(out)
}

/// User plus system CPU time of `pid` so far, in clock ticks (fields 14 and 15).
pub fn cpu_ticks(pid: Pid) -> Option<u64> {
    let [user, system] = stat_numbers(pid, [14, 15])?;
    Some(user + system)
}

/// `pid`'s command line, its arguments joined by spaces (empty when it is gone).
pub fn command_line(pid: Pid) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The parent of `pid` (field 4).
pub fn parent_of(pid: Pid) -> Option<u64> {
    stat_numbers(pid, [4]).map(|[ppid]| ppid)
}

/// When `pid` started, in clock ticks since boot (field 22): tells a process from a
/// later one that reuses its pid.
pub fn start_time(pid: Pid) -> Option<u64> {
    stat_numbers(pid, [22]).map(|[started]| started)
}

/// Fields 4 (ppid) and 24 (rss) of /proc/PID/stat.
fn parse_stat(pid: Pid, stat: &str) -> Option<Proc> {
    let fields = stat_fields(stat)?;
    Some(Proc {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        rss_pages: fields.get(21)?.parse().ok()?,
    })
}

fn sum_trees(procs: &[Proc], roots: &[Pid]) -> HashMap<Pid, u64> {
    let mut children: HashMap<Pid, Vec<&Proc>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = HashMap::new();
    for &root in roots {
        let Some(top) = procs.iter().find(|p| p.pid == root) else {
            continue;
        };
        let mut total = 0;
        let mut stack = vec![top];
        while let Some(p) = stack.pop() {
            total += p.rss_pages;
            stack.extend(children.get(&p.pid).into_iter().flatten().copied());
        }
        out.insert(root, total);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parens() {
        let stat = "42 (my (odd) name) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 5 1000 250 18446744073709551615";
        assert_eq!(
            parse_stat(42, stat),
            Some(Proc {
                pid: 42,
                ppid: 7,
                rss_pages: 250
            })
        );
    }

    #[test]
    fn sums_every_descendant() {
        let p = |pid, ppid, rss_pages| Proc {
            pid,
            ppid,
            rss_pages,
        };
        let procs = [
            p(10, 1, 5),
            p(11, 10, 3),
            p(12, 11, 2),
            p(20, 1, 7),
            p(21, 20, 1),
        ];
        let sums = sum_trees(&procs, &[10, 20, 99]);
        assert_eq!(sums.get(&10), Some(&10));
        assert_eq!(sums.get(&20), Some(&8));
        assert_eq!(sums.get(&99), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as Pid;
        let rss = tree_rss(&[me])[&me];
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(cpu_ticks(me).is_some());
        assert_eq!(
            parent_of(me),
            Some(u64::from(std::os::unix::process::parent_id()))
        );
        assert!(start_time(me).is_some_and(|t| t > 0));
    }
}
