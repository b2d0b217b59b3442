//! `cluster`: run and use a Beowulf cluster.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    beowulf_cli::die_quietly_on_closed_pipes();
    // Installed also as squeue, scancel, sacct, sinfo and scontrol (links to this program).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let slurm = args
        .first()
        .and_then(|arg0| beowulf_cli::slurm::SlurmCommand::from_program_name(arg0));
    let result = match slurm {
        Some(command) => beowulf_cli::slurm::run(command, args).await,
        None => beowulf_cli::run(beowulf_cli::Cli::parse_from(args)).await,
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
