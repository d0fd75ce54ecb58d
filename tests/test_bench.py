"""
Tests for C{bench/run.py}, the benchmark harness: it runs end to end on a
tiny load and writes every figure. The figures themselves are the
harness's business, not the tests'.
"""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, "bench", "run.py")

sys.path.insert(0, os.path.join(ROOT, "bench"))
import run as harness  # noqa: E402

sys.path.remove(os.path.join(ROOT, "bench"))


class WrkOutputTests(TestCase):
    """
    L{harness.parseWrk} reads wrk's C{--latency} report.
    """

    report = """\
Running 1s test @ http://127.0.0.1:8000/bench
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.01ms    3.20ms  40.11ms   80.00%
    Req/Sec     2.61k   100.00     2.80k    70.00%
  Latency Distribution
     50%  812.00us
     75%   12.50ms
     90%   15.00ms
     99%    1.20s
  2650 requests in 1.00s, 500.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:   2645.31
Transfer/sec:    499.00KB
"""

    def test_figures(self):
        """
        Requests/s, the request count, p50 and p99 in milliseconds whatever
        wrk's unit, socket errors and non-2xx responses are read.
        """
        figures = harness.parseWrk(self.report)
        self.assertEqual(
            (figures["requestsPerSecond"], figures["requests"], figures["p50Ms"], figures["p99Ms"],
             figures["errors"], figures["non2xx"]),
            (2645.31, 2650, 0.812, 1200.0, 3, 7))

    def test_unreadable(self):
        """
        Output without the figures is an error naming it, not zeros.
        """
        error = self.assertRaises(ValueError, harness.parseWrk, "wrk: connection refused\n")
        self.assertIn("connection refused", str(error))


class QuickRunTests(TestCase):
    """
    C{bench/run.py --quick} measures every setup and writes the results.
    """

    timeout = 900

    def test_quickRun(self):
        """
        One quick run writes C{latest.json} with a measured row (requests
        answered, no failure) for every setup, ratios to the peer and to
        nginx, the machine, the targets and the micro-benchmarks, plus the
        Markdown table and the chart.
        """
        results = os.path.abspath(self.mktemp())
        done = subprocess.run(
            [sys.executable, HARNESS, "--quick", "--results", results],
            cwd=ROOT, capture_output=True, text=True, timeout=self.timeout - 30)
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
        with open(os.path.join(results, "latest.json")) as f:
            result = json.load(f)
        rows = {row["key"]: row for row in result["rows"]}
        self.assertEqual(sorted(rows), sorted(row.key for row in harness.rows()))
        for key, row in rows.items():
            self.assertEqual(row["note"], "", f"{key}: {row['note']}")
            self.assertGreater(row["requests"], 0, key)
            self.assertEqual(row["errors"] + row["non2xx"], 0, key)
            self.assertGreater(row["p99Ms"], 0, key)
            self.assertGreaterEqual(row["p99Ms"], row["p50Ms"], key)
            self.assertIsNotNone(row["ratioToPeer"], key)
            self.assertIsNotNone(row["ratioToNginx"], key)
        self.assertEqual(rows["peer"]["ratioToPeer"], 1.0)
        self.assertEqual(rows["nginx"]["ratioToNginx"], 1.0)
        self.assertEqual(result["machine"]["cores"], os.cpu_count())
        self.assertEqual(len(result["targets"]), 4)
        self.assertNotIn("error", result["micro"], result["micro"].get("error"))
        with open(os.path.join(results, "latest.md")) as f:
            table = f.read()
        for row in harness.rows():
            self.assertIn(f"| {row.label} |", table)
        with open(os.path.join(results, "latest.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
