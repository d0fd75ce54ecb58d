"""
Tests for L{twistgate.web.echo}, driven with L{StubTreq}.
"""

import base64
import json

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistgate.web.echo import EchoResource, patternBytes


class EchoTests(SynchronousTestCase):
    """
    The echo upstream answers with the request it received.
    """

    def setUp(self):
        self.clock = Clock()
        self.client = StubTreq(EchoResource(self.clock))

    def fetch(self, method, url, **kwargs):
        d = self.client.request(method, url, **kwargs)
        self.client.flush()
        response = self.successResultOf(d)
        body = self.client.content(response)
        self.client.flush()
        return response, self.successResultOf(body)

    def test_echoesRequest(self):
        """
        Method, path, parsed query (repeats as lists), headers as received
        (repeats as lists) and the body come back as JSON.
        """
        response, body = self.fetch("PUT", "http://echo/anything/x?a=1&a=2&b=",
                                    headers={"X-Twice": ["1", "2"]}, data=b"text body")
        self.assertEqual(response.code, 200)
        seen = json.loads(body)
        self.assertEqual((seen["method"], seen["path"], seen["uri"]), ("PUT", "/anything/x", "/anything/x?a=1&a=2&b="))
        self.assertEqual(seen["query"], {"a": ["1", "2"], "b": ""})
        self.assertEqual(seen["headers"]["x-twice"], ["1", "2"])
        self.assertEqual(seen["body"], "text body")
        self.assertIn("address", seen["client"])

    def test_binaryBody(self):
        """
        A body that is not UTF-8 comes back in base64.
        """
        _, body = self.fetch("POST", "http://echo/", data=b"\xff\xfe\x00")
        seen = json.loads(body)
        self.assertEqual((seen["body"], seen["body_encoding"]), (base64.b64encode(b"\xff\xfe\x00").decode(), "base64"))

    def test_status(self):
        """
        C{/status/<code>} answers with that status.
        """
        response, _ = self.fetch("GET", "http://echo/status/503")
        self.assertEqual(response.code, 503)
        noContent, body = self.fetch("GET", "http://echo/status/204")
        self.assertEqual((noContent.code, body), (204, b""))

    def test_delay(self):
        """
        C{/delay/<seconds>} answers once the clock passed that long.
        """
        d = self.client.get("http://echo/delay/1.5")
        self.client.flush()
        self.assertNoResult(d)
        self.clock.advance(1.5)
        self.client.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        response, _ = self.fetch("GET", "http://echo/delay/1000")
        self.assertEqual(response.code, 400)

    def test_bytes(self):
        """
        C{/bytes/<n>} streams exactly C{n} bytes of the known pattern.
        """
        d = self.client.get("http://echo/bytes/200000")
        for _ in range(10):
            self.clock.advance(0)
            self.client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/octet-stream"])
        body = self.client.content(response)
        for _ in range(20):
            self.clock.advance(0)
            self.client.flush()
        self.assertEqual(self.successResultOf(body), patternBytes(200000))
