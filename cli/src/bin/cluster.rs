//! `cluster`: run and use a Beowulf cluster.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    beowulf_cli::die_quietly_on_closed_pipes();
    let cli = beowulf_cli::Cli::parse();
    let code = match beowulf_cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
