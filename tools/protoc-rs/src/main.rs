//! `protoc` as prost-build calls it, in pure Rust: `--include_imports
//! [--include_source_info] -o OUT -I DIR… FILE…` writes the files' FileDescriptorSet to
//! OUT. Built and run by `tools/protoc`, which `.cargo/config.toml` names as `PROTOC`,
//! so that the etcd client's build script compiles etcd's protocol files on a machine
//! with nothing but cargo.

use std::path::PathBuf;
use std::process::ExitCode;

use prost::Message;

struct Args {
    out: Option<PathBuf>,
    includes: Vec<PathBuf>,
    files: Vec<PathBuf>,
    include_imports: bool,
    include_source_info: bool,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args { out: None, includes: Vec::new(), files: Vec::new(), include_imports: false, include_source_info: false };
    while let Some(arg) = it.next() {
        let mut value = |flag: &str, inline: Option<&str>| -> Result<PathBuf, String> {
            match inline {
                Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
                _ => it.next().map(PathBuf::from).ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match arg.as_str() {
            "--version" => return Err("version".into()),
            "--include_imports" => a.include_imports = true,
            "--include_source_info" => a.include_source_info = true,
            "--experimental_allow_proto3_optional" => {}
            "-o" | "--descriptor_set_out" => a.out = Some(value("-o", None)?),
            "-I" | "--proto_path" => a.includes.push(value("-I", None)?),
            s if s.starts_with("--descriptor_set_out=") => a.out = Some(value("-o", s.split_once('=').map(|x| x.1))?),
            s if s.starts_with("--proto_path=") => a.includes.push(value("-I", s.split_once('=').map(|x| x.1))?),
            s if s.starts_with("-I") => a.includes.push(value("-I", Some(&s[2..]))?),
            s if s.starts_with("-o") => a.out = Some(value("-o", Some(&s[2..]))?),
            s if s.starts_with('-') => return Err(format!("unsupported option {s}")),
            s => a.files.push(PathBuf::from(s)),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(v) if v == "version" => {
            println!("libprotoc 29.0 (weft-protoc, protox)");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("weft-protoc: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(out) = args.out else {
        eprintln!("weft-protoc: only the descriptor-set mode (-o FILE) is supported");
        return ExitCode::from(2);
    };
    let includes = if args.includes.is_empty() { vec![PathBuf::from(".")] } else { args.includes };
    let mut compiler = match protox::Compiler::new(includes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft-protoc: {e}");
            return ExitCode::FAILURE;
        }
    };
    compiler.include_imports(args.include_imports).include_source_info(args.include_source_info);
    if let Err(e) = compiler.open_files(&args.files) {
        eprintln!("weft-protoc: {e:?}");
        return ExitCode::FAILURE;
    }
    let set = compiler.file_descriptor_set();
    if let Err(e) = std::fs::write(&out, set.encode_to_vec()) {
        eprintln!("weft-protoc: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
