//! This node's GPUs and which run has which: the indices of the NVIDIA device files
//! (`/dev/nvidia0`, ...), given to a run that asks for `gpu` GRES as `CUDA_VISIBLE_DEVICES`.
//!
//! ```text
//!  start: list <gpu_devices>/nvidia<N> ─▶ the node's indices (offered as gres gpu = count
//!         unless computed.toml's offer says otherwise)
//!  run starts with gres gpu = g ─▶ the g lowest indices no other run here holds ─▶ its tasks'
//!         CUDA_VISIBLE_DEVICES, GPU_DEVICE_ORDINAL, SLURM_JOB_GPUS ─▶ freed when it is forgotten
//! ```

use beowulf_types::RunKey;
use std::collections::BTreeMap;
use std::path::Path;

/// The indices of the NVIDIA GPU device files in `dir` (`nvidia0`, `nvidia1`, ...; not
/// `nvidiactl` or `nvidia-uvm`), sorted; none when the directory cannot be read.
pub fn detect(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut indices: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let digits = name.to_str()?.strip_prefix("nvidia")?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect();
    indices.sort_unstable();
    indices
}

/// The node's GPUs and the runs holding them.
#[derive(Debug, Default)]
pub struct GpuBoard {
    indices: Vec<u32>,
    held: BTreeMap<RunKey, Vec<u32>>,
}

impl GpuBoard {
    pub fn new(indices: Vec<u32>) -> Self {
        Self {
            indices,
            held: BTreeMap::new(),
        }
    }

    /// How many GPUs the node has.
    pub fn count(&self) -> usize {
        self.indices.len()
    }

    /// `count` free GPUs for `run` (the lowest free indices), or the ones it holds already;
    /// `None` when fewer are free (the head counts GPUs per node, so only a node whose devices
    /// changed behind the head's back gets there).
    pub fn take(&mut self, run: RunKey, count: u32) -> Option<Vec<u32>> {
        if let Some(held) = self.held.get(&run) {
            return Some(held.clone());
        }
        let free: Vec<u32> = self
            .indices
            .iter()
            .copied()
            .filter(|i| !self.held.values().any(|h| h.contains(i)))
            .take(count as usize)
            .collect();
        if free.len() < count as usize {
            return None;
        }
        self.held.insert(run, free.clone());
        Some(free)
    }

    /// Gives back what `run` held.
    pub fn free(&mut self, run: RunKey) {
        self.held.remove(&run);
    }
}

/// The environment that tells a run's programs which GPUs are theirs.
pub fn environment(indices: &[u32]) -> [(String, String); 3] {
    let list = indices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    [
        ("CUDA_VISIBLE_DEVICES".to_string(), list.clone()),
        ("GPU_DEVICE_ORDINAL".to_string(), list.clone()),
        ("SLURM_JOB_GPUS".to_string(), list),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::JobId;

    #[test]
    fn device_files_name_the_gpus() {
        let dev = tempfile::tempdir().unwrap();
        for name in [
            "nvidia0",
            "nvidia3",
            "nvidia1",
            "nvidiactl",
            "nvidia-uvm",
            "null",
        ] {
            std::fs::write(dev.path().join(name), "").unwrap();
        }
        assert_eq!(detect(dev.path()), [0, 1, 3]);
        assert!(detect(&dev.path().join("missing")).is_empty());
    }

    #[test]
    fn runs_get_disjoint_gpus_and_give_them_back() {
        let run = |job: u64| RunKey {
            job: JobId(job),
            run: 1,
        };
        let mut board = GpuBoard::new(vec![0, 1, 3]);
        assert_eq!(board.take(run(1), 2), Some(vec![0, 1]));
        assert_eq!(
            board.take(run(1), 2),
            Some(vec![0, 1]),
            "asked again: the same"
        );
        assert_eq!(board.take(run(2), 2), None, "only one is free");
        assert_eq!(board.take(run(2), 1), Some(vec![3]));
        board.free(run(1));
        assert_eq!(board.take(run(3), 2), Some(vec![0, 1]));
        assert_eq!(environment(&[0, 3])[0].1, "0,3");
    }
}
