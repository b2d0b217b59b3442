//! The import graph between the files of one crate: which file takes names from which, read from
//! the `use` declarations and the `crate::`/`super::`/`self::` paths of its source, and the circles
//! in that graph.
//!
//! Module paths map to files as the compiler maps them (`foo.rs` or `foo/mod.rs`; an inline `mod`
//! stays in its file). A name is followed to the file that defines it, through re-exports (`pub
//! use`) and glob imports, so `use crate::Plan` points at the file of `struct Plan`, not at the
//! `lib.rs` that re-exports it. What is not an edge:
//! - a `mod` declaration, nor a parent publishing its descendants' items (`pub use child::X`): a
//!   parent declaring its child is fine (a child using an item its parent's file defines is an
//!   edge, and so is a parent's plain `use child::X`);
//! - a path in code through a child module's name (`child::f()` in its parent), for the same reason:
//!   one type's `impl` blocks split across a parent and its children is Rust's way of keeping
//!   files small, and the children must see the type (docs/decisions.md, "A parent calling into
//!   its child");
//! - anything under `#[cfg(test)]`: unit tests reach anywhere for their fixtures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// Files of one crate, and which files each takes names from (with the names).
#[derive(Debug, Default)]
pub struct ImportGraph {
    pub files: Vec<PathBuf>,
    /// (from, to) file indices -> the names imported.
    pub edges: BTreeMap<(usize, usize), BTreeSet<String>>,
}

/// Reads the crate whose root file (lib.rs, main.rs, bin/x.rs) is `root`, following its `mod`
/// declarations.
pub fn crate_graph(root: &Path) -> ImportGraph {
    let mut modules = Modules::default();
    let dir = root
        .parent()
        .expect("a root file has a directory")
        .to_path_buf();
    modules.load_file(root, None, String::new(), dir);
    modules.graph()
}

/// The cycles (strongly connected sets of two or more files) of the graph, each sorted.
pub fn cycles(graph: &ImportGraph) -> Vec<Vec<usize>> {
    let n = graph.files.len();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(from, to) in graph.edges.keys() {
        next[from].push(to);
    }
    let mut tarjan = Tarjan {
        next: &next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        sets: Vec::new(),
    };
    for v in 0..n {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    let mut sets: Vec<Vec<usize>> = tarjan.sets.into_iter().filter(|s| s.len() > 1).collect();
    for set in &mut sets {
        set.sort_by(|a, b| graph.files[*a].cmp(&graph.files[*b]));
    }
    sets.sort_by(|a, b| graph.files[a[0]].cmp(&graph.files[b[0]]));
    sets
}

struct Tarjan<'a> {
    next: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    counter: usize,
    sets: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in self.next[v].iter() {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut set = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                set.push(w);
                if w == v {
                    break;
                }
            }
            self.sets.push(set);
        }
    }
}

type ModId = usize;

/// One module: its file (an inline module shares its parent's) and the names it holds.
#[derive(Debug)]
struct Module {
    file: usize,
    parent: Option<ModId>,
    /// Where the files of its `mod x;` children are.
    child_dir: PathBuf,
    children: BTreeMap<String, ModId>,
    /// Items defined here (types, functions, constants, traits, macros, ...).
    items: BTreeSet<String>,
    /// Names bound by this module's own `use` declarations, to their paths.
    bindings: BTreeMap<String, Vec<String>>,
    /// This module's glob imports (`use x::*`).
    globs: Vec<Vec<String>>,
}

/// A path taken somewhere in module `scope`: by a `use` (glob or not) or in code.
#[derive(Debug)]
struct Reference {
    scope: ModId,
    path: Vec<String>,
    /// A `pub use`: an import only when it reaches outside the module's own descendants (a parent
    /// publishing its children's items is part of declaring them).
    reexport: bool,
}

#[derive(Debug, Default)]
struct Modules {
    files: Vec<PathBuf>,
    modules: Vec<Module>,
    references: Vec<Reference>,
}

/// Where a path leads: a module, or an item of a module.
#[derive(Debug, Clone, Copy)]
enum Target {
    Module(ModId),
    Item(ModId),
}

/// The (module, name) pairs being followed through imports, innermost last.
type Seen = BTreeSet<(ModId, String)>;

/// Enough to follow any real chain of re-exports.
const MAX_DEPTH: usize = 32;

