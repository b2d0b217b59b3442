//! This node's GPUs and which run has which: the indices of the NVIDIA device files
//! (`/dev/nvidia0`, ...) or of the AMD ones (`/dev/kfd` and the render nodes
//! `/dev/dri/renderD128`, ...), given to a run that asks for `gpu` GRES as
//! `CUDA_VISIBLE_DEVICES` (NVIDIA) or `ROCR_VISIBLE_DEVICES` (AMD), as Slurm's gres plugins do.
//!
//! ```text
//!  start: list <gpu_devices>/nvidia<N>, else <gpu_devices>/dri/renderD<M> when kfd exists ─▶
//!         the node's indices (offered as gres gpu = count unless computed.toml's offer says
//!         otherwise)
//!  run starts with gres gpu = g ─▶ the g lowest indices no other run here holds ─▶ its tasks'
//!         CUDA_VISIBLE_DEVICES or ROCR_VISIBLE_DEVICES, GPU_DEVICE_ORDINAL, SLURM_JOB_GPUS ─▶
//!         freed when it is forgotten
//! ```

use beowulf_types::RunKey;
use std::collections::BTreeMap;
use std::path::Path;

/// Whose GPUs a node has: it decides the variable that tells programs which are theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuVendor {
    /// CUDA: `CUDA_VISIBLE_DEVICES` takes the device files' numbers.
    #[default]
    Nvidia,
    /// ROCm: `ROCR_VISIBLE_DEVICES` takes the GPUs' ordinals, in render-node order.
    Amd,
}

/// The GPUs found in a device directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeGpus {
    pub vendor: GpuVendor,
    /// Sorted.
    pub indices: Vec<u32>,
}

/// The GPUs of the device directory `dir`: NVIDIA's device files (`nvidia0`, `nvidia1`, ...;
/// not `nvidiactl` or `nvidia-uvm`) by their numbers, else, when the ROCm kernel driver is
/// there (`kfd`), AMD's render nodes (`dri/renderD128`, ...) by their order; none when there
/// are neither (or the directory cannot be read).
pub fn detect(dir: &Path) -> NodeGpus {
    let nvidia = numbered(dir, "nvidia");
    if !nvidia.is_empty() {
        return NodeGpus {
            vendor: GpuVendor::Nvidia,
            indices: nvidia,
        };
    }
    if dir.join("kfd").exists() {
        let render = numbered(&dir.join("dri"), "renderD");
        return NodeGpus {
            vendor: GpuVendor::Amd,
            indices: (0..render.len() as u32).collect(),
        };
    }
    NodeGpus::default()
}

/// The numbers N of the entries `<prefix>N` of `dir`, sorted.
fn numbered(dir: &Path, prefix: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut indices: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let digits = name.to_str()?.strip_prefix(prefix)?;
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
    vendor: GpuVendor,
    indices: Vec<u32>,
    held: BTreeMap<RunKey, Vec<u32>>,
}

impl GpuBoard {
    pub fn new(gpus: NodeGpus) -> Self {
        Self {
            vendor: gpus.vendor,
            indices: gpus.indices,
            held: BTreeMap::new(),
        }
    }

    /// The environment that tells a run's programs which GPUs (`indices`) are theirs.
    pub fn environment(&self, indices: &[u32]) -> [(String, String); 3] {
        environment(self.vendor, indices)
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

/// The environment that tells a run's programs which of `vendor`'s GPUs are theirs.
pub fn environment(vendor: GpuVendor, indices: &[u32]) -> [(String, String); 3] {
    let list = indices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let visible = match vendor {
        GpuVendor::Nvidia => "CUDA_VISIBLE_DEVICES",
        GpuVendor::Amd => "ROCR_VISIBLE_DEVICES",
    };
    [
        (visible.to_string(), list.clone()),
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
        assert_eq!(
            detect(dev.path()),
            NodeGpus {
                vendor: GpuVendor::Nvidia,
                indices: vec![0, 1, 3]
            }
        );
        assert_eq!(detect(&dev.path().join("missing")), NodeGpus::default());
    }

    #[test]
    fn amd_gpus_are_the_render_nodes_of_a_node_with_the_rocm_driver() {
        let dev = tempfile::tempdir().unwrap();
        std::fs::create_dir(dev.path().join("dri")).unwrap();
        for name in ["renderD129", "renderD128", "card0", "card1"] {
            std::fs::write(dev.path().join("dri").join(name), "").unwrap();
        }
        // Without kfd the render nodes are a display's (an Intel or AMD graphics chip).
        assert_eq!(detect(dev.path()), NodeGpus::default());
        std::fs::write(dev.path().join("kfd"), "").unwrap();
        let gpus = detect(dev.path());
        assert_eq!(
            gpus,
            NodeGpus {
                vendor: GpuVendor::Amd,
                indices: vec![0, 1]
            }
        );
        let env = GpuBoard::new(gpus).environment(&[1]);
        assert_eq!(
            env[0],
            ("ROCR_VISIBLE_DEVICES".to_string(), "1".to_string())
        );
    }

    #[test]
    fn runs_get_disjoint_gpus_and_give_them_back() {
        let run = |job: u64| RunKey {
            job: JobId(job),
            run: 1,
        };
        let mut board = GpuBoard::new(NodeGpus {
            vendor: GpuVendor::Nvidia,
            indices: vec![0, 1, 3],
        });
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
        assert_eq!(
            board.environment(&[0, 3])[0],
            ("CUDA_VISIBLE_DEVICES".to_string(), "0,3".to_string())
        );
    }
}
