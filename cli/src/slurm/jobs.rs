//! What the Slurm commands share about jobs: their IDs as Slurm writes them (`12`, `12_3` for an
//! array element), the filters (`-j`, `-u`, `-p`, `-t`, `--name`, `--me`), and state names.

use beowulf_proto::v1;
use beowulf_types::JobState;

/// A job as Slurm names it: an array element is `ARRAY_INDEX`.
pub fn job_id_text(job: &v1::JobInfo) -> String {
    match (job.array_job_id, job.array_task_id) {
        (Some(array), Some(index)) => format!("{array}_{index}"),
        _ => job.id.to_string(),
    }
}

/// One `-j` item: a job (for an array's ID, every element) or one array element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSelector {
    Job(u64),
    Element { array: u64, index: u32 },
}

impl JobSelector {
    pub fn parse(text: &str) -> anyhow::Result<JobSelector> {
        let text = text.trim();
        let bad = || {
            anyhow::anyhow!(
                "`{text}` is not a job ID; give `12`, or `12_3` for element 3 of array 12"
            )
        };
        match text.split_once('_') {
            None => text.parse().map(JobSelector::Job).map_err(|_| bad()),
            Some((array, index)) => Ok(JobSelector::Element {
                array: array.parse().map_err(|_| bad())?,
                index: index.parse().map_err(|_| bad())?,
            }),
        }
    }

    /// Every item of a `-j` list.
    pub fn parse_all(items: &[String]) -> anyhow::Result<Vec<JobSelector>> {
        items.iter().map(|item| JobSelector::parse(item)).collect()
    }

    /// Whether `job` is this job, or an element of this array.
    pub fn matches(self, job: &v1::JobInfo) -> bool {
        match self {
            JobSelector::Job(id) => job.id == id || job.array_job_id == Some(id),
            JobSelector::Element { array, index } => {
                job.array_job_id == Some(array) && job.array_task_id == Some(index)
            }
        }
    }
}

/// Slurm's short state code (`squeue %t`).
pub fn compact_state(state: JobState) -> &'static str {
    match state {
        JobState::Pending => "PD",
        JobState::Running => "R",
        JobState::Completed => "CD",
        JobState::Failed => "F",
        JobState::Cancelled => "CA",
        JobState::Timeout => "TO",
        JobState::NodeFail => "NF",
        JobState::OutOfMemory => "OOM",
    }
}

/// A state as `-t`/`--states` takes it: the name or the short code, any case.
pub fn parse_state(text: &str) -> anyhow::Result<JobState> {
    let text = text.trim();
    JobState::parse(text)
        .or_else(|| {
            JobState::ALL
                .into_iter()
                .find(|s| compact_state(*s).eq_ignore_ascii_case(text))
        })
        .ok_or_else(|| {
            let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            anyhow::anyhow!(
                "invalid job state `{text}`; use one of {}",
                names.join(", ")
            )
        })
}

/// The filters of squeue, scancel and sacct; empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub jobs: Vec<JobSelector>,
    pub users: Vec<String>,
    pub uid: Option<u32>,
    pub partitions: Vec<String>,
    pub states: Vec<JobState>,
    pub names: Vec<String>,
}

impl JobFilter {
    pub fn matches(&self, job: &v1::JobInfo) -> bool {
        (self.jobs.is_empty() || self.jobs.iter().any(|s| s.matches(job)))
            && (self.users.is_empty() || self.users.contains(&job.user))
            && self.uid.is_none_or(|uid| uid == job.uid)
            && (self.partitions.is_empty() || self.partitions.contains(&job.partition))
            && (self.states.is_empty() || job.job_state().is_some_and(|s| self.states.contains(&s)))
            && (self.names.is_empty() || self.names.contains(&job.name))
    }

    /// Whether jobs that ended must be listed for this filter to see what it asks for.
    pub fn needs_ended_jobs(&self) -> bool {
        !self.jobs.is_empty() || self.states.iter().any(|s| s.is_terminal())
    }
}

/// This process's uid, for `--me`.
pub fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// `1:02:03`-style elapsed time of a job, as squeue's `%M` prints it.
pub fn elapsed_ms(job: &v1::JobInfo, now_ms: u64) -> u64 {
    match (job.start_time_ms, job.end_time_ms) {
        (Some(s), Some(e)) => e.saturating_sub(s),
        (Some(s), None) => now_ms.saturating_sub(s),
        _ => 0,
    }
}

/// A date as Slurm's commands print one (`2026-12-07T16:28:00`, UTC), or `fallback`.
pub fn slurm_time(ms: Option<u64>, fallback: &str) -> String {
    match ms {
        Some(ms) => {
            let t = beowulf_types::Timestamp(ms).utc();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            )
        }
        None => fallback.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, array: Option<(u64, u32)>) -> v1::JobInfo {
        v1::JobInfo {
            id,
            array_job_id: array.map(|a| a.0),
            array_task_id: array.map(|a| a.1),
            state: "PENDING".into(),
            user: "ada".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_array_id_names_every_element_and_an_underscore_one() {
        let elements = [
            job(12, Some((12, 0))),
            job(13, Some((12, 1))),
            job(14, None),
        ];
        let whole = JobSelector::parse("12").unwrap();
        assert_eq!(elements.iter().filter(|j| whole.matches(j)).count(), 2);
        let one = JobSelector::parse("12_1").unwrap();
        let matched: Vec<u64> = elements
            .iter()
            .filter(|j| one.matches(j))
            .map(|j| j.id)
            .collect();
        assert_eq!(matched, [13]);
        assert_eq!(job_id_text(&elements[1]), "12_1");
        assert!(JobSelector::parse("12_x").is_err());
    }

    #[test]
    fn states_by_name_or_code() {
        assert_eq!(parse_state("pd").unwrap(), JobState::Pending);
        assert_eq!(parse_state("RUNNING").unwrap(), JobState::Running);
        assert_eq!(parse_state("CA").unwrap(), JobState::Cancelled);
        assert!(
            parse_state("bogus")
                .unwrap_err()
                .to_string()
                .contains("PENDING")
        );
    }
}
