//! Generates the gRPC code for proto/signet/v1 with a vendored protoc, so a build needs no
//! system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; the variable is read by the code generator
    // this same thread calls next.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Messages that carry PINs get a hand-written, redacting Debug (src/api/token_service.rs).
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("signet_descriptor.bin"))
        .skip_debug([
            ".signet.v1.InitializeTokenRequest",
            ".signet.v1.PersonalizeRequest",
            ".signet.v1.ChangePinRequest",
            ".signet.v1.UnblockPinRequest",
            ".signet.v1.ReadTokenRequest",
        ])
        .compile_protos(
            &["proto/signet/v1/ca.proto", "proto/signet/v1/token.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
