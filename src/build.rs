//! Puts the git commit the binary is built from into `SHIPPER_COMMIT` (`--version`, the metrics'
//! `shipper_build_info`), so that two builds can be told apart; `unknown` outside a git checkout.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    // The commit only: uncommitted changes are not looked for (`git status` rewrites the index,
    // which would make every build run this again and rebuild the crate).
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHIPPER_COMMIT={commit}");
    // Built again when HEAD moves or the branch it names does (a worktree's HEAD is its own, its
    // branches are the common directory's).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(&dir).join("HEAD").display()
        );
    }
    if let (Some(common), Some(head)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        let common = PathBuf::from(common);
        println!("cargo:rerun-if-changed={}", common.join(&head).display());
        println!(
            "cargo:rerun-if-changed={}",
            common.join("packed-refs").display()
        );
    }
    println!("cargo:rerun-if-changed=src/build.rs");
}
