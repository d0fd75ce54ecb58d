"""
Tests for L{twistgate.web.http1server}: the proxy listener's HTTP/1.1
front end, at the byte level.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_web_proxy import RecordingProducer
from twistgate.web.http1server import GatewaySite


class RecordingResource:
    """
    Keeps each request it is given; answers at once with C{answer} when it
    is set.
    """

    def __init__(self, answer=None):
        self.requests = []
        self.answer = answer

    def render(self, request):
        self.requests.append(request)
        if self.answer is not None:
            self.answer(request)


def answerWhole(request):
    body = b"path=" + request.uri
    request.writeWhole(200, None, [(b"content-length", b"%d" % len(body))], body)
    request.finish()


class FrontEndTests(SynchronousTestCase):
    """
    Parsing requests and framing responses.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()

    def connect(self, resource, **kwargs):
        site = GatewaySite(resource, self.clock, **kwargs)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def test_headParsed(self):
        """
        The request line and headers reach the resource: names lower-cased,
        values trimmed, repeated headers kept in order, folded lines joined.
        """
        resource = RecordingResource()
        channel, _ = self.connect(resource)
        channel.dataReceived(b"GET /a?b=c HTTP/1.1\r\nHost: gw\r\nX-Two:  1 \r\nX-TWO: 2\r\n"
                             b"X-Folded: a\r\n  b\r\n\r\n")
        [request] = resource.requests
        self.assertEqual((request.method, request.uri, request.path, request.clientproto),
                         (b"GET", b"/a?b=c", b"/a", b"HTTP/1.1"))
        self.assertEqual(request.headerPairs,
                         [(b"host", b"gw"), (b"x-two", b"1"), (b"x-two", b"2"), (b"x-folded", b"a b")])
        self.assertEqual(request.getHeader(b"X-Two"), b"2")
        self.assertEqual(request.requestHeaders.getRawHeaders(b"x-two"), [b"1", b"2"])
        self.assertIsNone(request.bodyStream)

    def test_headInPieces(self):
        """
        A head that arrives a byte at a time is parsed once complete.
        """
        resource = RecordingResource()
        channel, _ = self.connect(resource)
        for byte in b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n":
            self.assertEqual(resource.requests, [])
            channel.dataReceived(bytes([byte]))
        self.assertEqual(len(resource.requests), 1)

    def test_badInput(self):
        """
        Malformed heads get 400 and the connection closes: a bad request
        line, an unsupported version, a header without a colon or with a
        space before it, a NUL in a value, two framings, an unknown
        transfer coding, a length of more digits than any body has, a
        framing header folded onto a second line.
        """
        heads = [
            b"GET /\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n",
            b"GET / HTTP/1.1\r\nName : v\r\n",
            b"GET / HTTP/1.1\r\nName: a\x00b\r\n",
            b"GET / HTTP/1.1\r\nName: a\nb\r\n",
            b"GET / HTTP/1.1\r\nName: a\rb\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: " + b"1" * 5000 + b"\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n",
            b"\r\n  folded: first\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\n 0\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n , gzip\r\n",
        ]
        for head in heads:
            resource = RecordingResource()
            channel, transport = self.connect(resource)
            channel.dataReceived(head + b"\r\n")
            self.assertEqual(transport.value().split(b"\r\n", 1)[0], b"HTTP/1.1 400 Bad Request", head)
            self.assertTrue(transport.disconnecting, head)
            self.assertEqual(resource.requests, [], head)

    def test_unfinishedHeadTooLarge(self):
        """
        A head still growing past the size limit is refused with 431
        before its end arrives.
        """
        channel, transport = self.connect(RecordingResource())
        channel.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000)
        self.assertEqual(transport.value().split(b"\r\n", 1)[0], b"HTTP/1.1 431 Request Header Fields Too Large")

    def test_keepAlive(self):
        """
        HTTP/1.1 connections stay open for the next request.
        """
        resource = RecordingResource(answerWhole)
        channel, transport = self.connect(resource)
        channel.dataReceived(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
        channel.dataReceived(b"GET /two HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertTrue(transport.value().endswith(b"path=/two"))
        self.assertFalse(transport.disconnecting)

    def test_connectionClose(self):
        """
        A client's C{Connection: close} and any HTTP/1.0 request close the
        connection after the response.
        """
        for head in [b"GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"]:
            channel, transport = self.connect(RecordingResource(answerWhole))
            channel.dataReceived(head)
            self.assertIn(b"path=/", transport.value())
            self.assertTrue(transport.disconnecting, head)
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 200 OK\r\n"))

    def test_pipelined(self):
        """
        Pipelined requests are answered in order, one at a time: the next
        starts only once the current response ended.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\n\r\n")
        self.assertEqual([r.uri for r in resource.requests], [b"/one"])
        answerWhole(resource.requests[0])
        self.clock.advance(0)
        self.assertEqual([r.uri for r in resource.requests], [b"/one", b"/two"])
        answerWhole(resource.requests[1])
        self.clock.advance(0)
        answerWhole(resource.requests[2])
        responses = transport.value()
        self.assertLess(responses.index(b"path=/one"), responses.index(b"path=/two"))
        self.assertLess(responses.index(b"path=/two"), responses.index(b"path=/three"))

    def test_pipelinedBytesPauseClient(self):
        """
        Past C{maxBuffered} bytes of requests waiting behind the current
        one, the client is paused; it resumes when the response ended.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.maxBuffered = 100
        channel.dataReceived(b"GET /one HTTP/1.1\r\n\r\n")
        channel.dataReceived(b"GET /two HTTP/1.1\r\nX: " + b"a" * 200 + b"\r\n\r\n")
        self.assertEqual(transport.producerState, "paused")
        answerWhole(resource.requests[0])
        self.assertEqual(transport.producerState, "producing")

    def test_contentLengthBody(self):
        """
        A body with a Content-Length streams into the request's body
        stream, the request rendered before it arrived; the next request
        follows it on the same connection.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"POST /up HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc")
        [request] = resource.requests
        stream = request.bodyStream
        self.assertEqual((stream.received, stream.complete), (3, False))
        channel.dataReceived(b"defGET /next HTTP/1.1\r\n\r\n")
        self.assertTrue(stream.complete)
        self.assertEqual(self.successResultOf(stream.readAll()), b"abcdef")
        answerWhole(request)
        self.clock.advance(0)
        self.assertEqual([r.uri for r in resource.requests], [b"/up", b"/next"])

    def test_chunkedBody(self):
        """
        A chunked body is decoded into the body stream.
        """
        resource = RecordingResource()
        channel, _ = self.connect(resource)
        channel.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        channel.dataReceived(b"2\r\nde\r\n0\r\n\r\n")
        stream = resource.requests[0].bodyStream
        self.assertEqual((stream.length, stream.complete), (None, True))
        self.assertEqual(self.successResultOf(stream.readAll()), b"abcde")

    def test_expectContinue(self):
        """
        A request with C{Expect: 100-continue} and a body gets
        C{100 Continue} at once.
        """
        channel, transport = self.connect(RecordingResource())
        channel.dataReceived(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")

    def test_answeredBeforeBodyEnds(self):
        """
        A response ended before the request body did says
        C{Connection: close} and closes: the rest of the body could not be
        told from a next request.
        """
        channel, transport = self.connect(RecordingResource(answerWhole))
        channel.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_streamedResponseChunked(self):
        """
        A response written in pieces without a Content-Length is chunked
        on HTTP/1.1 and ends with the last chunk; the connection stays.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        request = resource.requests[0]
        request.setResponseCode(201)
        request.responseHeaders.addRawHeader(b"x-name", b"v")
        request.write(b"hello ")
        request.write(b"world")
        request.finish()
        self.assertEqual(transport.value(),
                         b"HTTP/1.1 201 Created\r\nX-Name: v\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")
        self.assertFalse(transport.disconnecting)

    def test_streamedResponseHTTP10(self):
        """
        On HTTP/1.0 a response without a Content-Length is delimited by
        closing the connection.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        request = resource.requests[0]
        request.write(b"body")
        request.finish()
        self.assertEqual(transport.value(), b"HTTP/1.0 200 OK\r\n\r\nbody")
        self.assertTrue(transport.disconnecting)

    def test_headGetsNoBody(self):
        """
        A C{HEAD} request's response carries the head only, streamed or
        whole.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"HEAD / HTTP/1.1\r\n\r\n")
        request = resource.requests[0]
        request.responseHeaders.addRawHeader(b"content-length", b"4")
        request.write(b"body")
        request.finish()
        self.assertEqual(transport.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        transport.clear()
        resource.answer = answerWhole
        channel.dataReceived(b"HEAD /whole HTTP/1.1\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")

    def test_clientGone(self):
        """
        A client gone mid-request fails the request's C{notifyFinish} and
        its body stream; writing to it afterwards does nothing.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        request = resource.requests[0]
        finished = request.notifyFinish()
        channel.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(finished, ConnectionDone)
        self.assertIsInstance(request.bodyStream.failure.value, ConnectionDone)
        request.write(b"late")
        request.finish()
        self.assertEqual(transport.value(), b"")

    def test_notifyFinish(self):
        """
        C{notifyFinish} fires once the response ended.
        """
        resource = RecordingResource()
        channel, _ = self.connect(resource)
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        request = resource.requests[0]
        finished = request.notifyFinish()
        self.assertNoResult(finished)
        answerWhole(request)
        self.successResultOf(finished)
        self.successResultOf(request.notifyFinish())

    def test_idleTimeout(self):
        """
        A kept-alive connection silent for the idle timeout closes; one
        busy with a slow response does not.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource, headerTimeout=0, bodyTimeout=10)
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.clock.advance(25)
        self.assertFalse(transport.disconnecting)
        answerWhole(resource.requests[0])
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_answeredWhenBodyEnds(self):
        """
        A response ended as the request body completes (a resource that
        answers once it read the body) does not lose a next request that
        arrived with the end of the body.
        """
        resource = RecordingResource()

        def answerAfterBody(request):
            if request.bodyStream is not None:
                request.bodyStream.readAll().addCallback(lambda _: answerWhole(request))
            else:
                answerWhole(request)

        resource.answer = answerAfterBody
        channel, transport = self.connect(resource)
        channel.dataReceived(b"POST /up HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\n\r\n")
        self.clock.advance(0)
        self.assertEqual([r.uri for r in resource.requests], [b"/up", b"/next"])
        self.assertTrue(transport.value().endswith(b"path=/next"))

    def test_unreadBodyPauseLifted(self):
        """
        A request body that arrived whole but was never read (the response
        made without it) does not keep the client paused once the response
        ended: the connection goes on with the next request.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        body = b"a" * 100000
        channel.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (len(body),) + body)
        self.assertEqual(transport.producerState, "paused")
        answerWhole(resource.requests[0])
        self.assertEqual(transport.producerState, "producing")
        self.assertFalse(transport.disconnecting)

    def test_malformedChunkedBody(self):
        """
        A chunked body whose framing is broken fails the request as if the
        client had gone, gets 400 if nothing of the response was sent, and
        the connection closes; in the packet of the head or after it.
        """
        for head, rest in [(b"", b"zz\r\n"), (b"", b"3\r\nabcX\r\n"), (b"3\r\nabc\r\n", b"1;\x00\r\n")]:
            resource = RecordingResource()
            channel, transport = self.connect(resource)
            channel.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + head)
            [request] = resource.requests
            finished = request.notifyFinish()
            channel.dataReceived(rest)
            self.failureResultOf(finished)
            self.assertIsNotNone(request.bodyStream.failure)
            self.assertEqual(transport.value().split(b"\r\n", 1)[0], b"HTTP/1.1 400 Bad Request")
            self.assertTrue(transport.disconnecting)
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        self.failureResultOf(resource.requests[0].notifyFinish())
        self.assertEqual(transport.value().split(b"\r\n", 1)[0], b"HTTP/1.1 400 Bad Request")

    def test_malformedChunkedBodyAfterResponseStarted(self):
        """
        A chunked body broken after the response started cuts the
        connection: the response cannot be ended or followed.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        request = resource.requests[0]
        request.write(b"partial")
        channel.dataReceived(b"zz\r\n")
        self.assertNotIn(b"400", transport.value())
        self.assertTrue(transport.disconnecting)
        request.write(b"late")
        request.finish()
        self.assertNotIn(b"late", transport.value())

    def test_idleTimeoutNotWhileBodyHeldBack(self):
        """
        A client paused because its body is not taken fast enough (a slow
        upstream) is not silent: the idle timeout waits, and counts again
        from when the client was let go on.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource, headerTimeout=0, bodyTimeout=10)
        channel.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"a" * 100000)
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(35)
        self.assertFalse(transport.disconnecting)
        stream = resource.requests[0].bodyStream
        stream.readAll()
        self.assertEqual(transport.producerState, "producing")
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_clientNotReadingStopsRequests(self):
        """
        While the client does not read its responses (the transport's
        buffer is full and pauses the channel), no next request starts and
        nothing more is read; once the client caught up, the next request
        starts and reading resumes.
        """
        resource = RecordingResource(answerWhole)
        channel, transport = self.connect(resource)
        self.assertIs(transport.producer, channel)
        channel.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        channel.dataReceived(b"GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\n")
        self.clock.advance(0)
        self.assertEqual([r.uri for r in resource.requests], [])
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.clock.advance(0)
        self.assertEqual([r.uri for r in resource.requests], [b"/one", b"/two"])

    def test_clientNotReadingBetweenPipelinedRequests(self):
        """
        A response the client does not read holds back the pipelined
        request after it.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\n")
        channel.pauseProducing()
        answerWhole(resource.requests[0])
        self.clock.advance(0)
        self.assertEqual([r.uri for r in resource.requests], [b"/one"])
        self.assertEqual(transport.producerState, "paused")
        channel.resumeProducing()
        self.clock.advance(0)
        self.assertEqual([r.uri for r in resource.requests], [b"/one", b"/two"])

    def test_responseProducerFollowsClient(self):
        """
        The producer of a streamed response is paused while the client
        does not read (also when registered during such a time), resumed
        when it does, and stopped when the connection is lost.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource)
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        request = resource.requests[0]
        producer = RecordingProducer()
        channel.pauseProducing()
        request.registerProducer(producer, True)
        channel.resumeProducing()
        channel.pauseProducing()
        self.assertEqual(producer.events, ["pause", "resume", "pause"])
        channel.stopProducing()
        self.assertEqual(producer.events[-1], "stop")
        request.unregisterProducer()
        channel.resumeProducing()
        self.assertEqual(producer.events[-1], "stop")
        self.assertRaises(ValueError, request.registerProducer, producer, False)

    def test_clientNotReadingAborted(self):
        """
        A client that does not take the buffered part of its response
        within the idle timeout is cut off; one that catches up in time is
        not.
        """
        resource = RecordingResource()
        channel, transport = self.connect(resource, headerTimeout=0, bodyTimeout=10)
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        request = resource.requests[0]
        request.write(b"part of a large body")
        self.clock.advance(5)
        channel.pauseProducing()
        self.clock.advance(9)
        channel.resumeProducing()
        self.clock.advance(30)
        self.assertFalse(transport.disconnecting)
        channel.pauseProducing()
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(10)
        self.assertTrue(transport.disconnected)

    def test_timeoutsLogged(self):
        """
        Each cut-off of a misbehaving client is logged with the client's
        address and the timeout: an incomplete head (408), a body that
        stopped arriving, a response left untaken. A kept-alive connection
        closing when idle is not.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def cutOffs():
            return [formatEvent(event) for event in events
                    if event.get("log_namespace", "").startswith("twistgate.web.http1server")]

        idle, _ = self.connect(RecordingResource(answerWhole), headerTimeout=5, bodyTimeout=10)
        idle.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.clock.advance(30)
        self.assertEqual(cutOffs(), [])
        partial, _ = self.connect(RecordingResource(), headerTimeout=5, bodyTimeout=10)
        partial.dataReceived(b"GET / HTTP/1.1\r\nHost")
        self.clock.advance(6)
        body, _ = self.connect(RecordingResource(), headerTimeout=5, bodyTimeout=10)
        body.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        self.clock.advance(11)
        untaken, _ = self.connect(RecordingResource(), headerTimeout=5, bodyTimeout=10)
        untaken.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        untaken.pauseProducing()
        self.clock.advance(21)
        self.assertEqual(cutOffs(), [
            "client 192.168.1.1:54321 sent an incomplete request head for 5 s: 408, closed",
            "client 192.168.1.1:54321 sent nothing of its request body for 10 s: closed",
            "client 192.168.1.1:54321 took none of its response for 10 s: aborted",
        ])
