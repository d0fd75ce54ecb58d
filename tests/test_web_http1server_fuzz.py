"""
Property-based tests of the proxy listener's front end
(L{twistgate.web.http1server}): whatever bytes a client sends, in whatever
pieces, the channel answers with whole HTTP responses or closes, and never
raises.
"""

import re

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistgate.web.http1server import GatewaySite

#: Requests a client may pipeline on one connection.
_REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /b?q=1 HTTP/1.1\r\nHost: x\r\nX-Many: 1\r\nX-Many: 2\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nT: v\r\n\r\n",
    b"HEAD /e HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"GET /g HTTP/1.0\r\n\r\n",
    b"GET /h HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET /streams HTTP/1.1\r\n\r\n",
    b"GET /old/streams HTTP/1.0\r\n\r\n",
]
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] \d{3} [^\r\n]*\r\n")


class _Answering:
    """
    Answers each request once its body (if any) arrived: whole responses,
    or a streamed one for paths ending in C{s}.
    """

    def __init__(self):
        self.uris = []
        self.methods = []

    def render(self, request):
        self.uris.append(request.uri)
        self.methods.append(request.method)
        stream = request.bodyStream
        if stream is None:
            self._answer(request, b"")
            return
        stream.readAll().addCallbacks(lambda body: self._answer(request, body), lambda failure: None)

    def _answer(self, request, body):
        if request.finished or request._disconnected:
            return
        if request.uri.endswith(b"s"):
            request.write(b"streamed " + body)
            request.finish()
            return
        answer = b"uri=" + request.uri + b" body=" + body
        request.writeWhole(200, None, [(b"content-length", b"%d" % len(answer))], answer)
        request.finish()


def _feed(pieces):
    clock = MemoryReactorClock()
    resource = _Answering()
    channel = GatewaySite(resource, clock, maxBodySize=1000).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    for piece in pieces:
        channel.dataReceived(piece)
        clock.advance(0)
    clock.advance(0)
    return resource, transport


def _split(data, cuts):
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces, start = [], 0
    for point in points + [len(data)]:
        pieces.append(data[start:point])
        start = point
    return [piece for piece in pieces if piece]


def _responses(testCase, output, methods):
    """
    Parse C{output} as a sequence of whole responses, the successful ones
    answering requests of C{methods} in order.

    @return: their status codes.
    """
    methods = list(methods)
    statuses = []
    rest = output
    while rest:
        head, blank, rest = rest.partition(b"\r\n\r\n")
        testCase.assertTrue(blank, output)
        lines = head.split(b"\r\n")
        testCase.assertIsNotNone(_STATUS_LINE.fullmatch(lines[0] + b"\r\n"), output)
        status = int(lines[0].split(b" ")[1])
        statuses.append(status)
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        if status < 200:
            continue
        method = methods.pop(0) if status == 200 else b"GET"
        if method == b"HEAD":
            continue
        if b"content-length" in headers:
            size = int(headers[b"content-length"])
            testCase.assertGreaterEqual(len(rest), size, output)
            rest = rest[size:]
        elif headers.get(b"transfer-encoding") == b"chunked":
            while True:
                sizeLine, crlf, rest = rest.partition(b"\r\n")
                testCase.assertTrue(crlf, output)
                size = int(sizeLine, 16)
                testCase.assertEqual(rest[size:size + 2], b"\r\n", output)
                rest = rest[size + 2:]
                if not size:
                    break
        else:
            testCase.assertTrue(lines[0].startswith(b"HTTP/1.0 "), output)
            rest = b""
    return statuses


class FrontEndFuzzTests(SynchronousTestCase):
    """
    Random pipelines, random pieces, random damage.
    """

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(_REQUESTS), min_size=1, max_size=6), st.lists(st.integers(0, 10_000),
                                                                               max_size=12))
    def test_anySplitSameAnswers(self, requests, cuts):
        """
        A pipeline of valid requests gets the same bytes back however it is
        cut into pieces.
        """
        data = b"".join(requests)
        whole = _feed([data])
        pieces = _feed(_split(data, cuts))
        self.assertEqual(pieces[0].uris, whole[0].uris)
        self.assertEqual(pieces[1].value(), whole[1].value())
        self.assertEqual(pieces[1].disconnecting, whole[1].disconnecting)
        self.assertEqual(self.flushLoggedErrors(), [])

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(_REQUESTS), min_size=1, max_size=4), st.data())
    def test_damagedInputAnsweredOrClosed(self, requests, data):
        """
        Damaged bytes (flipped, dropped, inserted) never raise: the output
        is whole HTTP responses, one per request answered, in order, plus
        at most one refusal (4xx) after which the connection closes.
        """
        original = bytearray(b"".join(requests))
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(original)))
            action = data.draw(st.sampled_from(["flip", "drop", "insert"]))
            if action == "insert" or position == len(original):
                original[position:position] = data.draw(st.binary(min_size=1, max_size=8))
            elif action == "drop":
                del original[position]
            else:
                original[position] = data.draw(st.integers(0, 255))
        cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=6))
        resource, transport = _feed(_split(bytes(original), cuts))
        statuses = _responses(self, transport.value(), resource.methods)
        refusals = [status for status in statuses if status >= 400]
        self.assertLessEqual(len(refusals), 1)
        if refusals:
            self.assertEqual(statuses[-1], refusals[0])
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.flushLoggedErrors(), [])
