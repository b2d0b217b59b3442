//! Builds the agent's PMIx server shim (`src/pmix/shim.c`) against OpenPMIx's server library
//! (Debian 12: libpmix-dev, found through pkg-config; installed with Open MPI's headers).

use std::process::Command;

/// Where Debian 12 installs libpmix when pkg-config does not say.
const DEBIAN_PMIX: &str = "/usr/lib/x86_64-linux-gnu/pmix2";

/// The paths pkg-config gives with `flag` (`--cflags-only-I` → `-I...`), each without its
/// two-letter prefix; `fallback` under Debian's directory when pkg-config has nothing.
fn pkg_paths(flag: &str, fallback: &str) -> Vec<String> {
    let out = Command::new("pkg-config").args([flag, "pmix"]).output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|f| f.get(2..).unwrap_or_default().to_string())
            .collect(),
        _ => vec![format!("{DEBIAN_PMIX}/{fallback}")],
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src/pmix/shim.c");
    let includes = pkg_paths("--cflags-only-I", "include");
    let libdirs = pkg_paths("--libs-only-L", "lib");
    let mut build = cc::Build::new();
    build
        .file("src/pmix/shim.c")
        .warnings(true)
        .extra_warnings(true);
    for dir in &includes {
        build.include(dir);
    }
    build.compile("beowulf_pmix_shim");
    for dir in &libdirs {
        println!("cargo:rustc-link-search=native={dir}");
    }
    println!("cargo:rustc-link-lib=dylib=pmix");
}
