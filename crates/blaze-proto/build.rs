//! Compiles `proto/` with protox (no protoc needed).
//!
//! Two outputs: the *lossless* encoded descriptor set (extension options such
//! as `google.api.http` survive; a round trip through `prost_types` would drop
//! them) for the edge, reflection and OpenAPI, and tonic/prost code generated
//! from the `prost_types` view, which is fine for codegen.
use std::{env, fs, path::PathBuf};

fn proto_files(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = fs::read_dir(dir).expect("read proto dir").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            proto_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path.strip_prefix(root).expect("under root").to_string_lossy().into_owned());
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    let mut files = Vec::new();
    proto_files(&root.join("blaze"), &root, &mut files);

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true).open_files(&files)?;

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("blaze_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(compiler.file_descriptor_set())?;

    println!("cargo:rerun-if-changed={}", root.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    Ok(())
}
