//! The library's layers import only downward (docs/design/architecture.md).
//!
//! Reads every source file of the library (not the binaries, not test
//! code), finds each `crate::` and `super::` path outside comments, and
//! fails when a file names a module of a higher layer than its own. A
//! name re-exported at the crate root (`crate::Algorithm`) counts as the
//! module that defines it, read from `src/lib.rs`'s `pub use` lines.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Layers from the bottom; a module path belongs to the layer of its
/// longest listed prefix. Files of one layer may use each other.
const LAYERS: &[(&str, &[&str])] = &[
    ("data and formats", &["element", "codec", "op", "wire", "error", "verify"]),
    ("pure schedules and cost model", &["schedule", "tuning"]),
    ("kernels and carriers", &["cpu", "cuda", "transport", "flight"]),
    (
        "the executor and its backends",
        &["buffers", "exec", "cuda::staged", "cuda::staged_rank", "cuda::walk", "cuda::ranks", "cuda::twin"],
    ),
    ("the communicator", &["comm"]),
    ("start-up, training, tools", &["mpi", "local", "gradsync", "candle", "sim", "cuda::reference"]),
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (i, (_, prefixes)) in LAYERS.iter().enumerate() {
        for p in prefixes.iter() {
            let hit = module == *p || module.starts_with(&format!("{p}::"));
            if hit && best.is_none_or(|(len, _, _)| p.len() > len) {
                best = Some((p.len(), i, p));
            }
        }
    }
    best.map(|(_, i, p)| (i, p))
}

/// `src/cuda/walk.rs` -> `cuda::walk`; `src/comm/mod.rs` -> `comm`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| *p != "mod").collect();
    parts.join("::")
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module paths named in `code`, as `crate::a::b` (a `super::` path taken
/// from `module`, the file's own module; a name re-exported at the root
/// replaced by its module).
fn named_modules(code: &str, module: &str, roots: &HashMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (kw, base) in [("crate::", String::new()), ("super::", String::from("super"))] {
        let mut at = 0;
        while let Some(i) = code[at..].find(kw) {
            let start = at + i;
            at = start + kw.len();
            if start > 0 && code[..start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue; // `x::crate::` is no such path; `super::super::` is read from its first.
            }
            let rest: String = code[at..].chars().take_while(|c| ident(*c)).collect();
            let mut segs: Vec<&str> = rest.split("::").filter(|s| !s.is_empty()).collect();
            let mut path: Vec<String> = Vec::new();
            if base == "super" {
                // `super` of `cuda::walk` (src/cuda/walk.rs) is `cuda`, and
                // of `cuda` (src/cuda/mod.rs) the root.
                let mut own: Vec<&str> = module.split("::").collect();
                let ups = 1 + segs.iter().take_while(|s| **s == "super").count();
                segs.drain(..ups - 1);
                for _ in 0..ups {
                    own.pop();
                }
                path.extend(own.iter().map(|s| s.to_string()));
            }
            path.extend(segs.iter().map(|s| s.to_string()));
            let Some(first) = path.first() else { continue };
            if let Some(m) = roots.get(first) {
                let mut full: Vec<String> = m.split("::").map(String::from).collect();
                full.append(&mut path);
                path = full;
            }
            // Keep the module part: segments up to the first that names an
            // item (upper case) or a value.
            let mods: Vec<String> =
                path.into_iter().take_while(|s| s.starts_with(|c: char| c.is_lowercase())).collect();
            if !mods.is_empty() {
                out.push(mods.join("::"));
            }
        }
    }
    out
}

/// Root re-exports: `pub use comm::{AllreduceOpts, Communicator};` ->
/// `AllreduceOpts` -> `comm`.
fn root_names(lib: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else { continue };
        let rest = rest.trim_end_matches(';');
        let (path, names) = match rest.find("::{") {
            Some(i) => (&rest[..i], rest[i + 3..].trim_end_matches('}').to_string()),
            None => match rest.rfind("::") {
                Some(i) => (&rest[..i], rest[i + 2..].to_string()),
                None => continue,
            },
        };
        for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            m.insert(n.to_string(), path.to_string());
        }
    }
    m
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "bin" {
                sources(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().unwrap() != "tests.rs" {
            out.push(p);
        }
    }
}

#[test]
fn every_layer_imports_only_its_own_and_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let roots = root_names(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for f in &files {
        let module = module_of(&src, f);
        if module == "lib" {
            continue; // the crate root re-exports every layer
        }
        let Some((own, _)) = layer_of(&module) else {
            wrong.push(format!("{}: module `{module}` is in no layer; add it to LAYERS", f.display()));
            continue;
        };
        let code = code_of(&fs::read_to_string(f).unwrap());
        for target in named_modules(&code, &module, &roots) {
            checked += 1;
            match layer_of(&target) {
                Some((t, prefix)) if t > own => wrong.push(format!(
                    "{} ({}, layer {own}) uses `{target}` ({}, layer {t}, via `{prefix}`)",
                    f.display(),
                    LAYERS[own].0,
                    LAYERS[t].0
                )),
                Some(_) => {}
                None => wrong.push(format!("{}: `{target}` is in no layer; add it to LAYERS", f.display())),
            }
        }
    }
    assert!(checked > 100, "only {checked} paths found: the scan is broken");
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_an_upward_import() {
    let roots = root_names("pub use comm::{AllreduceOpts, Communicator};\npub use schedule::Algorithm;");
    let code = code_of("use crate::Communicator;\n// use crate::mpi::x;\nuse super::walk::Src;\n");
    let got = named_modules(&code, "cuda::staged", &roots);
    assert_eq!(got, vec!["comm".to_string(), "cuda::walk".to_string()]);
    assert!(layer_of("comm").unwrap().0 > layer_of("transport").unwrap().0);
}
