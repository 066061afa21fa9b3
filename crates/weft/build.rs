//! Release builds of the weft binary on Linux:
//! - link the functions a proxy runs first and together, in the order of
//!   symbol-order.txt (written by scripts/symbol_order.py): the kernel maps 64 KB of
//!   code around every page that runs, so hot code scattered over the 24 MB text would
//!   map most of it (measured: 11 MB of text resident at a proxy's start, 2.9 MB in order);
//! - pack the relative relocations (RELR) when the build machine's glibc reads them
//!   (2.36 and later): the 1 MB table the loader reads at every start becomes 12 KB.

fn main() {
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("PROFILE") != "release" || var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    // (Not when the flags choose another linker: the option is lld's.)
    let other_linker = var("CARGO_ENCODED_RUSTFLAGS").contains("fuse-ld") || var("CARGO_ENCODED_RUSTFLAGS").contains("linker");
    if order.exists() && !other_linker {
        // (lld, Rust's default linker on x86_64 Linux; names no longer in the binary are
        // skipped without a warning, their code placed after the others.)
        println!("cargo:rustc-link-arg-bin=weft=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bin=weft=-Wl,--no-warn-symbol-ordering");
    }
    if var("HOST") == var("TARGET") && var("CARGO_CFG_TARGET_ENV") == "gnu" && glibc_reads_relr(&var("CARGO_CFG_TARGET_ARCH")) {
        println!("cargo:rustc-link-arg-bin=weft=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc has the symbol version that RELR binaries require.
fn glibc_reads_relr(arch: &str) -> bool {
    let dirs = [format!("/lib/{arch}-linux-gnu"), format!("/usr/lib/{arch}-linux-gnu"), "/lib64".into(), "/usr/lib64".into()];
    dirs.iter().filter_map(|d| std::fs::read(format!("{d}/libc.so.6")).ok()).any(|libc| {
        let needle = b"GLIBC_ABI_DT_RELR";
        libc.windows(needle.len()).any(|w| w == needle)
    })
}
