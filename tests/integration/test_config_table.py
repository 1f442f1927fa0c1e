"""The table of settings (src/config.c) against what a user reads: README's configuration tables are
exactly `herald config --markdown`, `herald check` and `herald --help` name every setting, every
HERALD_* name herald's sources read is a row, and a misspelt variable is warned about at start."""
import glob
import os
import re
import shutil
import tempfile
import unittest

from harness import ROOT, Herald, bot, require_binary, run_cli, sanitizer_problems

MAIN = bot("main_bot.lua")
BEGIN = "<!-- BEGIN herald config --markdown -->\n"
END = "<!-- END herald config --markdown -->"
# a variable name, a family written NAME_<NAME> included
NAME = re.compile(r"(?<![A-Za-z0-9_])HERALD_[A-Z0-9_]*[A-Z0-9](?:_<NAME>)?(?![A-Za-z0-9_])")


@require_binary
class ConfigTableTest(unittest.TestCase):
    def cli(self, args, env=None):
        code, out, err = run_cli(args, env=env)
        self.assertFalse(sanitizer_problems(err), err[-3000:])
        return code, out, err

    def settings(self):
        """The HERALD_* settings of the table (not the tools' names), from herald config --names."""
        code, out, err = self.cli(["config", "--names"])
        self.assertEqual(code, 0, err)
        names = out.split()
        self.assertIn("HERALD_TASK_SLICE_MS", names)
        self.assertIn("HERALD_NOTIFY_SECRET_<NAME>", names)
        code, md, err = self.cli(["config", "--markdown"])
        self.assertEqual(code, 0, err)
        # the tools' names (HERALD_BIN, ...) are known but are no settings: README does not list them
        return [n for n in names if n.startswith("HERALD_") and f"`{n}`" in md], md

    def test_readme_table_is_the_table_of_settings(self):
        settings, md = self.settings()
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        self.assertIn(BEGIN, readme, "README lost its generated configuration tables")
        block = readme.split(BEGIN, 1)[1].split(END, 1)[0]
        self.assertEqual(block, md, "README's configuration tables differ from the rows in "
                         "src/config.c: paste `build/herald config --markdown` between the markers")
        # each setting names one row of README's tables (first cells), whatever the meanings mention
        first_cells = [line.split(" | ")[0] for line in block.splitlines() if line.startswith("| ")]
        for name in settings:
            with self.subTest(setting=name):
                self.assertEqual(sum(NAME.findall(c).count(name) for c in first_cells), 1)
        self.assertGreaterEqual(len(settings), 60)

    def test_check_and_help_name_every_setting(self):
        settings, _ = self.settings()
        code, out, err = self.cli(["check", "--dev", MAIN], env={"HERALD_ADMIN_TOKEN": "tok-zq9",
                                                                 "CLIENT_SECRET": "pw-zq8"})
        self.assertEqual(code, 0, err)
        self.assertNotIn("zq", out + err)
        found = NAME.findall(out)
        code, helptext, err = self.cli(["--help"])
        self.assertEqual(code, 0, err)
        for name in settings:
            with self.subTest(setting=name):
                self.assertEqual(found.count(name), 1, out)
                if not name.startswith("HERALD_TEST_") and name != "HERALD_WATCHDOG_RESTARTS":
                    self.assertIn(name, helptext)

    def test_every_name_the_sources_read_is_a_row(self):
        code, out, err = self.cli(["config", "--names"])
        self.assertEqual(code, 0, err)
        known = set(out.split())
        families = [n[:-len("<NAME>")] for n in known if n.endswith("<NAME>")]
        literal = re.compile(r'"(HERALD_[A-Z0-9_]*[A-Z0-9])')
        files = glob.glob(os.path.join(ROOT, "src", "*.c")) + [os.path.join(ROOT, "tests", "fault_shim.c")]
        for path in files:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            for name in set(literal.findall(text)):
                with self.subTest(file=os.path.basename(path), name=name):
                    self.assertTrue(name in known or any(name.startswith(f) for f in families),
                                    f"{name} is read in {path} but is no row of src/config.c")

    def test_unknown_variable_warned_at_start(self):
        env = {"HERALD_TASK_SLICE": "50", "HERALD_TASK_SLICE_MS": "500", "HERALD_TEST_TIME_FACTOR": "1",
               "HERALD_NOTIFY_SECRET_DEPLOY_PROD": "s"}
        code, out, err = self.cli(["check", "--dev", MAIN], env=env)
        self.assertEqual(code, 0, err)
        self.assertIn("unknown setting HERALD_TASK_SLICE (did you mean HERALD_TASK_SLICE_MS?)", err)
        self.assertEqual(err.count("unknown setting"), 1, err)
        tmp = tempfile.mkdtemp(prefix="herald-cfg-")
        self.addCleanup(shutil.rmtree, tmp, True)
        h = Herald(MAIN, env={"HERALD_SHUTDOWN_GRAC_MS": "100"}, db=os.path.join(tmp, "h.db"))
        h.start()
        try:
            h.wait_log(r"unknown setting HERALD_SHUTDOWN_GRAC_MS \(did you mean HERALD_SHUTDOWN_GRACE_MS\?\)")
        finally:
            h.stop()


if __name__ == "__main__":
    unittest.main()
