"""
Buffer hostcalls (C{proxy_get/set_buffer_bytes}, C{proxy_get_buffer_status})
through the C{hostcalls} test filter on both runtimes: request and response
bodies, configurations, and response body buffering with PAUSE.
"""

from twistgate.gateway.chain import ChainSettings

from tests.proxywasm_harness import RuntimeMixin, bothRuntimes, hostcalls, report, routeConfig


class BuffersMixin(RuntimeMixin):
    """
    Bodies and configuration buffers.
    """

    def test_requestBodyReadOnceWhole(self):
        """
        C{on_request_body} is called once with the whole body and end of
        stream; the filter reads it from buffer 0.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_body get_body request; request_body buffer_status request;"
            " response_headers report_header")))
        result = self.respond(harness, method=b"POST", body=b"hello body")
        self.assertEqual(report(result), ["get_body request=hello body", "buffer_status request=10,0"])

    def test_requestBodyReplaced(self):
        """
        A body replaced in C{on_request_body} is what the upstream gets.
        """
        harness = self.harness(routeConfig(hostcalls("request_body set_body request 0 5 HELLO")))
        self.respond(harness, method=b"POST", body=b"hello body")
        self.assertEqual(harness.upstream.seenBodies[0], b"HELLO body")

    def test_requestBodySetInHeaders(self):
        """
        A body change made in on_request_headers, before the body was read,
        applies to the body once read.
        """
        harness = self.harness(routeConfig(hostcalls("request_headers set_body request 0 0 >")))
        self.respond(harness, method=b"POST", body=b"body")
        self.assertEqual(harness.upstream.seenBodies[0], b">body")

    def test_requestBodyPrependAppend(self):
        """
        C{(start 0, size 0)} prepends; a start past the end appends.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_body set_body request 0 0 <; request_body set_body request 1000 0 >")))
        self.respond(harness, method=b"POST", body=b"body")
        self.assertEqual(harness.upstream.seenBodies[0], b"<body>")

    def test_getBodyRange(self):
        """
        C{start} and C{max_size} select a slice; an empty slice is OK.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_body get_body request 2 3; request_body get_body request 100;"
            " response_headers report_header")))
        result = self.respond(harness, method=b"POST", body=b"0123456789")
        self.assertEqual(report(result), ["get_body request=234", "get_body request="])

    def test_noBodyNotFound(self):
        """
        Without a request body, buffer 0 is NOT_FOUND and C{on_request_body}
        is not called.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers get_body request; request_body log info body!; response_headers report_header")))
        result = self.respond(harness)
        self.assertEqual(report(result), ["get_body request=status:1"])

    def test_responseBodyPerChunk(self):
        """
        C{on_response_body} runs per chunk; replacing the chunk changes what
        the client gets.
        """
        harness = self.harness(routeConfig(hostcalls("response_body set_body response 0 1 X")))
        harness.upstream.chunks = (b"abc", b"def")
        result = self.respond(harness)
        self.assertEqual(result.body, b"XbcXef")

    def test_pauseBuffersResponseBody(self):
        """
        PAUSE from C{on_response_body} buffers the body: each call sees
        everything buffered so far (with the filter's earlier changes), and
        what it holds at end of stream is sent.
        """
        harness = self.harness(routeConfig(hostcalls(
            "response_body set_body response 0 0 [; response_body return pause")))
        harness.upstream.chunks = (b"one ", b"two ", b"three")
        result = self.respond(harness)
        self.assertEqual(result.body, b"[[[one two three")

    def test_continueSendsEachChunk(self):
        """
        Without PAUSE each chunk goes on as the filter left it.
        """
        harness = self.harness(routeConfig(hostcalls("response_body set_body response 0 0 [")))
        harness.upstream.chunks = (b"one ", b"two ", b"three")
        result = self.respond(harness)
        self.assertEqual(result.body, b"[one [two [three")

    def test_pauseBufferLimit(self):
        """
        Past the buffering limit the body is passed on, and the log says so.
        """
        from tests.proxywasm_harness import LogCapture
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls("response_body return pause")),
                               settings=ChainSettings(maxBufferedResponseBody=8))
        harness.upstream.chunks = (b"12345", b"67890", b"abc")
        result = self.respond(harness)
        self.assertEqual(result.body, b"1234567890abc")
        self.assertTrue(logs.containing("buffered more than 8 bytes of response body"))

    def test_pluginConfiguration(self):
        """
        Buffer 7 holds the filter entry's configuration; buffer 6 (VM
        configuration) is empty.
        """
        config = "response_headers get_body plugin_config 0 20; response_headers get_body vm_config;" \
                 " response_headers report_header"
        harness = self.harness(routeConfig(hostcalls(config)))
        result = self.respond(harness)
        self.assertEqual(report(result), ["get_body plugin_config=" + config[:20], "get_body vm_config="])

    def test_otherBuffersNotFound(self):
        """
        Buffers that do not exist here are NOT_FOUND; an unknown type is
        BAD_ARGUMENT; setting a configuration buffer is BAD_ARGUMENT.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers get_body call_response; request_headers get_body 2;"
            " request_headers bad_enum get_body; request_headers set_body plugin_config 0 0 x;"
            " response_headers report_header")))
        result = self.respond(harness)
        self.assertEqual(report(result), ["get_body call_response=status:1", "get_body 2=status:1",
                                          "bad_enum get_body=status:2", "set_body plugin_config=status:2"])


bothRuntimes(BuffersMixin, globals())
