"""test_reload_schedules.py — issue 6 with issue 5: a durable schedule set by version 1 fires into
version 2's handler after a reload, and an in-memory timer of version 1 does not fire after the
switch (timers die with their generation; durable work belongs in schedules)."""
import json
import time
import unittest

from harness import require_binary, tf
from test_reload import ReloadCase

V1 = """\
local teams = require "teams"
teams.on_invoke(function(ev)
  if ev.name == "setup" then
    teams.schedule { id = "tick", handler = "tick", every = 1, conversation = ev.conversation }
    teams.timer.after(1.5, function() teams.send(ev.conversation, "v1 timer fired") end)
  end
  return { version = "v1" }
end)
teams.on_schedule("tick", function(ev) ev:send("v1 tick") end)
"""

V2 = """\
local teams = require "teams"
teams.on_invoke(function(ev) return { version = "v2" } end)
teams.on_schedule("tick", function(ev) ev:send("v2 tick") end)
"""


@require_binary
class ReloadSchedulesTest(ReloadCase):
    def texts(self):
        out = []
        for r in self.fc.requests:
            body = r.get("json") or {}
            if isinstance(body, dict) and body.get("text"):
                out.append(body["text"])
        return out

    def test_schedule_of_v1_fires_into_v2_and_v1_timer_dies(self):
        h = self.start(V1)
        # the conversation must be stored before the schedule sends to it
        st, _ = h.post_activity(self.acts.message(self.conv, "hello"))
        self.assertEqual(st, 200)
        t_setup = time.monotonic()
        st, body = self.invoke(h, "setup")
        self.assertEqual((st, json.loads(body)["version"]), (200, "v1"))
        self.bot.write(V2)
        h.wait_log(r"generation 2 live", timeout=10)
        self.assertEqual(self.version(h), "v2")
        deadline = time.monotonic() + tf(6)
        while time.monotonic() < deadline and self.texts().count("v2 tick") < 2:
            time.sleep(0.1)
        # v1's timer was due 1.5 s after the setup: give a wrong firing's send time to arrive
        time.sleep(max(0.0, t_setup + 1.5 + tf(1.0) - time.monotonic()))
        texts = self.texts()
        self.assertGreaterEqual(texts.count("v2 tick"), 2, texts)
        self.assertNotIn("v1 timer fired", texts, "a timer of the old generation fired after the switch")
        self.assertIn("cancelled 1 in-memory timer(s) of the old generation", h.log)
        self.stop_clean(h)


if __name__ == "__main__":
    unittest.main()
