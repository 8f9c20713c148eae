//! Generates the protobuf types from `proto/` with protox (pure Rust, no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/distillguard/v1/distillguard.proto",
        "proto/distillguard/v1/stages.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::prost_types")
        .compile_fds(fds)?;
    Ok(())
}
