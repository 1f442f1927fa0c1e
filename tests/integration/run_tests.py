#!/usr/bin/env python3
"""run_tests.py — runs the integration tests (unittest discovery, verbose) and ends with one line
"integration: N passed, N failed" counting each test once: a test failing in its body and again in
tearDown is one failure; a setUpClass/setUpModule error fails every test of that class/module.
usage: python3 tests/integration/run_tests.py [-k PATTERN ...] [discover pattern, default test_*.py]"""
import argparse
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pattern", nargs="?", default="test_*.py")
    ap.add_argument("-k", action="append", dest="k", default=None, help="only tests matching (substring)")
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = [f"*{k}*" for k in args.k]
    suite = loader.discover(HERE, pattern=args.pattern, top_level_dir=HERE)
    tests = list(flatten(suite))
    ids = [t.id() for t in tests]
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    failed, skipped = set(), set()
    for t, _ in result.failures + result.errors:
        tid = t.id()
        if tid in ids:
            failed.add(tid)
            continue
        # _ErrorHolder: "setUpClass (module.Class)" / "setUpModule (module)" / "tearDownClass (...)"
        desc = str(t)
        scope = desc[desc.find("(") + 1:desc.rfind(")")] if "(" in desc else desc
        hit = [i for i in ids if i.startswith(scope + ".")]
        if "tearDown" in desc and hit:
            # the tests ran; blame the class's last test so the failure is counted once
            failed.add(hit[-1])
        elif hit:
            failed.update(hit)
        else:
            failed.add(desc)
    for t in result.unexpectedSuccesses:
        failed.add(t.id())
    for t, _ in result.skipped:
        if t.id() not in failed:
            skipped.add(t.id())
    total = set(ids) | failed
    passed = len(total - failed - skipped)
    print(f"integration: {passed} passed, {len(failed)} failed" + (f", {len(skipped)} skipped" if skipped else ""),
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
