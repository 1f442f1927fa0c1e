"""test_jepsen.py — the fault suite (jepsen.py) run short under `make test`: one seeded run (SEED=N
repeats its plan) with at least 5 kill -9 (one inside a broadcast's creation, one while a schedule
firing's sends are out, one while the disk is full), 25 % network faults, 429 storms, a full disk, a failing fsync and a second
herald on the same database; then one test per property of the account, so a failure names what
broke. `make soak` runs the same for SOAK_MINUTES against the release build."""
import sys
import unittest

from harness import require_binary
import jepsen


@require_binary
class JepsenShortTest(unittest.TestCase):
    scenario = None

    @classmethod
    def setUpClass(cls):
        cls.scenario = jepsen.Scenario().run()

    def check(self, *keys):
        s = self.scenario
        bad = s.problems(*keys)
        if bad:
            lines = [f"seed {s.seed}: {s.summary}"]
            for k, v in bad.items():
                lines.append(f"{k}: {len(v)} — {v[:12]}")
                if k in ("lost", "phantom"):
                    lines.append(s.evidence(v))
            self.fail("\n".join(lines))

    def test_faults_were_all_injected(self):
        s = self.scenario
        self.assertGreaterEqual(len(s.kills), 5, s.kills)
        self.assertTrue(any("disk is full" in why for _, why in s.kills), "no kill while the disk was full")
        self.assertGreaterEqual(len(s.creation_kills), 1, "no kill inside a broadcast's creation")
        self.assertGreaterEqual(s.firing_kills, 1, "no kill while a schedule firing was out")
        self.assertGreater(s.numbers["random_faults"], 0)
        self.assertGreater(s.numbers["status_429"], 0, "no 429 storm reached herald")
        self.assertGreater(s.store_errors_seen.get("full", 0), 0,
                           f"herald never met the full disk ({s.storage.full_how})")
        self.assertGreater(s.store_errors_seen.get("fsync", 0), 0, "no fsync failed")
        self.assertGreater(s.numbers["unknown"] + s.numbers["refused"], 0)

    def test_nothing_accepted_is_lost(self):
        self.check("lost", "lost_broadcast", "partial_firings", "not_sent")

    def test_refused_sends_never_go_out(self):
        self.check("phantom", "stray", "wrong_conversation")

    def test_order_within_each_conversation(self):
        self.check("reordered")

    def test_duplicates_stay_within_the_in_flight_window(self):
        self.check("duplicates")
        print(f"\n    duplicates: {self.scenario.numbers['dup']} ({self.scenario.numbers['dup_explained']} "
              f"in herald's own records, {self.scenario.numbers['dup_crash_window']} in the crash window)",
              file=sys.stderr)

    def test_herald_report_agrees_with_the_fake(self):
        self.check("report")

    def test_herald_recovers_by_itself_and_stays_sanitizer_clean(self):
        self.check("herald")

    def test_a_second_herald_is_refused_and_the_first_goes_on(self):
        self.assertEqual(self.scenario.second_verdict(), "refused", self.scenario.seconds)


if __name__ == "__main__":
    unittest.main()
