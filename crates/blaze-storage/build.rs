//! Embeds the app templates (`templates/<id>/`) into the binary, so every
//! artifacts replica seeds repositories from exactly the same files.
use std::{env, fmt::Write as _, fs, path::Path};

const SKIP: [&str; 4] = ["node_modules", "dist", ".DS_Store", ".vite"];

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    // a file added anywhere must re-embed the template
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<_> = fs::read_dir(dir).expect("read template dir").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if SKIP.contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/"));
        }
    }
}

fn main() {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../templates").canonicalize().expect("templates/ exists");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut code = String::from("/// (template id, [(path, content)])\npub static EMBEDDED: &[(&str, Files)] = &[\n");
    let mut ids: Vec<_> = fs::read_dir(&root).expect("read templates").flatten().filter(|e| e.path().is_dir()).collect();
    ids.sort_by_key(|e| e.file_name());
    for id in ids {
        let dir = id.path();
        let mut files = Vec::new();
        walk(&dir, &dir, &mut files);
        writeln!(code, "    ({:?}, &[", id.file_name().to_string_lossy()).unwrap();
        for f in files {
            let abs = dir.join(&f);
            println!("cargo:rerun-if-changed={}", abs.display());
            writeln!(code, "        ({f:?}, include_bytes!({:?})),", abs.display().to_string()).unwrap();
        }
        code.push_str("    ]),\n");
    }
    code.push_str("];\n");
    fs::write(Path::new(&env::var("OUT_DIR").unwrap()).join("templates.rs"), code).unwrap();
}
