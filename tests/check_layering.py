#!/usr/bin/env python3
# check_layering.py — the include rules of src/: only vm.c, task.c and the lua_*.c bindings see Lua's
# headers, and the module graph (module = foo.c + foo.h) has no cycle. Prints what breaks a rule.
"""Usage: tests/check_layering.py [SRC_DIR]   (default: src/ beside tests/)

Rule 1: <lua.h>, <lauxlib.h>, <lualib.h> (or "..." forms, and lua-cjson.h, which includes lua.h)
        appear only in vm.c, task.c and lua_*.c. A lua_*.h may include them only when every file
        that includes it may too (a header other subsystems include must stay Lua-free).
Rule 2: no cycle in the module graph: foo.c and foo.h form module foo; "bar.h" included by either
        is an edge foo -> bar (when src/bar.h exists). A module including its own header is not one.

Prints one line per offending include or cycle, then "layering: N passed, N failed": three checks
(rule 1 over every file, rule 2, the self-test); exits 1 when anything failed.
"""
import os
import re
import sys

LUA_HEADERS = {"lua.h", "lauxlib.h", "lualib.h", "lua-cjson.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def includes(path):
    """[(line number, name, quoted?)] of a file's #include lines."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                out.append((n, m.group(2), m.group(1) == '"'))
    return out


def lua_allowed_c(name):
    return name in ("vm.c", "task.c") or (name.startswith("lua_") and name.endswith(".c"))


def module(name):
    return os.path.splitext(name)[0]


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan), each as a cycle path."""
    index, low, on, stack, sccs = {}, {}, set(), [], []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(set(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in sccs:
        start = min(comp)
        # shortest path back to start inside the component (BFS), for a readable report
        prev, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, ())):
                    if w not in comp:
                        continue
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path, v = [], found
        while v is not None:
            path.append(v)
            v = prev[v]
        path.reverse()
        cycles.append((sorted(comp), path + [start]))
    return cycles


def check(src, out=print):
    """Runs both rules over src; prints the offences through out; returns (files that keep rule 1,
    files that break it, include cycles found)."""
    files = sorted(f for f in os.listdir(src) if f.endswith((".c", ".h")))
    incs = {f: includes(os.path.join(src, f)) for f in files}
    local = set(files)
    passed = failed = 0

    includers = {f: [] for f in files}
    for f in files:
        for _, name, quoted in incs[f]:
            if quoted and name in local:
                includers[name].append(f)

    # Rule 1
    for f in files:
        bad = [(n, name) for n, name, _ in incs[f] if os.path.basename(name) in LUA_HEADERS]
        ok = True
        if bad:
            if f.endswith(".c"):
                ok = lua_allowed_c(f)
                why = "only vm.c, task.c and lua_*.c may include Lua's headers"
            else:
                outside = [g for g in includers[f] if not lua_allowed_c(g)]
                ok = f.startswith("lua_") and not outside
                why = ("included by %s, which may not see Lua" % ", ".join(outside) if outside
                       else "a header outside lua_*.h")
            if not ok:
                for n, name in bad:
                    out("src/%s:%d: #include %s: %s" % (f, n, name, why))
        if ok:
            passed += 1
        else:
            failed += 1

    # Rule 2
    graph, where = {}, {}
    for f in files:
        a = module(f)
        graph.setdefault(a, set())
        for n, name, quoted in incs[f]:
            if not quoted or name not in local:
                continue
            b = module(name)
            if b == a:
                continue
            graph[a].add(b)
            where.setdefault((a, b), "src/%s:%d" % (f, n))
    cycles = find_cycles(graph)
    for comp, path in cycles:
        out("include cycle: %s" % " -> ".join(path))
        for a, b in zip(path, path[1:]):
            out("    %s -> %s  (%s)" % (a, b, where[(a, b)]))
        if len(comp) > len(path) - 1:
            out("    (modules in the same knot: %s)" % ", ".join(comp))
    return passed, failed, len(cycles)


def self_test():
    """The checker finds what it is for: a tree with one offence of each kind fails both ways."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        files = {
            "a.c": '#include "a.h"\n#include "b.h"\n',
            "a.h": "",
            "b.c": '#include "b.h"\n#include "c.h"\n',
            "b.h": "",
            "c.h": '#include "a.h"\n#include <lua.h>\n',     # cycle a -> b -> c -> a; lua.h
            "lua_ok.c": '#include <lua.h>\n#include <lauxlib.h>\n#include "a.h"\n',
            "vm.c": "#include <lualib.h>\n",
        }
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        lines = []
        kept, broke, cycles = check(d, lines.append)
        ok = (kept == 6 and broke == 1 and cycles == 1
              and any("c.h:2: #include lua.h" in l for l in lines)
              and any(l.startswith("include cycle: a -> b -> c -> a") for l in lines))
        if not ok:
            print("check_layering self-test failed: rule 1 kept by %d files, broken by %d; %d cycles"
                  % (kept, broke, cycles))
            for l in lines:
                print("    " + l)
        return ok


def main():
    """Three checks: rule 1 over every file, rule 2 over the module graph, and the self-test."""
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    kept, broke, cycles = check(src)
    results = [broke == 0, cycles == 0, self_test()]
    passed = sum(results)
    print("layering: %d passed, %d failed (%d files, %d cycles)"
          % (passed, len(results) - passed, kept + broke, cycles))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
