//! Docs that cannot drift, checked as tests (rust-analyzer's `tidy`): `cargo test -p xtask`,
//! part of `cargo xtask test`.
//!
//! - ARCHITECTURE.md's crate map names every workspace member, and nothing else.
//! - Every crate root's `# Layout` names every module the root declares, and names no
//!   module that does not exist. A Layout bullet names a module in its head (the text before
//!   its first `: `) as `` `name` ``, `` [`name`] `` or `` `name.rs` ``.

#![cfg(test)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::repo_root;

/// The workspace members, from the root `Cargo.toml` (`members = [ ... ]`).
fn workspace_members(root: &Path) -> BTreeSet<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("read Cargo.toml");
    let start = manifest.find("members = [").expect("a members list");
    let list = &manifest[start..];
    let list = &list[..list.find(']').expect("the members list ends")];
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The paths ARCHITECTURE.md's crate map names: the first word of each unindented line of
/// the first code block under `## Crates`.
fn crate_map(root: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let section = &text[text.find("## Crates").expect("a ## Crates section")..];
    let block = section
        .split("```")
        .nth(1)
        .expect("a code block under ## Crates");
    block
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with(char::is_whitespace))
        .filter_map(|line| line.split_whitespace().next())
        .map(|path| path.trim_end_matches('/').to_owned())
        .collect()
}

/// The crate root of a member: `src/lib.rs`, else `src/main.rs`.
fn crate_root(member: &Path) -> PathBuf {
    let lib = member.join("src/lib.rs");
    if lib.exists() {
        lib
    } else {
        member.join("src/main.rs")
    }
}

/// The modules a crate root declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_modules(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            let rest = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.to_owned())
        })
        .collect()
}

/// The names the `# Layout` section's bullet heads put in backticks, as modules: plain
/// identifiers (a `.rs` suffix dropped), without paths, crate roots or other crates' names.
/// `None` without a `# Layout` section.
fn layout_modules(source: &str) -> Option<BTreeSet<String>> {
    let docs: Vec<&str> = source
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect();
    let start = docs.iter().position(|line| *line == "# Layout")?;
    let mut names = BTreeSet::new();
    for line in docs[start + 1..].iter().take_while(|l| !l.starts_with('#')) {
        let Some(bullet) = line.strip_prefix("- ") else {
            continue;
        };
        let head = bullet.split(": ").next().unwrap_or(bullet);
        for quoted in head.split('`').skip(1).step_by(2) {
            let name = quoted.strip_suffix(".rs").unwrap_or(quoted);
            let identifier = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if identifier && name != "main" && name != "lib" {
                names.insert(name.to_owned());
            }
        }
    }
    Some(names)
}

#[test]
fn the_crate_map_names_every_workspace_member_and_nothing_else() {
    let root = repo_root();
    let members = workspace_members(&root);
    let map = crate_map(&root);
    let missing: Vec<_> = members.difference(&map).collect();
    let stale: Vec<_> = map.difference(&members).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's crate map is out of date: missing {missing:?}, naming crates that \
         are not workspace members {stale:?}; fix the map under ## Crates"
    );
}

#[test]
fn every_crate_layout_names_exactly_its_modules() {
    let root = repo_root();
    let mut problems = Vec::new();
    for member in workspace_members(&root) {
        let path = crate_root(&root.join(&member));
        let source = fs::read_to_string(&path).expect("read a crate root");
        let declared = declared_modules(&source);
        let Some(named) = layout_modules(&source) else {
            if !declared.is_empty() {
                problems.push(format!(
                    "{}: declares modules {declared:?} but has no `# Layout` section",
                    path.display()
                ));
            }
            continue;
        };
        let missing: Vec<_> = declared.difference(&named).collect();
        let unknown: Vec<_> = named.difference(&declared).collect();
        if !missing.is_empty() || !unknown.is_empty() {
            problems.push(format!(
                "{}: `# Layout` misses modules {missing:?} and names modules that do not \
                 exist {unknown:?}",
                path.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_see_what_they_claim_to() {
    let source = "//! # Layout\n//!\n//! - `task`: the loop.\n//! - [`Master`] (`shared.rs`): \
                  the handle; `not_a_head`.\n//!\n//! # Next\n//! - `ignored`: after.\nmod task;\npub mod shared;\n";
    assert_eq!(
        layout_modules(source).unwrap(),
        BTreeSet::from(["shared".to_owned(), "task".to_owned()])
    );
    assert_eq!(
        declared_modules(source),
        BTreeSet::from(["shared".to_owned(), "task".to_owned()])
    );
    assert_eq!(layout_modules("//! no layout\nmod a;\n"), None);
}
