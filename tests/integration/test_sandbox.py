"""test_sandbox.py — the script sandbox (issue 6): each forbidden thing fails cleanly (no io, no
os.execute and friends, no dofile/loadfile, no bytecode through load, require only inside the
script's directory with plain names and never C modules, os.getenv only for BOT_* and the names
in HERALD_SCRIPT_ENV), what is allowed works, and HERALD_UNSAFE_LUA=1 lifts the restrictions
(logged). The bot is generated in a temp directory with a sibling module, a module in a
subdirectory, a module outside the directory and a C module (lfs.so, when installed) beside it."""
import glob
import json
import os
import shutil
import tempfile
import unittest

from harness import HeraldTestCase, require_binary

KNOWN_BUGS = os.environ.get("HERALD_KNOWN_BUGS") == "1"
C_MODULES = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/lua/5.4/lfs.so") +
                   glob.glob("/usr/lib/*/lua/5.4/lfs.so") + glob.glob("/usr/local/lib/lua/5.4/lfs.so"))

PROBE_BOT = r"""
local teams = require "teams"
local OUTSIDE = %(outside)q

local function try(f, ...)
  local ok, err = pcall(f, ...)
  if ok then return "ok" end
  return tostring(err)
end

local probes = {}

probes.forbidden = function()
  local r = {}
  r.io = type(io)
  r.debug = type(debug)
  r.dofile = type(dofile)
  r.loadfile = type(loadfile)
  for _, k in ipairs { "execute", "exit", "remove", "rename", "tmpname", "setlocale" } do
    r["os_" .. k] = type(os[k])
  end
  r.loadlib = type(package.loadlib)
  r.cpath = package.cpath
  local dumped = string.dump(function() return 1 end)
  local f, err = load(dumped)
  r.bytecode = f and "loaded" or tostring(err)
  f, err = load(dumped, "=x", "b")
  r.bytecode_mode_b = f and "loaded" or tostring(err)
  f, err = load(dumped, "=x", "bt", {})
  r.bytecode_mode_bt_env = f and "loaded" or tostring(err)
  local chunks = { dumped }
  f, err = load(function() return table.remove(chunks) end)
  r.bytecode_reader = f and "loaded" or tostring(err)
  r.require_up = try(require, "../outside")
  r.require_up2 = try(require, "sub/../../outside")
  r.require_abs = try(require, "/etc/passwd")
  r.require_dots = try(require, "sub..mod")
  r.require_c = try(require, "lfs")
  r.secret = tostring(os.getenv("CLIENT_SECRET"))
  r.path = tostring(os.getenv("PATH"))
  r.herald_db = tostring(os.getenv("HERALD_DB"))
  r.not_allowed = tostring(os.getenv("OTHER_SETTING"))
  r.nonstring = tostring(os.getenv(42))
  return r
end

probes.allowed = function()
  local r = {}
  r.text = load("return 6 * 7")()
  r.text_env = load("return x", "=t", "t", { x = 5 })()
  r.sibling = require("sibling").name
  r.sub = require("sub.mod").name
  r.dashed = require("my-mod_2").name
  r.os = { type(os.time), type(os.date), type(os.clock), type(os.difftime), type(os.getenv) }
  r.time_ok = os.time() > 1e9 and os.date("!%%Y", 0) == "1970" and os.difftime(2, 1) == 1
  r.bot_x = tostring(os.getenv("BOT_X"))
  r.allowed = tostring(os.getenv("MY_SETTING"))
  r.allowed2 = tostring(os.getenv("SECOND_SETTING"))
  r.libs = { type(string), type(table), type(math), type(utf8), type(coroutine), type(require("cjson")) }
  return r
end

-- the searcher reads package.path when require runs: a script that rewrites it must still not
-- reach outside its directory
probes.path_escape = function()
  local saved = package.path
  package.path = OUTSIDE .. "/?.lua"
  local r = { escape = try(require, "escapee") }
  package.path = saved
  return r
end

probes.unsafe = function()
  local r = {}
  r.io = type(io)
  r.os_execute = type(os.execute)
  r.loadlib = type(package.loadlib)
  r.secret = tostring(os.getenv("CLIENT_SECRET"))
  r.require_c = try(require, "lfs")
  r.sibling = try(require, "sibling")
  r.dofile = type(dofile)
  local f, err = load(string.dump(function() return 1 end))
  r.bytecode = f and "loaded" or tostring(err)
  return r
end

teams.on_invoke(function(ev) return probes[ev.name]() end)
"""


