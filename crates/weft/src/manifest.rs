//! The YAML files `weft apply -f` and `weft delete -f` are given: files, directories
//! of them, or `-` for stdin — each read to at most what one API request may carry
//! (a 100 MB stdin is refused before anything is sent).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use weft_api::admin::MAX_REQUEST_BYTES;
use weft_api::{Committed, FileText, ResourceQuery};

use crate::ctl::{answer, call, yaml_files, ServerArg};

/// The text of every file `paths` name (directories: their *.yaml, *.yml).
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<FileText>, String> {
    let mut all = Vec::new();
    for f in paths {
        if f.as_os_str() == "-" {
            all.push(PathBuf::from("-"));
        } else {
            yaml_files(f, &mut all)?;
        }
    }
    all.iter().map(|p| read_one(p)).collect()
}

fn read_one(p: &Path) -> Result<FileText, String> {
    let (name, r): (String, Box<dyn Read>) = match p.as_os_str() == "-" {
        true => ("stdin".into(), Box::new(std::io::stdin())),
        false => (p.display().to_string(), Box::new(std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?)),
    };
    let mut bytes = Vec::new();
    r.take(MAX_REQUEST_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(format!("{name}: over the {} MiB one request to the control plane may carry", MAX_REQUEST_BYTES >> 20));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{name}: not UTF-8 text, so not YAML"))?;
    Ok(FileText { name, text })
}

/// A resource a file declares: (kind as the store spells it, namespace, name).
type Declared = (&'static str, Option<String>, String);

/// The resources `f`'s documents declare; a document without kind and name, or of a
/// kind there is not, is an error naming it.
fn declared(f: &FileText) -> Vec<Result<Declared, String>> {
    let docs: Vec<Value> = match serde_saphyr::from_multiple(&f.text) {
        Ok(d) => d,
        Err(e) => return vec![Err(format!("{}: invalid YAML: {}", f.name, e.to_string().lines().next().unwrap_or("")))],
    };
    docs.into_iter().enumerate().filter(|(_, d)| !d.is_null()).map(|(i, d)| one(&f.name, i + 1, &d)).collect()
}

fn one(file: &str, doc: usize, d: &Value) -> Result<Declared, String> {
    let at = format!("{file} (document {doc})");
    let kind = d["kind"].as_str().ok_or_else(|| format!("{at}: no kind"))?;
    let name = d["metadata"]["name"].as_str().ok_or_else(|| format!("{at}: no metadata.name"))?;
    let cut = |s: &str| format!("{:?}", weft_api::truncate(s, 64));
    let kind = weft_control::plane::canonical_kind(kind)
        .ok_or_else(|| format!("{at}: unknown kind {} (`weft get --help` lists them)", cut(kind)))?;
    let namespace = d["metadata"]["namespace"].as_str().map(str::to_owned);
    Ok((kind, namespace, name.to_owned()))
}

/// `weft delete -f`: deletes each resource the files declare (in `namespace` when a
/// document names none, as kubectl's -n), saying what became of each; fails if any
/// could not be read, named or deleted.
pub fn delete_files(paths: &[PathBuf], namespace: Option<&str>, s: &ServerArg) -> ExitCode {
    let files = match read_all(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for d in files.iter().flat_map(declared) {
        let ok = match d {
            Ok((kind, ns, name)) => delete_one(s, (kind, ns.or(namespace.map(str::to_owned)), name)),
            Err(e) => {
                eprintln!("error: {e}");
                false
            }
        };
        failed |= !ok;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn delete_one(s: &ServerArg, (kind, namespace, name): Declared) -> bool {
    let what = format!("{}/{}/{}", kind, namespace.as_deref().unwrap_or("default"), crate::table::escape(weft_api::truncate(&name, 253)));
    let q = ResourceQuery { kind: Some(kind.to_owned()), name: Some(name), namespace };
    let r = call(s, "DELETE", &format!("/v1/resources?{}", q.to_query()), None);
    if !matches!(r, Ok((200, _))) {
        eprint!("{what}: ");
        return answer::<Committed>(r).is_ok();
    }
    match answer::<Committed>(r) {
        Ok(c) => {
            println!("{what} deleted (revision {})", c.revision);
            true
        }
        Err(_) => false,
    }
}