impl Modules {
    fn load_file(
        &mut self,
        file: &Path,
        parent: Option<ModId>,
        name: String,
        child_dir: PathBuf,
    ) -> ModId {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()));
        self.files.push(file.to_path_buf());
        let file_index = self.files.len() - 1;
        let id = self.new_module(file_index, parent, &name, child_dir);
        self.load_items(&ast.items, id);
        id
    }

    fn new_module(
        &mut self,
        file: usize,
        parent: Option<ModId>,
        name: &str,
        child_dir: PathBuf,
    ) -> ModId {
        self.modules.push(Module {
            file,
            parent,
            child_dir,
            children: BTreeMap::new(),
            items: BTreeSet::new(),
            bindings: BTreeMap::new(),
            globs: Vec::new(),
        });
        let id = self.modules.len() - 1;
        if let Some(p) = parent {
            self.modules[p].children.insert(name.to_string(), id);
        }
        id
    }

    fn load_items(&mut self, items: &[syn::Item], id: ModId) {
        for item in items.iter().filter(|item| !is_test_only(item)) {
            match item {
                syn::Item::Mod(m) => self.load_mod(m, id),
                syn::Item::Use(u) => self.load_use(u, id),
                other => {
                    if let Some(name) = item_name(other) {
                        self.modules[id].items.insert(name);
                    }
                    let mut code = CodePaths::default();
                    code.visit_item(other);
                    for path in code.paths {
                        self.references.push(Reference {
                            scope: id,
                            path,
                            reexport: false,
                        });
                    }
                }
            }
        }
    }

    fn load_mod(&mut self, m: &syn::ItemMod, parent: ModId) {
        let name = m.ident.to_string();
        let dir = self.modules[parent].child_dir.join(&name);
        if let Some((_, items)) = &m.content {
            let file = self.modules[parent].file;
            let id = self.new_module(file, Some(parent), &name, dir);
            self.load_items(items, id);
            return;
        }
        let flat = self.modules[parent].child_dir.join(format!("{name}.rs"));
        let nested = dir.join("mod.rs");
        if flat.exists() {
            self.load_file(&flat, Some(parent), name, dir);
        } else if nested.exists() {
            self.load_file(&nested, Some(parent), name, dir);
        } else {
            // Not on disk (generated or configured away): its names stay in the parent's file.
            let file = self.modules[parent].file;
            self.new_module(file, Some(parent), &name, dir);
        }
    }

    /// Records one of the module's own `use` items: the names it binds, and the paths it takes.
    fn load_use(&mut self, u: &syn::ItemUse, id: ModId) {
        if u.leading_colon.is_some() {
            return; // `use ::x`: always another crate.
        }
        let reexport = !matches!(u.vis, syn::Visibility::Inherited);
        let mut leaves = Vec::new();
        use_leaves(&u.tree, Vec::new(), &mut leaves);
        for (path, bound) in leaves {
            match &bound {
                Some(name) if name != "_" => {
                    self.modules[id].bindings.insert(name.clone(), path.clone());
                }
                Some(_) => {}
                None => self.modules[id].globs.push(path.clone()),
            }
            self.references.push(Reference {
                scope: id,
                path,
                reexport,
            });
        }
    }

    /// Where `path`, written in module `from`, leads; `None` when it leaves the crate.
    fn resolve(&self, from: ModId, path: &[String], seen: &mut Seen) -> Option<Target> {
        let mut module = from;
        let mut rest = path;
        let mut relative = true;
        while let Some((first, tail)) = rest.split_first() {
            match first.as_str() {
                "crate" => module = 0,
                "super" => module = self.modules[module].parent?,
                "self" => {}
                _ => break,
            }
            relative = false;
            rest = tail;
        }
        if relative {
            // A uniform path: its first name must be in scope here, or it names another crate.
            self.lookup(from, path.first()?, seen)?;
        }
        loop {
            let Some((name, tail)) = rest.split_first() else {
                return Some(Target::Module(module));
            };
            match self.lookup(module, name, seen) {
                Some(Target::Module(m)) => {
                    module = m;
                    rest = tail;
                }
                Some(item) => return Some(item),
                // Made by a macro, or a name this reading does not see: in the module's file.
                None => return Some(Target::Item(module)),
            }
        }
    }

    /// The name `name` in module `module`: a child module, an item, or what a `use` binds.
    fn lookup(&self, module: ModId, name: &str, seen: &mut Seen) -> Option<Target> {
        let m = &self.modules[module];
        if let Some(&child) = m.children.get(name) {
            return Some(Target::Module(child));
        }
        if m.items.contains(name) {
            return Some(Target::Item(module));
        }
        // A name is followed through a module's imports once per path: globs that import each
        // other, or a re-export of a name that is not there, end here.
        if seen.len() > MAX_DEPTH || !seen.insert((module, name.to_string())) {
            return None;
        }
        let found = self.imported(module, name, seen);
        seen.remove(&(module, name.to_string()));
        found
    }

    /// The name `name` as one of module `module`'s `use` declarations brings it in.
    fn imported(&self, module: ModId, name: &str, seen: &mut Seen) -> Option<Target> {
        let m = &self.modules[module];
        if let Some(path) = m.bindings.get(name) {
            return self.resolve(module, path, seen);
        }
        m.globs
            .iter()
            .find_map(|glob| match self.resolve(module, glob, seen)? {
                Target::Module(g) if g != module => self.lookup(g, name, seen),
                _ => None,
            })
    }

    /// True when `module` is `ancestor` or inside it.
    fn descends(&self, module: ModId, ancestor: ModId) -> bool {
        let mut m = Some(module);
        while let Some(id) = m {
            if id == ancestor {
                return true;
            }
            m = self.modules[id].parent;
        }
        false
    }

    fn graph(self) -> ImportGraph {
        let mut edges: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
        for reference in &self.references {
            let target = match self.resolve(reference.scope, &reference.path, &mut Seen::new()) {
                Some(Target::Module(m) | Target::Item(m)) => m,
                None => continue,
            };
            if reference.reexport && self.descends(target, reference.scope) {
                continue;
            }
            let from = self.modules[reference.scope].file;
            let to = self.modules[target].file;
            if from != to {
                let name = reference.path.last().cloned().unwrap_or_default();
                edges.entry((from, to)).or_default().insert(name);
            }
        }
        ImportGraph {
            files: self.files,
            edges,
        }
    }
}