@require_binary
class SandboxTest(HeraldTestCase):

    def setUp(self):
        super().setUp()
        self.root = tempfile.mkdtemp(prefix="herald-sandbox-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.dir = os.path.join(self.root, "bot")
        self.outside = os.path.join(self.root, "elsewhere")
        os.makedirs(os.path.join(self.dir, "sub"))
        os.makedirs(self.outside)

        def w(path, text):
            with open(path, "w") as f:
                f.write(text)

        w(os.path.join(self.dir, "sibling.lua"), 'return { name = "sibling" }\n')
        w(os.path.join(self.dir, "sub", "mod.lua"), 'return { name = "sub.mod" }\n')
        w(os.path.join(self.dir, "my-mod_2.lua"), 'return { name = "dashed" }\n')
        w(os.path.join(self.root, "outside.lua"), 'return { name = "OUTSIDE" }\n')
        w(os.path.join(self.outside, "escapee.lua"), 'return { name = "ESCAPED" }\n')
        if C_MODULES:
            shutil.copy(C_MODULES[0], os.path.join(self.dir, "lfs.so"))
        lua_q = json.dumps(self.outside)  # a JSON string is a valid Lua string here (no escapes)
        self.script = os.path.join(self.dir, "bot.lua")
        w(self.script, PROBE_BOT.replace("%(outside)q", lua_q).replace("%%", "%"))

    ENV = {"CLIENT_SECRET": "s3cr3t-value", "BOT_X": "bot-x-value", "MY_SETTING": "mine",
           "SECOND_SETTING": "second", "OTHER_SETTING": "other",
           "HERALD_SCRIPT_ENV": "MY_SETTING, SECOND_SETTING"}

    def probe(self, h, name):
        st, body = h.post_activity(self.acts.invoke("a:sandbox", name, {}))
        self.assertEqual(st, 200, f"{name}: {st} {body!r}\n{h.log[-2000:]}")
        return json.loads(body)

    def test_forbidden_things_fail_cleanly(self):
        h = self.start_herald(self.script, env=self.ENV)
        r = self.probe(h, "forbidden")
        for k in ("io", "debug", "dofile", "loadfile", "os_execute", "os_exit", "os_remove",
                  "os_rename", "os_tmpname", "os_setlocale", "loadlib"):
            self.assertEqual(r[k], "nil", (k, r))
        self.assertEqual(r["cpath"], "")
        for k in ("bytecode", "bytecode_mode_b", "bytecode_mode_bt_env", "bytecode_reader"):
            self.assertRegex(r[k], r"attempt to load a binary chunk", (k, r))
        for k in ("require_up", "require_up2", "require_abs", "require_dots"):
            self.assertIn("is not allowed", r[k], (k, r))
        self.assertIn("module 'lfs' not found", r["require_c"])
        self.assertNotIn("OUTSIDE", json.dumps(r))
        for k in ("secret", "path", "herald_db", "not_allowed", "nonstring"):
            self.assertEqual(r[k], "nil", (k, r))
        self.assertNotIn("s3cr3t-value", json.dumps(r))
        self.assertNotIn("HERALD_UNSAFE_LUA", h.log)
        h.stop()
        self.assertNotIn("s3cr3t-value", h.log)

    def test_allowed_things_work(self):
        h = self.start_herald(self.script, env=self.ENV)
        r = self.probe(h, "allowed")
        self.assertEqual(r["text"], 42)
        self.assertEqual(r["text_env"], 5)
        self.assertEqual((r["sibling"], r["sub"], r["dashed"]), ("sibling", "sub.mod", "dashed"))
        self.assertEqual(r["os"], ["function"] * 5)
        self.assertTrue(r["time_ok"])
        self.assertEqual(r["bot_x"], "bot-x-value")
        self.assertEqual(r["allowed"], "mine")
        self.assertEqual(r["allowed2"], "second")
        self.assertEqual(r["libs"], ["table"] * 6)
        h.stop()

    def test_no_script_env_allowlist_means_only_bot_names(self):
        env = dict(self.ENV)
        env["HERALD_SCRIPT_ENV"] = None
        h = self.start_herald(self.script, env=env)
        r = self.probe(h, "allowed")
        self.assertEqual(r["bot_x"], "bot-x-value")
        self.assertEqual(r["allowed"], "nil")
        self.assertEqual(r["allowed2"], "nil")
        h.stop()

    def test_rewriting_package_path_does_not_escape_the_directory(self):
        h = self.start_herald(self.script, env=self.ENV)
        r = self.probe(h, "path_escape")
        self.assertNotEqual(r["escape"], "ok", "require loaded a module from outside the bot directory")
        h.stop()

    def test_unsafe_switch_lifts_the_sandbox_and_is_logged(self):
        env = dict(self.ENV, HERALD_UNSAFE_LUA="1")
        h = self.start_herald(self.script, env=env)
        self.assertIn("HERALD_UNSAFE_LUA=1: the script gets io, the whole os library and C modules", h.log)
        r = self.probe(h, "unsafe")
        self.assertEqual(r["io"], "table")
        self.assertEqual(r["os_execute"], "function")
        self.assertEqual(r["loadlib"], "function")
        self.assertEqual(r["secret"], "s3cr3t-value")
        if C_MODULES:
            self.assertEqual(r["require_c"], "ok", r)
        # still never bytecode and never dofile (text-only loading is not part of the switch)
        self.assertEqual(r["dofile"], "nil")
        self.assertRegex(r["bytecode"], r"attempt to load a binary chunk")
        h.stop()

    def test_unsafe_mode_still_finds_modules_beside_the_script(self):
        env = dict(self.ENV, HERALD_UNSAFE_LUA="1")
        h = self.start_herald(self.script, env=env)
        r = self.probe(h, "unsafe")
        self.assertEqual(r["sibling"], "ok", r)
        h.stop()


if __name__ == "__main__":
    unittest.main()
