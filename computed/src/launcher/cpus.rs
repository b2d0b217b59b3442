//! The CPUs a node's tasks may run on: every CPU the agent may use, but those its `reserved_cpus`
//! keeps for the node's daemons and the kernel (Slurm's `CpuSpecList`). Tasks get the mask as
//! their affinity before exec; container runtimes started with it pass it on to the container.

use std::io;

/// An affinity mask for tasks, and how many of the agent's CPUs it holds back.
#[derive(Clone, Copy)]
pub struct TaskCpus {
    set: libc::cpu_set_t,
    /// CPUs the agent may use that tasks may not (the reserved ones that exist here).
    withheld: u32,
}

impl std::fmt::Debug for TaskCpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCpus")
            .field("cpus", &cpu_list(&self.cpus()))
            .field("withheld", &self.withheld)
            .finish()
    }
}

/// Why the tasks' CPUs cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("cannot read the agent's own CPU affinity: {0}")]
    Affinity(io::Error),
    #[error(
        "reserved_cpus {reserved:?} leaves no CPU for jobs: this agent may use CPUs {allowed}; keep at least one of them out of the list"
    )]
    NoneLeft { reserved: Vec<u32>, allowed: String },
}

impl TaskCpus {
    /// The agent's own CPUs without `reserved`; `None` when nothing is reserved (tasks inherit
    /// the agent's affinity, as they always did).
    pub fn without(reserved: &[u32]) -> Result<Option<TaskCpus>, CpuError> {
        if reserved.is_empty() {
            return Ok(None);
        }
        let allowed = own_cpus().map_err(CpuError::Affinity)?;
        Self::from_lists(&allowed, reserved).map(Some)
    }

    /// `allowed` without `reserved` (CPUs in `reserved` that are not in `allowed` are ignored).
    pub fn from_lists(allowed: &[u32], reserved: &[u32]) -> Result<TaskCpus, CpuError> {
        let kept: Vec<u32> = allowed
            .iter()
            .copied()
            .filter(|cpu| !reserved.contains(cpu))
            .collect();
        if kept.is_empty() {
            return Err(CpuError::NoneLeft {
                reserved: reserved.to_vec(),
                allowed: cpu_list(allowed),
            });
        }
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in &kept {
            // SAFETY: CPU_SET checks the index against the set's size.
            unsafe { libc::CPU_SET(cpu as usize, &mut set) };
        }
        Ok(TaskCpus {
            set,
            withheld: (allowed.len() - kept.len()) as u32,
        })
    }

    /// The CPUs tasks may run on, in order.
    pub fn cpus(&self) -> Vec<u32> {
        cpus_of(&self.set)
    }

    pub fn count(&self) -> u32 {
        self.cpus().len() as u32
    }

    /// How many of the agent's CPUs tasks may not use.
    pub fn withheld(&self) -> u32 {
        self.withheld
    }

    /// The mask as the kernel takes it (the child applies it with a raw syscall).
    pub(super) fn mask(&self) -> libc::cpu_set_t {
        self.set
    }
}

/// The CPUs this process may run on.
pub(super) fn own_cpus() -> io::Result<Vec<u32>> {
    // SAFETY: as above, the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let ret = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(cpus_of(&set))
}

fn cpus_of(set: &libc::cpu_set_t) -> Vec<u32> {
    let bits = 8 * size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads within the set (indices below its size in bits).
    (0..bits)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
        .map(|cpu| cpu as u32)
        .collect()
}

/// A CPU list as the kernel prints it (`0-3,6`).
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == cpu => *end = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_cpus_are_taken_out_of_the_agents_own() {
        let cpus = TaskCpus::from_lists(&[0, 1, 2, 3], &[0]).unwrap();
        assert_eq!(cpus.cpus(), vec![1, 2, 3]);
        assert_eq!((cpus.count(), cpus.withheld()), (3, 1));
        // A reserved CPU the agent cannot use anyway holds nothing back.
        let cpus = TaskCpus::from_lists(&[2, 3], &[0, 3, 9]).unwrap();
        assert_eq!(cpus.cpus(), vec![2]);
        assert_eq!(cpus.withheld(), 1);
    }

    #[test]
    fn reserving_every_cpu_is_refused_naming_what_is_left() {
        let err = TaskCpus::from_lists(&[0, 1, 2, 4], &[0, 1, 2, 4]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reserved_cpus [0, 1, 2, 4] leaves no CPU for jobs: this agent may use CPUs 0-2,4; keep at least one of them out of the list"
        );
    }

    #[test]
    fn nothing_reserved_leaves_the_affinity_alone() {
        assert!(TaskCpus::without(&[]).unwrap().is_none());
    }

    #[test]
    fn the_agents_own_cpus_are_read() {
        let own = own_cpus().unwrap();
        let (last, others) = own.split_last().expect("the test runs on some CPU");
        match TaskCpus::without(others).unwrap() {
            Some(cpus) => assert_eq!(cpus.cpus(), vec![*last]),
            None => assert!(others.is_empty()),
        }
        assert!(matches!(
            TaskCpus::without(&own),
            Err(CpuError::NoneLeft { .. })
        ));
    }

    #[test]
    fn cpu_lists_print_as_the_kernel_does() {
        assert_eq!(cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(cpu_list(&[3]), "3");
        assert_eq!(cpu_list(&[]), "");
    }
}
