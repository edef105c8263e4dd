//! The source tree's architecture, checked: no import cycle between the top-level rooms of
//! `src/` (pki, hsm, store, ca, api, token, ...) nor between the files of any one room, and
//! nothing outside `src/cli/` and `src/main.rs` prints to the terminal.
//!
//! The check reads the sources as text. It takes every `use` tree (braces expanded) and every
//! inline `crate::…`, `super::…` and `self::…` path outside `#[cfg(test)]` code, resolves each
//! to the file of the module it names, follows `pub use` re-exports to the file that defines
//! the name, and looks for strongly connected components of more than one file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root, e.g. `["ca", "ocsp"]`.
type ModPath = Vec<String>;

struct SourceFile {
    module: ModPath,
    rel: String,
    /// Code with comments, strings and `#[cfg(test)]` items removed.
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Removes comments, string and char literals (kept as empty quotes).
fn strip_comments_and_strings(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&b, i) {
            // raw string r"..." or r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == '#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == '"' {
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            } else {
                out.push(c);
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                let mut j = i + 3;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// Removes every item that follows a `#[cfg(test)]` attribute (a `mod tests { ... }` block
/// or a single item up to its `;` or closing brace).
fn strip_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // Skip to the end of the item: the first `;` before any `{`, or the matching `}`.
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, ch) in after.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn load_sources() -> Vec<SourceFile> {
    let root = src_dir();
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    paths
        .into_iter()
        .filter_map(|p| {
            let rel = p
                .strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            // The binary's root is not part of the library's module tree.
            if rel == "main.rs" {
                return None;
            }
            let mut module: ModPath = rel
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_owned)
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&p).expect("read source");
            let code = strip_test_items(&strip_comments_and_strings(&text));
            Some(SourceFile { module, rel, code })
        })
        .collect()
}

/// One `use` declaration's paths, braces expanded, and whether it was `pub use`.
fn use_paths(code: &str) -> Vec<(bool, Vec<String>)> {
    use_statements(code)
        .into_iter()
        .flat_map(|(public, range)| {
            expand_use(&code[range])
                .into_iter()
                .map(move |p| (public, p))
        })
        .collect()
}

/// The code with its `use` statements blanked out, for the inline path scan.
fn without_uses(code: &str) -> String {
    let mut out = code.to_owned();
    for (_, range) in use_statements(code) {
        out.replace_range(range.clone(), &" ".repeat(range.len()));
    }
    out
}

/// Each `use` statement: whether it is a re-export, and the byte range of its tree.
fn use_statements(code: &str) -> Vec<(bool, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(off) = code[i..].find("use ") {
        let at = i + off;
        i = at + 4;
        let before = &code[..at];
        let word_start = at == 0 || !is_ident_byte(bytes[at - 1]);
        if !word_start {
            continue;
        }
        let line_start = before.rfind(['\n', ';', '{', '}']).map_or(0, |p| p + 1);
        let prefix = before[line_start..].trim();
        let public = prefix.starts_with("pub");
        if !(prefix.is_empty() || prefix.starts_with("pub") || prefix.starts_with("#[")) {
            continue;
        }
        let Some(end) = code[i..].find(';') else {
            break;
        };
        out.push((public, i..i + end));
        i += end + 1;
    }
    out
}

fn expand_use(text: &str) -> Vec<Vec<String>> {
    {
        // `x as y` keeps x: mark the rename before whitespace goes.
        let tree: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" as ", "@")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        expand_tree(&tree)
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Expands `a::{b, c::{d, e}}` into `[a::b, a::c::d, a::c::e]`, each split on `::`.
fn expand_tree(tree: &str) -> Vec<Vec<String>> {
    fn split_top(s: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (k, ch) in s.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..k]);
                    start = k + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts.into_iter().filter(|p| !p.is_empty()).collect()
    }
    let mut out = Vec::new();
    if let Some(brace) = tree.find('{') {
        let head = tree[..brace].trim_end_matches("::");
        let inner = &tree[brace + 1..tree.rfind('}').unwrap_or(tree.len())];
        for part in split_top(inner) {
            for tail in expand_tree(part) {
                let mut p: Vec<String> = if head.is_empty() {
                    Vec::new()
                } else {
                    head.split("::").map(str::to_owned).collect()
                };
                if tail.first().is_some_and(|t| t == "self") {
                    p.extend(tail.into_iter().skip(1));
                } else {
                    p.extend(tail);
                }
                out.push(p);
            }
        }
    } else {
        let path = tree.split('@').next().unwrap_or(tree);
        out.push(path.split("::").map(str::to_owned).collect());
    }
    out
}

