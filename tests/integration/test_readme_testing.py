"""test_readme_testing.py — README "Testing your bot" followed literally: every ```sh block of that
section (up to the next "## " heading) is run as written, so the README cannot drift from what works.

A block whose first command is `make` is herald's own (README: "inside a clone of this repository")
and runs in the checkout; every other block runs, in README order and in one shell (a `cd` carries
over), in an empty temporary directory with `herald` on PATH (the binary under test). Each block
runs under `set -e`. Commands that would run the whole suite again (`make test`, ...) are refused:
the README must not ask a reader to run them in this section's examples."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import HERALD_BIN, ROOT, base_env, require_binary, tf

SECTION = "## Testing your bot"
RECURSIVE = re.compile(r"\bmake\s+(test|run|bench|soak|fuzz)\b")


def section_blocks(readme_text):
    """The sh code blocks of README's "Testing your bot" section, in order."""
    start = readme_text.index(SECTION + "\n")
    end = readme_text.find("\n## ", start + len(SECTION))
    text = readme_text[start:end if end >= 0 else len(readme_text)]
    return [m.group(1) for m in re.finditer(r"^```(?:sh|bash|shell)\n(.*?)^```", text, re.M | re.S)]


def first_command(block):
    for line in block.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.split()[0]
    return ""


@require_binary
@unittest.skipUnless(shutil.which("busted"), "busted is not installed")
class ReadmeTestingSectionTest(unittest.TestCase):
    def test_the_commands_of_testing_your_bot_work_as_written(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            blocks = section_blocks(f.read())
        self.assertTrue(blocks, f"README's {SECTION!r} shows no sh block")
        tmp = tempfile.mkdtemp(prefix="herald-readme-")
        self.addCleanup(shutil.rmtree, tmp, True)
        bindir = os.path.join(tmp, "bin")
        work = os.path.join(tmp, "work")
        os.mkdir(bindir)
        os.mkdir(work)
        os.symlink(HERALD_BIN, os.path.join(bindir, "herald"))
        env = base_env({"PATH": bindir + os.pathsep + os.environ.get("PATH", "")})
        project = []
        for block in blocks:
            self.assertIsNone(RECURSIVE.search(block), f"this test cannot run:\n{block}")
            if first_command(block) == "make":
                self.run_block(block, ROOT, env)
            else:
                project.append(block)
        self.assertTrue(project, "no block of the section runs outside the checkout (herald new ...)")
        # one shell for the project blocks, in order: a block's `cd` holds for the next
        self.run_block("\n".join(f"{b}\n" for b in project), work, env)

    def run_block(self, script, cwd, env):
        p = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=tf(600))
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, f"README block failed in {cwd}:\n{script}\n---\n{out[-4000:]}")
        self.assertNotRegex(out, r"[1-9]\d* failures? |[1-9]\d* errors? ", out[-4000:])


if __name__ == "__main__":
    unittest.main()
