//! Generates Rust bindings for the Slurm SPANK API from the headers installed on this machine.
//!
//! The allowlist keeps the bindings to what the plugin uses: the `spank_*` functions, Slurm's
//! logging functions, the `ESPANK_*` errors, the `S_CTX_*` contexts and the version number
//! (a SPANK plugin must carry the major.minor of the Slurm that loads it).
//!
//! Headers are looked up in `$SLURM_INCLUDE_DIR` (a directory that holds `slurm/spank.h`), then
//! `/usr/include`, `/usr/local/include`.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let candidates: Vec<PathBuf> = std::env::var_os("SLURM_INCLUDE_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/include", "/usr/local/include"].map(PathBuf::from))
        .collect();
    let Some(include) = candidates
        .iter()
        .find(|d| d.join("slurm/spank.h").is_file())
    else {
        panic!(
            "slurm/spank.h not found in {}: install Slurm's development headers \
             (Debian: apt-get install libslurm-dev) or set SLURM_INCLUDE_DIR",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    println!(
        "cargo:rerun-if-changed={}",
        include.join("slurm/spank.h").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        include.join("slurm/slurm_version.h").display()
    );
    let bindings = bindgen::Builder::default()
        .header_contents(
            "extnet_slurm.h",
            "#include <slurm/slurm_version.h>\n#include <slurm/spank.h>\n",
        )
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("spank_.*")
        .allowlist_function("slurm_(error|info|verbose|debug|debug2|debug3|spank_log)")
        .allowlist_type(
            "spank_err|spank_err_t|spank_context|spank_context_t|spank_item|spank_item_t",
        )
        .allowlist_type("spank_option|spank_opt_cb_f|spank_t|spank_handle")
        .allowlist_var("ESPANK_.*|S_CTX_.*|SLURM_VERSION_.*|SPANK_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {}/slurm/spank.h: {e}", include.display()));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(Path::new(&out).join("slurm_bindings.rs"))
        .expect("write slurm_bindings.rs to OUT_DIR");
}
