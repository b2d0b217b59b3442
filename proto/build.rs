//! Generates the gRPC code from `proto/beowulf.proto` with protox, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/beowulf.proto");
    let descriptors = protox::compile(["proto/beowulf.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