/// Inline paths such as `crate::ca::ocsp::provision` or `super::Authority` in code.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut i = 0;
        while let Some(off) = code[i..].find(start) {
            let at = i + off;
            i = at + start.len();
            if at > 0 && (is_ident_byte(code.as_bytes()[at - 1]) || code.as_bytes()[at - 1] == b':')
            {
                continue;
            }
            let mut end = at;
            let b = code.as_bytes();
            while end < b.len() && (is_ident_byte(b[end]) || b[end] == b':') {
                end += 1;
            }
            let path: Vec<String> = code[at..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            out.push(path);
        }
    }
    out
}

struct Tree {
    files: Vec<SourceFile>,
    by_module: BTreeMap<ModPath, usize>,
    /// For each module file: a name it re-exports (`pub use x::Name`) → the path it points at.
    reexports: Vec<BTreeMap<String, ModPath>>,
}

impl Tree {
    fn new() -> Tree {
        let files = load_sources();
        let by_module = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        let mut tree = Tree {
            files,
            by_module,
            reexports: Vec::new(),
        };
        tree.reexports = (0..tree.files.len())
            .map(|i| {
                use_paths(&tree.files[i].code)
                    .into_iter()
                    .filter(|(public, _)| *public)
                    .filter_map(|(_, p)| {
                        let abs = tree.absolute(i, &p)?;
                        Some((abs.last()?.clone(), abs))
                    })
                    .collect()
            })
            .collect();
        tree
    }

