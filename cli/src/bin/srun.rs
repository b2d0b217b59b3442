//! `srun`: a job step inside a job (see `beowulf_cli::slurm`). A program of its own, small
//! enough to install on every compute node beside `computed`; `cluster` run under the name
//! `srun` does the same.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    beowulf_cli::die_quietly_on_closed_pipes();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match beowulf_cli::slurm::run(beowulf_cli::slurm::SlurmCommand::Srun, args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("srun: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
