"""Command line and start-up failures (API_DRAFT.md: CLI)."""
import os
import shutil
import socket
import tempfile
import unittest

from harness import (HERALD_BIN, Herald, bot, line_of, require_binary, run_cli, sanitizer_problems)

MAIN = bot("main_bot.lua")


@require_binary
class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="herald-cli-")
        self.db = os.path.join(self.tmp, "h.db")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_herald(self, args, env=None, timeout=20):
        code, out, err = run_cli(args, env=env, timeout=timeout)
        bad = sanitizer_problems(err)
        self.assertFalse(bad, f"sanitizer report in stderr of herald {args}:\n{err[-4000:]}")
        return code, out, err

    def assert_one_clear_line(self, err, *needles):
        lines = [l for l in err.splitlines() if l.strip()]
        self.assertTrue(lines, "nothing on stderr")
        low = err.lower()
        self.assertTrue(any(n.lower() in low for n in needles),
                        f"stderr mentions none of {needles}:\n{err[-2000:]}")

    def test_version(self):
        code, out, err = self.run_herald(["--version"])
        self.assertEqual(code, 0, err)
        self.assertIn("herald 0.1.0", out + err)

    def test_help(self):
        code, out, err = self.run_herald(["--help"])
        self.assertEqual(code, 0, err)
        text = out + err
        self.assertIn("run", text)
        self.assertIn("--dev", text)

    def test_bad_flag(self):
        code, out, err = self.run_herald(["run", "--dev", "--bogus-flag", "--db", self.db, MAIN])
        self.assertEqual(code, 2, err)
        self.assert_one_clear_line(err, "--bogus-flag", "bogus-flag")

    def test_unknown_command(self):
        code, out, err = self.run_herald(["frobnicate"])
        self.assertEqual(code, 2, err)
        self.assert_one_clear_line(err, "frobnicate")

    def test_no_script(self):
        code, out, err = self.run_herald(["run", "--dev", "--db", self.db])
        self.assertEqual(code, 2, err)
        self.assert_one_clear_line(err, "script", "usage")

    def test_missing_script(self):
        missing = os.path.join(self.tmp, "nope", "missing_bot.lua")
        code, out, err = self.run_herald(["run", "--dev", "--listen", "127.0.0.1:0", "--db", self.db, missing])
        self.assertIn(code, (1, 2), err)
        self.assert_one_clear_line(err, "missing_bot.lua")

    def test_bad_log_level(self):
        code, out, err = self.run_herald(["run", "--dev", "--log-level", "loud", "--db", self.db, MAIN])
        self.assertEqual(code, 2, err)
        self.assert_one_clear_line(err, "loud", "log-level", "log level")

    def test_bad_listen(self):
        code, out, err = self.run_herald(["run", "--dev", "--listen", "not-an-address", "--db", self.db, MAIN])
        self.assertIn(code, (1, 2), err)
        self.assert_one_clear_line(err, "not-an-address", "listen")

    def test_syntax_error_script(self):
        script = bot("syntax_error.lua")
        code, out, err = self.run_herald(["run", "--dev", "--listen", "127.0.0.1:0", "--db", self.db, script])
        self.assertEqual(code, 1, err)
        self.assertRegex(err, r"syntax_error\.lua:4:", "no file:line for the syntax error")

    def test_load_error_script(self):
        script = bot("load_error.lua")
        n = line_of(script, "LOAD_ERROR_LINE")
        code, out, err = self.run_herald(["run", "--dev", "--listen", "127.0.0.1:0", "--db", self.db, script])
        self.assertEqual(code, 1, err)
        self.assertRegex(err, rf"load_error\.lua:{n}:.*refusing to load")

    def test_port_in_use(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        try:
            code, out, err = self.run_herald(["run", "--dev", "--listen", f"127.0.0.1:{port}", "--db", self.db,
                                              MAIN])
        finally:
            s.close()
        self.assertIn(code, (1, 2), err)
        self.assert_one_clear_line(err, str(port), "in use", "bind", "listen")

    def test_no_app_id_without_dev_refuses(self):
        code, out, err = self.run_herald(["run", "--listen", "127.0.0.1:0", "--db", self.db, MAIN])
        self.assertIn(code, (1, 2), err)
        self.assertNotIn("listening on", err)
        self.assert_one_clear_line(err, "CLIENT_ID", "MicrosoftAppId")

    def test_dev_refuses_non_loopback_listen(self):
        code, out, err = self.run_herald(["run", "--dev", "--listen", "0.0.0.0:0", "--db", self.db, MAIN])
        self.assertIn(code, (1, 2), err)
        self.assertNotIn("listening on", err)
        self.assert_one_clear_line(err, "loopback", "0.0.0.0")

    def test_herald_dev_env_and_default_db_beside_script(self):
        # HERALD_DEV=1 instead of --dev; no --db: the database lands beside the script as herald.db
        script = os.path.join(self.tmp, "bot.lua")
        shutil.copy(MAIN, script)
        h = Herald(script, env={"HERALD_DEV": "1"}, dev=False)
        h.command = lambda: [HERALD_BIN, "run", "--listen", "127.0.0.1:0", script]
        try:
            h.start()
            st, body = h.healthz()
            self.assertEqual(st, 200, body)
            h.stop()
        finally:
            h.kill()
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "herald.db")),
                        f"no herald.db beside the script: {os.listdir(self.tmp)}")
        shutil.rmtree(h.tmp, ignore_errors=True)

    def test_listen_from_env(self):
        h = Herald(MAIN, env={"HERALD_LISTEN": "127.0.0.1:0"})
        h.command = lambda: [HERALD_BIN, "run", "--dev", "--db", self.db, MAIN]
        try:
            h.start()
            self.assertEqual(h.healthz()[0], 200)
            h.stop()
        finally:
            h.kill()
            shutil.rmtree(h.tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
