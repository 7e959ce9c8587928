#!/usr/bin/env python3
"""Import circles between the modules of each crate: `make test`'s gate that data flows one way
inside a crate as it does between crates (cargo already refuses circles between crates).

  python3 tools/module_cycles.py [CRATE_DIR ...]     (default: crates/* and the binary's src/)

A module `a` uses module `b` when its code outside `#[cfg(test)]` names `crate::b` (in a `use`
tree, grouped or not, or in a path) or, in a child module, `super::b`. Prints each circle
(a -> b -> a) and exits 1 if there is one; prints the module count and exits 0 otherwise.
Hand-written because cargo-modules (which draws the graph) needs rust-analyzer's toolchain
component and a nightly-pinned build, neither of which this project's stable toolchain ships.
"""

import os
import re
import sys


def strip_tests_and_comments(text):
    """The text without `//` comments and without every `#[cfg(test)]` item (test modules may use
    anything)."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        # Skip the item: to the end of its block, or of its `;` if it has no block.
        k = j + len("#[cfg(test)]")
        brace, semi = text.find("{", k), text.find(";", k)
        if brace < 0 or (0 <= semi < brace):
            i = semi + 1 if semi >= 0 else len(text)
            continue
        depth = 0
        for k in range(brace, len(text)):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
        i = k + 1
    return "".join(out)


def use_trees(text):
    """Every path a `use crate::…;` tree names, braces expanded one level at a time."""
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super)::[^;]+);", text):
        stack = [m.group(1).replace("\n", " ")]
        while stack:
            tree = re.sub(r"\s+", "", stack.pop())
            open_ = tree.find("{")
            if open_ < 0:
                paths.append(tree)
                continue
            prefix, depth, parts, start = tree[:open_], 0, [], open_ + 1
            for k in range(open_, len(tree)):
                c = tree[k]
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        parts.append(tree[start:k])
                        break
                elif c == "," and depth == 1:
                    parts.append(tree[start:k])
                    start = k + 1
            stack.extend(prefix + p for p in parts if p)
    return paths


def modules_of(src):
    """Top-level modules of a crate's src/: file name → module name (lib.rs and main.rs are the root)."""
    mods = {}
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
            mods[name[:-3]] = [path]
        elif os.path.isdir(path) and os.path.exists(os.path.join(path, "mod.rs")):
            mods[name] = [os.path.join(dp, f) for dp, _, fs in os.walk(path) for f in fs if f.endswith(".rs")]
    return mods


def edges_of(src):
    mods = modules_of(src)
    edges = {m: set() for m in mods}
    for mod, files in mods.items():
        for path in files:
            with open(path, encoding="utf-8") as f:
                text = strip_tests_and_comments(f.read())
            named = set()
            for p in use_trees(text):
                parts = p.split("::")
                if parts[0] == "crate" and len(parts) > 1:
                    named.add(parts[1])
                elif parts[0] == "super" and len(parts) > 1 and path == files[0]:
                    named.add(parts[1])
            named.update(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)::", text))
            if path == files[0]:
                named.update(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)::", text))
            edges[mod] |= {n for n in named if n in mods and n != mod}
    return edges


def cycles(edges):
    """Every elementary circle, each once, starting at its smallest module."""
    found = []

    def walk(start, node, path):
        for nxt in sorted(edges[node]):
            if nxt == start:
                found.append(path + [start])
            elif nxt > start and nxt not in path:
                walk(start, nxt, path + [nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def main():
    roots = sys.argv[1:] or sorted(os.path.join("crates", c) for c in os.listdir("crates")) + ["."]
    status, count = 0, 0
    for root in roots:
        src = os.path.join(root, "src")
        if not os.path.isdir(src):
            continue
        edges = edges_of(src)
        count += len(edges)
        for circle in cycles(edges):
            print(f"{src}: import circle {' -> '.join(circle)}")
            status = 1
    if status == 0:
        print(f"no import circles among {count} modules")
    return status


if __name__ == "__main__":
    sys.exit(main())
