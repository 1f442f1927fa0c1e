"""test_tools.py — the tools that make a bot quick to write (issue 12): `herald new NAME` writes a
project whose spec passes under plain `busted`, from the build tree and after `make install`;
`herald check SCRIPT` loads a script in the sandbox and reports its mistakes with file:line."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import HERALD_BIN, ROOT, base_env, bot, line_of, require_binary, run_cli, \
    sanitizer_problems, tf

TEMPLATE_FILES = ("bot.lua", "spec/bot_spec.lua", ".busted", ".luarc.json", "env/.env.local", ".gitignore")


def busted(cwd, timeout=120):
    """Plain `busted` in cwd, as a bot author types it: the project's .busted does the rest."""
    p = subprocess.run(["busted"], cwd=cwd, env=base_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=tf(timeout), stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace")


@require_binary
@unittest.skipUnless(shutil.which("busted"), "busted is not installed")
class HeraldNewTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="herald-new-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_new_project_spec_passes_with_busted(self):
        code, out, err = run_cli(["new", "demo"], cwd=self.tmp)
        self.assertEqual(code, 0, err)
        self.assertEqual([], sanitizer_problems(err), err)
        demo = os.path.join(self.tmp, "demo")
        for f in TEMPLATE_FILES:
            self.assertTrue(os.path.isfile(os.path.join(demo, f)), f)
        with open(os.path.join(demo, "bot.lua")) as f:
            self.assertIn("I'm demo!", f.read())
        # the build tree's kit and definitions, by absolute path
        with open(os.path.join(demo, ".busted")) as f:
            busted_cfg = f.read()
        self.assertIn(f'"{os.path.join(ROOT, "lua")}"', busted_cfg)
        self.assertIn(f'"{os.path.join(ROOT, "build", "lua")}"', busted_cfg)
        with open(os.path.join(demo, ".luarc.json")) as f:
            self.assertIn(os.path.join(ROOT, "lua", "defs"), f.read())
        code, out = busted(demo)
        self.assertEqual(code, 0, out)
        self.assertIn("3 successes / 0 failures / 0 errors", out)

    def test_new_project_passes_herald_check(self):
        self.assertEqual(run_cli(["new", "demo"], cwd=self.tmp)[0], 0)
        code, out, err = run_cli(["check", "--dev", "bot.lua"], cwd=os.path.join(self.tmp, "demo"))
        self.assertEqual(code, 0, err)
        self.assertIn("bot.lua loads in the sandbox", out)

    def test_new_refuses_a_non_empty_directory(self):
        d = os.path.join(self.tmp, "taken")
        os.mkdir(d)
        with open(os.path.join(d, "bot.lua"), "w") as f:
            f.write("-- mine\n")
        code, out, err = run_cli(["new", "taken"], cwd=self.tmp)
        self.assertEqual(code, 1, out + err)
        self.assertIn("taken exists and is not empty: not overwriting it", err)
        with open(os.path.join(d, "bot.lua")) as f:
            self.assertEqual("-- mine\n", f.read())
        self.assertEqual(["bot.lua"], os.listdir(d))
        # a file of that name is not a directory to fill either
        with open(os.path.join(self.tmp, "plain"), "w") as f:
            f.write("x")
        code, out, err = run_cli(["new", "plain"], cwd=self.tmp)
        self.assertEqual(code, 1, out + err)
        self.assertIn("is not a directory", err)
        # an empty directory is fine
        os.mkdir(os.path.join(self.tmp, "empty"))
        code, out, err = run_cli(["new", "empty"], cwd=self.tmp)
        self.assertEqual(code, 0, err)
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "empty", "bot.lua")))

    def test_new_refuses_a_name_that_cannot_be_a_lua_string(self):
        code, out, err = run_cli(["new", 'we"ird'], cwd=self.tmp)
        self.assertEqual(code, 1, out + err)
        self.assertIn("may hold letters, digits", err)
        self.assertEqual([], os.listdir(self.tmp))
        code, out, err = run_cli(["new"], cwd=self.tmp)
        self.assertEqual(code, 2, out + err)
        self.assertIn("usage: herald new NAME", err)

    @unittest.skipUnless(shutil.which("make"), "make is not installed")
    def test_new_from_an_installed_herald(self):
        prefix = os.path.join(self.tmp, "prefix")
        p = subprocess.run(["make", "--no-print-directory", "-s", "install", f"PREFIX={prefix}"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=tf(600))
        self.assertEqual(p.returncode, 0, p.stdout.decode(errors="replace"))
        for f in ("bin/herald", "share/herald/lua/teams/testing.lua", "share/herald/lua/defs/teams/init.lua",
                  "share/herald/lua/defs/teams/testing.lua", "lib/herald/lua/herald/testing_core.so"):
            self.assertTrue(os.path.isfile(os.path.join(prefix, f)), f)
        herald = os.path.join(prefix, "bin", "herald")
        p = subprocess.run([herald, "new", "demo"], cwd=self.tmp, env=base_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=tf(30))
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        demo = os.path.join(self.tmp, "demo")
        with open(os.path.join(demo, ".busted")) as f:
            busted_cfg = f.read()
        # the install's kit, not the checkout's
        self.assertIn(f'"{os.path.join(prefix, "share", "herald", "lua")}"', busted_cfg)
        self.assertIn(f'"{os.path.join(prefix, "lib", "herald", "lua")}"', busted_cfg)
        self.assertNotIn(os.path.join(ROOT, "build"), busted_cfg)
        with open(os.path.join(demo, ".luarc.json")) as f:
            self.assertIn(os.path.join(prefix, "share", "herald", "lua", "defs"), f.read())
        code, out = busted(demo)
        self.assertEqual(code, 0, out)
        self.assertIn("3 successes / 0 failures / 0 errors", out)


@require_binary
class HeraldCheckTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="herald-check-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def script(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, path, *flags):
        code, out, err = run_cli(["check", *flags, path])
        self.assertEqual([], sanitizer_problems(err), err)
        return code, out, err

    def test_a_misspelt_hook_at_top_level(self):
        path = self.script("typo.lua", 'local teams = require "teams"\nteams.on_mesage(function(ev) end)\n')
        code, out, err = self.check(path, "--dev")
        self.assertEqual(code, 1, out + err)
        self.assertIn(f"{path}:2: unknown field 'on_mesage' in teams (did you mean on_message?)", err)
        self.assertNotIn("stack traceback", err)

    def test_misspelt_names_inside_handlers_are_found_in_the_text(self):
        path = self.script("handlers.lua", "\n".join([
            'local teams = require "teams"',
            'local t = require("teams")',
            'teams.on_message(function(ev)',
            '  teams.sendd(ev.conversation, "x")',
            '  local s = "teams.not_this"  -- teams.nor_this',
            '  t.schedule.cancle("x")',
            '  teams.helper = function() end',
            '  teams.helper()',
            '  teams.timer.aftr(1, print)',
            '  --[[ teams.nor_that ]]',
            '  teams.send(ev.conversation, "ok")',
            'end)', ""]))
        code, out, err = self.check(path, "--dev")
        self.assertEqual(code, 1, out + err)
        found = [l for l in err.splitlines() if "unknown field" in l]
        self.assertEqual([
            f"{path}:4: unknown field 'sendd' in teams (did you mean send?)",
            f"{path}:6: unknown field 'cancle' in teams.schedule (did you mean cancel?)",
            f"{path}:9: unknown field 'aftr' in teams.timer (did you mean after?)",
        ], found)

    def test_syntax_and_load_errors_name_file_and_line(self):
        code, out, err = self.check(bot("syntax_error.lua"), "--dev")
        self.assertEqual(code, 1, out + err)
        self.assertIn(f"{bot('syntax_error.lua')}:4:", err)
        code, out, err = self.check(bot("load_error.lua"), "--dev")
        self.assertEqual(code, 1, out + err)
        line = line_of(bot("load_error.lua"), "LOAD_ERROR_LINE")
        self.assertIn(f"{bot('load_error.lua')}:{line}: refusing to load", err)

    def test_a_good_script_passes_without_network_or_database(self):
        path = self.script("good.lua", "\n".join([
            'local teams = require "teams"',
            'teams.on_message(function(ev) ev:reply("hi") end)',
            'teams.timer.every(60, function() end)',
            ""]))
        code, out, err = self.check(path, "--dev")
        self.assertEqual(code, 0, out + err)
        self.assertIn("good.lua loads in the sandbox; every teams name it uses exists", out)
        self.assertEqual(["good.lua"], sorted(os.listdir(self.tmp)))   # no herald.db written

    def test_the_script_is_checked_even_without_credentials(self):
        path = self.script("typo.lua", 'local teams = require "teams"\nteams.on_mesage(function(ev) end)\n')
        code, out, err = self.check(path)
        self.assertEqual(code, 1, out + err)
        self.assertIn("no app id configured", err)
        self.assertIn("did you mean on_message?", err)


if __name__ == "__main__":
    unittest.main()
