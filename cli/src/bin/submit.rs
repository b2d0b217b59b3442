//! `submit`: the short name of `cluster submit`.

use clap::Parser;

/// Queue a job described by a job file (same as `cluster submit`).
#[derive(Debug, Parser)]
#[command(
    name = "submit",
    version,
    about = "Queue a job: a job file (job.toml) or a batch script with #SBATCH lines; as `sbatch`, answers as sbatch does"
)]
struct SubmitCli {
    #[command(flatten)]
    global: beowulf_cli::Global,
    #[command(flatten)]
    args: beowulf_cli::SubmitArgs,
}

fn main() {
    beowulf_cli::die_quietly_on_closed_pipes();
    let mut cli = SubmitCli::parse();
    // Installed also as `sbatch` (a link to this program): answer as sbatch does.
    cli.args.as_sbatch = std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|n| n == "sbatch")
        })
        .unwrap_or(false);
    let socket = cli.global.socket();
    // A plain submit needs no async runtime: its start-up is most of a submit's cost in a loop.
    let code = match beowulf_cli::submit_quick(&socket, &cli.args) {
        Ok(Some(code)) => Ok(code),
        Ok(None) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| {
                runtime.block_on(beowulf_cli::submit_over_grpc(&socket, &cli.args))
            }),
        Err(e) => Err(e),
    };
    std::process::exit(code.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        1
    }));
}