/// Each path a use tree imports, with the name it binds (`None`: a glob).
fn use_leaves(
    tree: &syn::UseTree,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            let mut prefix = prefix;
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
        }
        syn::UseTree::Name(n) => leaf(prefix, &n.ident, &n.ident, out),
        syn::UseTree::Rename(r) => leaf(prefix, &r.ident, &r.rename, out),
        syn::UseTree::Glob(_) => out.push((prefix, None)),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                use_leaves(tree, prefix.clone(), out);
            }
        }
    }
}

fn leaf(
    prefix: Vec<String>,
    ident: &syn::Ident,
    bound: &syn::Ident,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    let bound = if ident != "self" {
        path.push(ident.to_string());
        bound.to_string()
    } else if bound == "self" {
        // `use a::b::{self}` binds `b`.
        path.last().cloned().unwrap_or_default()
    } else {
        // `use a::b::{self as c}` binds `c`.
        bound.to_string()
    };
    out.push((path, Some(bound)));
}

/// Unit tests reach anywhere to build their fixtures: `#[cfg(test)]` items are not read.
fn is_test_only(item: &syn::Item) -> bool {
    let attrs = match item {
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        _ => return false,
    };
    attrs.iter().any(|attr| {
        let mut test = false;
        if attr.path().is_ident("cfg") {
            // `cfg(test)` only: `cfg(not(test))` and the like are production code.
            let _ = attr.parse_nested_meta(|meta| {
                test = meta.path.is_ident("test");
                Ok(())
            });
        }
        test
    })
}

/// The name an item defines in its module's type or value namespace, if any.
fn item_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::ExternCrate(i) => i.rename.as_ref().map_or(&i.ident, |(_, r)| r),
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Macro(i) => i.ident.as_ref()?,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::TraitAlias(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

/// Inside one item: the paths taken by the `use` declarations of its function bodies, and the paths
/// of its code that start at `crate`, `super` or `self` (another file reached without a `use`). A
/// path through a child module's name (`child::f()` in its parent) is the parent using the module
/// it declares, like the `mod` declaration itself, and is not read.
#[derive(Default)]
struct CodePaths {
    paths: Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for CodePaths {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            let mut leaves = Vec::new();
            use_leaves(&u.tree, Vec::new(), &mut leaves);
            self.paths.extend(leaves.into_iter().map(|(path, _)| path));
        }
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // A module inside a function body: rare, and its paths start from itself.
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if path.leading_colon.is_none()
            && segments.len() > 1
            && matches!(segments[0].as_str(), "crate" | "super" | "self")
        {
            self.paths.push(segments);
        }
        syn::visit::visit_path(self, path);
    }
}
