//! Release builds of the weft binary on Linux:
//! - link the functions a proxy runs first and together, in the order of
//!   symbol-order.txt (written by scripts/symbol_order.py): the kernel maps 64 KB of
//!   code around every page that runs, so hot code scattered over the 24 MB text would
//!   map most of it (measured: 11 MB of text resident at a proxy's start, 2.9 MB in order);
//! - pack the relative relocations (RELR) when the build machine's glibc reads them
//!   (2.36 and later): the 1 MB table the loader reads at every start becomes 12 KB. The
//!   binary then needs glibc 2.36 where it runs (2.34 without); `WEFT_NO_RELR=1` leaves
//!   it out.
//!
//! Each is used only if the linker takes it: a test program is linked with the flags
//! first (lld, Rust's own default on x86_64 Linux, takes both; GNU ld, which a
//! distribution's rustc or a configured linker may use, has no symbol ordering).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WEFT_NO_RELR");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("PROFILE") != "release" || var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let (Some(dir), Some(out)) = (std::env::var_os("CARGO_MANIFEST_DIR"), std::env::var_os("OUT_DIR")) else { return };
    let out = PathBuf::from(out);
    let order = Path::new(&dir).join("symbol-order.txt");
    if order.exists() {
        // (Each its own argument to the linker: a path may hold commas. Names no longer
        // in the binary are skipped without a warning, their code placed after the others.)
        let mut file = OsString::from("--symbol-ordering-file=");
        file.push(order.as_os_str());
        link_if_it_links(&["-Xlinker".into(), file, "-Xlinker".into(), "--no-warn-symbol-ordering".into()], &out);
    }
    if var("HOST") == var("TARGET") && var("WEFT_NO_RELR").is_empty() && glibc_reads_relr(&var("CARGO_CFG_TARGET_ARCH")) {
        link_if_it_links(&["-Xlinker".into(), "-zpack-relative-relocs".into()], &out);
    }
}

/// Passes `args` to the binary's link if a test program links with them.
fn link_if_it_links(args: &[OsString], out: &Path) {
    if links_with(args, out) {
        for a in args {
            println!("cargo:rustc-link-arg-bin=weft={}", a.to_string_lossy());
        }
    }
}

/// Whether a test program links with `args` as this build will link the binary (the
/// same compiler, target, linker and flags).
fn links_with(args: &[OsString], out: &Path) -> bool {
    let src = out.join("link_probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.arg("--target").arg(std::env::var_os("TARGET").unwrap_or_default());
    cmd.arg("-o").arg(out.join("link_probe")).arg(&src);
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut l = OsString::from("linker=");
        l.push(linker);
        cmd.arg("-C").arg(l);
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    for a in args {
        let mut arg = OsString::from("link-arg=");
        arg.push(a);
        cmd.arg("-C").arg(arg);
    }
    cmd.output().is_ok_and(|o| o.status.success())
}

/// Whether this machine's glibc has the symbol version that RELR binaries require.
fn glibc_reads_relr(arch: &str) -> bool {
    let dirs = [format!("/lib/{arch}-linux-gnu"), format!("/usr/lib/{arch}-linux-gnu"), "/lib64".into(), "/usr/lib64".into()];
    dirs.iter().filter_map(|d| std::fs::read(format!("{d}/libc.so.6")).ok()).any(|libc| {
        let needle = b"GLIBC_ABI_DT_RELR";
        libc.windows(needle.len()).any(|w| w == needle)
    })
}