    /// The absolute module path of `path` as written in file `i`, or None for an external
    /// crate or the standard library.
    fn absolute(&self, i: usize, path: &[String]) -> Option<ModPath> {
        let here = &self.files[i].module;
        let first = path.first()?;
        let mut base: ModPath;
        let mut rest = path;
        match first.as_str() {
            "crate" | "signet" => {
                base = Vec::new();
                rest = &path[1..];
            }
            "super" => {
                base = here.clone();
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            "self" => {
                base = here.clone();
                rest = &path[1..];
            }
            _ => {
                // A path relative to the current module: `use ocsp::x` in ca/mod.rs (2018
                // edition style) names a child module.
                let mut child = here.clone();
                child.push(first.clone());
                if self.by_module.contains_key(&child) {
                    base = here.clone();
                } else {
                    return None;
                }
            }
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The file that defines what the absolute path names: the longest module prefix, then
    /// through that module's re-exports.
    fn resolve(&self, abs: &[String], depth: usize) -> Option<usize> {
        let mut k = abs.len();
        while k > 0 && !self.by_module.contains_key(&abs[..k]) {
            k -= 1;
        }
        let module = abs[..k].to_vec();
        let file = *self.by_module.get(&module)?;
        if k < abs.len() && depth < 8 {
            if let Some(target) = self.reexports[file].get(&abs[k]) {
                let mut t = target.clone();
                t.extend(abs[k + 1..].iter().cloned());
                if t != abs {
                    return self.resolve(&t, depth + 1).or(Some(file));
                }
            }
        }
        Some(file)
    }

    /// Edges file → file from every non-re-export reference.
    fn edges(&self) -> BTreeSet<(usize, usize)> {
        let mut edges = BTreeSet::new();
        for i in 0..self.files.len() {
            let code = &self.files[i].code;
            let mut paths: Vec<(bool, Vec<String>)> = use_paths(code);
            paths.extend(
                inline_paths(&without_uses(code))
                    .into_iter()
                    .map(|p| (false, p)),
            );
            for (public, p) in paths {
                let Some(abs) = self.absolute(i, &p) else {
                    continue;
                };
                // A module re-exporting what its own children define is a facade, not a
                // dependency; a re-export from anywhere else is one.
                if public && abs.starts_with(&self.files[i].module) {
                    continue;
                }
                if let Some(j) = self.resolve(&abs, 0)
                    && j != i
                    && !self.files[j].module.is_empty()
                {
                    edges.insert((i, j));
                }
            }
        }
        edges
    }
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles<N: Ord + Clone>(nodes: &[N], edges: &BTreeSet<(N, N)>) -> Vec<Vec<N>> {
    let index_of: BTreeMap<&N, usize> = nodes.iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut adj = vec![Vec::new(); nodes.len()];
    for (a, b) in edges {
        adj[index_of[a]].push(index_of[b]);
    }
    struct S {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adj: &[Vec<usize>], s: &mut S) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in &adj[v] {
            match s.index[w] {
                None => {
                    visit(w, adj, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let n = nodes.len();
    let mut s = S {
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(v, &adj, &mut s);
        }
    }
    s.out
        .into_iter()
        .map(|c| {
            let mut c: Vec<N> = c.into_iter().map(|i| nodes[i].clone()).collect();
            c.sort();
            c
        })
        .collect()
}

#[test]
fn the_top_level_rooms_of_src_import_each_other_one_way_only() {
    let tree = Tree::new();
    let edges = tree.edges();
    let mut room_edges = BTreeSet::new();
    let mut why: BTreeMap<(String, String), String> = BTreeMap::new();
    for &(a, b) in &edges {
        let ra = tree.files[a].module[0].clone();
        let rb = tree.files[b].module[0].clone();
        if ra != rb {
            why.entry((ra.clone(), rb.clone()))
                .or_insert_with(|| format!("{} -> {}", tree.files[a].rel, tree.files[b].rel));
            room_edges.insert((ra, rb));
        }
    }
    let rooms: Vec<String> = tree
        .files
        .iter()
        .filter_map(|f| f.module.first().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let found = cycles(&rooms, &room_edges);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let mut lines = vec![format!("cycle between rooms {c:?}:")];
            for (k, v) in &why {
                if c.contains(&k.0) && c.contains(&k.1) {
                    lines.push(format!("  {v}"));
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(found.is_empty(), "{}", explain.join("\n"));
    // The check itself must see the tree: the authority uses the HSM and the store.
    assert!(room_edges.contains(&("ca".to_owned(), "hsm".to_owned())));
    assert!(room_edges.contains(&("ca".to_owned(), "store".to_owned())));
}

#[test]
fn the_files_of_each_room_import_each_other_one_way_only() {
    let tree = Tree::new();
    let edges = tree.edges();
    let same_room: BTreeSet<(usize, usize)> = edges
        .iter()
        .filter(|(a, b)| {
            let (ma, mb) = (&tree.files[*a].module, &tree.files[*b].module);
            !ma.is_empty() && !mb.is_empty() && ma[0] == mb[0]
        })
        .copied()
        .collect();
    let nodes: Vec<usize> = (0..tree.files.len()).collect();
    let found = cycles(&nodes, &same_room);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let mut lines = vec![format!(
                "cycle between files {:?}:",
                c.iter().map(|&i| &tree.files[i].rel).collect::<Vec<_>>()
            )];
            for &(a, b) in &same_room {
                if c.contains(&a) && c.contains(&b) {
                    lines.push(format!("  {} -> {}", tree.files[a].rel, tree.files[b].rel));
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(found.is_empty(), "{}", explain.join("\n"));
    // The check must see edges inside a room, or it proves nothing.
    assert!(
        same_room
            .iter()
            .any(|(a, b)| { tree.files[*a].module[0] == "ca" && tree.files[*b].module[0] == "ca" })
    );
}

#[test]
fn only_the_command_line_prints_to_the_terminal() {
    let tree = Tree::new();
    let printers = [
        "println!",
        "print!",
        "eprintln!",
        "eprint!",
        "dbg!",
        "stdout()",
        "stderr()",
    ];
    let mut offenders = Vec::new();
    for f in &tree.files {
        if f.module.first().is_some_and(|m| m == "cli") {
            continue;
        }
        for p in printers {
            let hit = f
                .code
                .match_indices(p)
                .any(|(at, _)| at == 0 || !is_ident_byte(f.code.as_bytes()[at - 1]));
            if hit {
                offenders.push(format!("{} uses {p}", f.rel));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn the_layout_checker_sees_a_cycle_when_there_is_one() {
    // Two made-up files that import each other, and one that only imports: the checker must
    // find exactly the pair.
    let nodes = vec!["a", "b", "c"];
    let edges: BTreeSet<(&str, &str)> = [("a", "b"), ("b", "a"), ("c", "a")].into_iter().collect();
    assert_eq!(cycles(&nodes, &edges), vec![vec!["a", "b"]]);
    let paths = expand_tree("crate::pki::{KeyType,csr::{self,key_type_of},serial}");
    assert_eq!(
        paths,
        vec![
            vec!["crate", "pki", "KeyType"],
            vec!["crate", "pki", "csr"],
            vec!["crate", "pki", "csr", "key_type_of"],
            vec!["crate", "pki", "serial"],
        ]
    );
}

#[test]
fn the_readme_layout_names_every_entry_of_src() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("## Layout")
        .nth(1)
        .expect("README has a Layout section");
    let block = section
        .split("```")
        .nth(1)
        .expect("Layout has a code block");
    let listed: BTreeSet<String> = block
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("src/"))
        .map(|w| {
            w.trim_start_matches("src/")
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    let actual: BTreeSet<String> = std::fs::read_dir(src_dir())
        .expect("src")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, actual, "README's layout section against `ls src`");
}
