"""
Tests for L{twistgate.web.accesslog}.
"""

import io
import json
import os
import re
import time

from twisted.trial.unittest import SynchronousTestCase

from twistgate.web.accesslog import (
    AccessLog, AccessLogEntry, formatCombined, formatJSON)


def entry(**changes):
    values = dict(
        startedAt=1700000000.25, clientIP="127.0.0.1", method="GET",
        uri="/anything?x=1", url="http://gw.test/anything?x=1", status=200,
        totalSeconds=0.0123, upstreamSeconds=0.0101, proxySeconds=0.0012,
        upstreamURI="/anything?x=1", requestSize=0, responseSize=142, responseBodySize=42,
        serviceId="sid", serviceName="echo", routeId="rid", routeName="r1",
        filters=("greeting", "limiter"), userAgent="curl/8", referer=None)
    values.update(changes)
    return AccessLogEntry(**values)


class FormatTests(SynchronousTestCase):
    def test_jsonKongShape(self):
        record = json.loads(formatJSON(entry()))
        self.assertEqual(record["client_ip"], "127.0.0.1")
        self.assertEqual(record["started_at"], 1700000000250)
        self.assertEqual(record["request"]["method"], "GET")
        self.assertEqual(record["request"]["uri"], "/anything?x=1")
        self.assertEqual(record["response"], {"status": 200, "size": 142})
        self.assertEqual(record["latencies"],
                         {"request": 12, "proxy": 10, "kong": 1})
        self.assertEqual(record["route"], {"id": "rid", "name": "r1"})
        self.assertEqual(record["service"], {"id": "sid", "name": "echo"})
        self.assertEqual(record["filters"], ["greeting", "limiter"])

    def test_jsonNoRoute(self):
        record = json.loads(formatJSON(entry(
            routeId=None, routeName=None, serviceId=None, serviceName=None,
            upstreamSeconds=None, status=404, filters=())))
        self.assertIsNone(record["route"])
        self.assertIsNone(record["service"])
        self.assertIsNone(record["latencies"]["proxy"])
        self.assertEqual(record["filters"], [])

    def test_jsonOneLine(self):
        self.assertNotIn("\n", formatJSON(entry(uri="/a\nb")))

    def test_combined(self):
        line = formatCombined(entry())
        pattern = (r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d'
                   r' [+-]\d{4}\] "GET /anything\?x=1 HTTP/1\.1" 200 42 "-"'
                   r' "curl/8"$')
        self.assertRegex(line, pattern)
        local = time.localtime(1700000000.25)
        self.assertIn(time.strftime("%d/", local) + ["Jan", "Feb", "Mar", "Apr",
                      "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                      [local.tm_mon - 1] + time.strftime("/%Y:%H:%M:%S", local),
                      line)

    def test_combinedEscapes(self):
        line = formatCombined(entry(userAgent='evil "agent"\n', responseBodySize=0))
        self.assertIn(r'"evil \"agent\"\x0a"', line)
        self.assertRegex(line, r' 200 - ')


class AccessLogTests(SynchronousTestCase):
    def test_writesLines(self):
        output = io.StringIO()
        log = AccessLog(output, "json")
        log.log(entry(status=200))
        log.log(entry(status=503))
        lines = output.getvalue().splitlines()
        self.assertEqual([json.loads(line)["response"]["status"]
                          for line in lines], [200, 503])

    def test_file(self):
        path = self.mktemp()
        log = AccessLog.open(path, "combined")
        log.log(entry())
        with open(path) as f:
            self.assertRegex(f.read(), r'^127\.0\.0\.1 .* 200 42 .*\n$')
        log.close()
        again = AccessLog.open(path, "combined")
        again.log(entry(status=201))
        again.close()
        with open(path) as f:
            self.assertEqual(len(f.read().splitlines()), 2)

    def test_off(self):
        log = AccessLog.open("off")
        self.assertFalse(log.enabled)
        log.log(entry())

    def test_enabledUntilClosed(self):
        log = AccessLog.open(self.mktemp())
        self.assertTrue(log.enabled)
        log.close()
        self.assertFalse(log.enabled)

    def test_badFormat(self):
        error = self.assertRaises(ValueError, AccessLog, io.StringIO(), "xml")
        self.assertEqual(str(error),
                         "access log format: 'xml' is not one of json, combined")

    def test_unopenable(self):
        path = os.path.join(self.mktemp(), "missing", "access.log")
        error = self.assertRaises(ValueError, AccessLog.open, path)
        self.assertTrue(re.match(r"access log .*access\.log: cannot be opened: ",
                                 str(error)))
