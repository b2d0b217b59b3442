//! Builds the agent's PMIx server shim (`src/pmix/shim.c`) against OpenPMIx's server library
//! (Debian 12: libpmix-dev, found through pkg-config; installed with Open MPI's headers).

use std::process::Command;

/// Where Debian 12 installs libpmix when pkg-config does not say.
const DEBIAN_PMIX: &str = "/usr/lib/x86_64-linux-gnu/pmix2";

fn pkg_config(arg: &str) -> Option<Vec<String>> {
    let out = Command::new("pkg-config")
        .args([arg, "pmix"])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    })
}

fn main() {
    println!("cargo:rerun-if-changed=src/pmix/shim.c");
    let includes: Vec<String> = pkg_config("--cflags-only-I")
        .map(|flags| {
            flags
                .iter()
                .map(|f| f.trim_start_matches("-I").to_string())
                .collect()
        })
        .unwrap_or_else(|| vec![format!("{DEBIAN_PMIX}/include")]);
    let libdirs: Vec<String> = pkg_config("--libs-only-L")
        .map(|flags| {
            flags
                .iter()
                .map(|f| f.trim_start_matches("-L").to_string())
                .collect()
        })
        .unwrap_or_else(|| vec![format!("{DEBIAN_PMIX}/lib")]);
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
