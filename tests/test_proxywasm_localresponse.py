"""
C{proxy_send_local_response} through the C{hostcalls} test filter on both
runtimes: the client gets the filter's response, the upstream is not
contacted, later filters' request steps are skipped and every filter's
response and log steps still run.
"""

from tests.proxywasm_harness import (
    LogCapture,
    RuntimeMixin,
    bothRuntimes,
    hostcalls,
    report,
    routeConfig,
)


class LocalResponseMixin(RuntimeMixin):
    """
    Local responses from request and response steps.
    """

    def test_fromRequestHeaders(self):
        """
        Status, reason, body and extra headers reach the client; the
        upstream sees nothing.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers local_response 403 Forbidden denied x-r=1,x-s=2")))
        result = self.respond(harness)
        self.assertEqual((result.status, result.reason, result.body), (403, b"Forbidden", b"denied"))
        self.assertEqual(result.header(b"x-r"), b"1")
        self.assertEqual(result.header(b"x-s"), b"2")
        self.assertEqual(harness.upstream.seen, [])

    def test_chainShortCircuit(self):
        """
        In chain [A, B, C] where B answers locally in on_request_headers, C's
        on_request_headers is skipped, but A, B and C all run
        on_response_headers, on_response_body and on_log.
        """
        logs = LogCapture(self)

        def member(letter, extra=""):
            return hostcalls(
                "request_headers log info {0}-request; {1} response_headers add_header response x-{0} seen;"
                " response_body log info {0}-body; log log info {0}-log".format(letter, extra))

        harness = self.harness(routeConfig(
            member("a"), member("b", "request_headers local_response 403 Forbidden denied x-r=1;"), member("c")))
        result = self.respond(harness)
        self.assertEqual(result.status, 403)
        self.assertEqual([result.header(b"x-" + letter) for letter in (b"a", b"b", b"c")], [b"seen"] * 3)
        messages = " ".join(logs.messages("twistgate.filter.hostcalls"))
        for present in ("a-request", "b-request", "a-body", "b-body", "c-body", "a-log", "b-log", "c-log"):
            self.assertIn(present, messages)
        self.assertNotIn("c-request", messages)
        self.assertEqual(harness.upstream.seen, [])

    def test_fromResponseHeaders(self):
        """
        A local response in on_response_headers replaces the upstream's.
        """
        harness = self.harness(routeConfig(hostcalls(
            "response_headers local_response 502 Bad\\sGateway replaced")))
        result = self.respond(harness)
        self.assertEqual((result.status, result.body), (502, b"replaced"))
        self.assertEqual(len(harness.upstream.seen), 1)

    def test_afterResponseStarted(self):
        """
        Once the body is flowing, a local response is refused with
        BAD_ARGUMENT and the response is unchanged.
        """
        harness = self.harness(routeConfig(hostcalls(
            "response_body local_response 500 - late; response_body report_log")))
        logs = LogCapture(self)
        result = self.respond(harness)
        self.assertEqual((result.status, result.body), (200, b"upstream body"))
        self.assertTrue(logs.containing("local_response 500=status:2"))

    def test_closeStream(self):
        """
        C{proxy_close_stream} in a request step ends the request with an
        error; the upstream is not contacted and later filters do not run.
        """
        harness = self.harness(routeConfig(
            hostcalls("request_headers close_stream request"),
            hostcalls("request_headers local_response 200 - never")))
        result = self.respond(harness)
        self.assertEqual(result.status, 500)
        self.assertEqual(harness.upstream.seen, [])

    def test_invalid(self):
        """
        A status outside 100-999 and header values with CR/LF are
        BAD_ARGUMENT and the request goes on.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers local_response 1000 - x; request_headers local_response 200 - x x-a=b\\r\\nc:d;"
            " response_headers report_header")))
        result = self.respond(harness)
        self.assertEqual(result.status, 200)
        self.assertEqual(report(result), ["local_response 1000=status:2", "local_response 200=status:2"])


bothRuntimes(LocalResponseMixin, globals())
