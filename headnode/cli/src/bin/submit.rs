//! `submit`: the short name of `cluster submit`.

use clap::Parser;

/// Queue a job described by a job file (same as `cluster submit`).
#[derive(Debug, Parser)]
#[command(name = "submit", version)]
struct SubmitCli {
    #[command(flatten)]
    global: beowulf_cli::Global,
    #[command(flatten)]
    args: beowulf_cli::SubmitArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = SubmitCli::parse();
    let code = match beowulf_cli::submit(&cli.global.socket(), &cli.args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
