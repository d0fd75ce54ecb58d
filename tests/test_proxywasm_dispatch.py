"""
C{proxy_http_call} through the C{hostcalls} test filter on both runtimes:
calls through treq (in-memory agent, real twisted.web server), responses on
the root context with map 6 and buffer 4, failures with
C{:dispatch_status}, pause and resume (Kong and Envoy styles), calls from
C{on_tick}.
"""

from twisted.internet.defer import fail
from twisted.internet.error import ConnectionRefusedError
from treq.testing import RequestTraversalAgent
from zope.interface import implementer
from twisted.web.iweb import IAgent

from twistgate.gateway.chain import ChainSettings

from tests.proxywasm_harness import (
    CallTarget,
    LogCapture,
    RuntimeMixin,
    bothRuntimes,
    hostcalls,
    report,
    routeConfig,
)

CALLBACK = ("http_call_response get_header call_response :status;"
            " http_call_response get_body call_response;"
            " http_call_response get_header call_response :dispatch_status;"
            " http_call_response add_header request x-call-body ok;")


@implementer(IAgent)
class RefusingAgent:
    """
    An agent whose every connection is refused.
    """

    def request(self, method, uri, headers=None, bodyProducer=None):
        return fail(ConnectionRefusedError("refused"))


class DispatchMixin(RuntimeMixin):
    """
    HTTP calls from filters.
    """

    def setUp(self):
        super().setUp()
        self.target = CallTarget()
        self.agent = RequestTraversalAgent(self.target)

    def harness(self, configText, **kwargs):
        kwargs.setdefault("agent", self.agent)
        return super().harness(configText, **kwargs)

    def test_callPauseAutoResume(self):
        """
        A call made in on_request_headers reaches the target before the
        upstream sees the request; the response arrives on the root context
        with C{:status} in map 6 and the body in buffer 4; the request then
        goes on without C{proxy_continue_stream} (Kong style), with the
        header the callback added.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /echo/1; request_headers return pause;"
            + CALLBACK + " http_call_response report_log; response_headers root_report;"
            " response_headers report_header")))
        pending = harness.request()
        self.agent.flush()
        result = self.successResultOf(pending)
        self.assertEqual(self.target.requests[0][:2], (b"GET", b"/echo/1"))
        self.assertEqual(dict(self.target.requests[0][2])[b"host"], b"call.test")
        self.assertEqual(result.status, 200)
        self.assertEqual(dict(harness.upstream.seenHeaders[0])[b"x-call-body"], b"ok")
        items = report(result)
        self.assertEqual(items[0], "dispatch call.test=1")
        self.assertRegex(items[2], r"^on_http_call_response=1,\d+,16,0$")
        self.assertEqual(items[3:6], ["get_header call_response=200", "get_body call_response=echo GET /echo/1",
                                      "get_header call_response=status:1"])

    def test_neverReentered(self):
        """
        A response that arrives while the guest is still running (the
        in-memory agent answers at once) is delivered after the running
        call returned, never inside it.
        """
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /echo; request_headers log info order:after-dispatch;"
            " request_headers return pause; http_call_response log info order:callback")))
        self.successResultOf(harness.request())
        order = [m.split("order:")[1] for m in logs.messages("twistgate.filter") if "order:" in m]
        self.assertEqual(order, ["after-dispatch", "callback"])

    def test_upstreamWaitsForCall(self):
        """
        While the call is pending the request is paused.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /slow; request_headers return pause")))
        pending = harness.request()
        self.assertNoResult(pending)
        self.assertEqual(harness.upstream.seen, [])

    def test_envoyStyleResume(self):
        """
        A filter may resume itself with C{proxy_continue_stream} in the
        callback (Envoy style); the request continues once.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /echo; request_headers return pause;"
            " http_call_response resume")))
        pending = harness.request()
        self.agent.flush()
        self.assertEqual(self.successResultOf(pending).status, 200)
        self.assertEqual(len(harness.upstream.seen), 1)

    def test_severalInFlight(self):
        """
        Several calls may be in flight; the request resumes after the last
        one; tokens differ.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /echo/a; request_headers dispatch call.test GET /echo/b;"
            " request_headers return pause; response_headers root_report; response_headers report_header")))
        pending = harness.request()
        self.agent.flush()
        items = report(self.successResultOf(pending))
        self.assertEqual(items[:2], ["dispatch call.test=1", "dispatch call.test=2"])
        self.assertEqual(sorted(i.split("=")[1].split(",")[0] for i in items if i.startswith("on_http")),
                         ["1", "2"])
        self.assertEqual(len(self.target.requests), 2)

    def test_postWithBodyAndHeaders(self):
        """
        The call's method, body and extra headers are sent.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test POST /echo 1000 call.test payload x-extra=1;"
            " request_headers return pause")))
        pending = harness.request()
        self.agent.flush()
        self.successResultOf(pending)
        method, uri, headers, body = self.target.requests[0]
        self.assertEqual((method, body), (b"POST", b"payload"))
        self.assertEqual(dict(headers)[b"x-extra"], b"1")

    def test_missingPseudoHeaders(self):
        """
        Without C{:method}, C{:path} or C{:authority} the call is refused
        with BAD_ARGUMENT and nothing is sent.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test - /echo; request_headers dispatch call.test GET -;"
            " request_headers dispatch call.test GET /echo 1000 -; response_headers report_header")))
        result = self.respond(harness)
        self.assertEqual(report(result), ["dispatch call.test=status:2"] * 3)
        self.assertEqual(self.target.requests, [])

    def test_badUpstream(self):
        """
        An upstream that is neither a service name nor host[:port] is
        BAD_ARGUMENT.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch bad\\shost GET /echo; request_headers dispatch h:99999 GET /echo;"
            " response_headers report_header")))
        self.assertEqual(report(self.respond(harness)), ["dispatch bad host=status:2", "dispatch h:99999=status:2"])

    def test_serviceNameTarget(self):
        """
        A configured service name is a valid target: the call goes to its
        host and port.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch svc GET /echo/svc 1000 svc.test; request_headers return pause")))
        pending = harness.request()
        self.agent.flush()
        self.successResultOf(pending)
        self.assertEqual(self.target.requests[0][1], b"/echo/svc")

    def test_refused(self):
        """
        A refused connection still calls back, with no headers and
        C{:dispatch_status: broken connection}; the request completes.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /echo; request_headers return pause;" + CALLBACK +
            " response_headers root_report; response_headers report_header")), agent=RefusingAgent())
        result = self.respond(harness)
        self.assertEqual(result.status, 200)
        self.assertEqual(report(result)[2:6], [
            "on_http_call_response=1,0,0,0", "get_header call_response=status:1",
            "get_body call_response=status:1", "get_header call_response=broken connection"])

    def test_timeout(self):
        """
        A call that outlives its timeout calls back with
        C{:dispatch_status: timeout} after that time.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /slow 50; request_headers return pause;" + CALLBACK +
            " response_headers root_report; response_headers report_header")))
        pending = harness.request()
        self.agent.flush()
        harness.clock.advance(0.049)
        self.assertNoResult(pending)
        harness.clock.advance(0.002)
        self.agent.flush()
        result = self.successResultOf(pending)
        self.assertEqual(report(result)[2:6], [
            "on_http_call_response=1,0,0,0", "get_header call_response=status:1",
            "get_body call_response=status:1", "get_header call_response=timeout"])

    def test_pauseWithoutResumeIsBounded(self):
        """
        PAUSE with no pending call and no resume fails the request after the
        pause timeout instead of hanging, and says why.
        """
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls("request_headers return pause")),
                               settings=ChainSettings(pauseTimeout=3))
        pending = harness.request()
        harness.clock.advance(2.9)
        self.assertNoResult(pending)
        harness.clock.advance(0.2)
        result = self.successResultOf(pending)
        self.assertEqual(result.status, 500)
        self.assertEqual(harness.upstream.seen, [])
        self.assertTrue(logs.containing("did not resume within 3 s"))

    def test_fromTick(self):
        """
        A call made in on_tick is answered on the root context.
        """
        harness = self.harness(routeConfig(hostcalls(
            "configure set_tick_period 100; tick dispatch call.test GET /echo/tick;"
            " http_call_response get_body call_response; response_headers root_report;"
            " response_headers report_header")))
        harness.clock.advance(0.1)
        self.agent.flush()
        items = report(self.respond(harness))
        self.assertIn("get_body call_response=echo GET /echo/tick", items)
        self.assertEqual(self.target.requests[0][1], b"/echo/tick")

    def test_trapInCallback(self):
        """
        A trap in on_http_call_response fails the paused request with 500
        (fail_closed) and the log names the phase.
        """
        logs = LogCapture(self)
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /echo; request_headers return pause;"
            " http_call_response trap callback-boom")))
        pending = harness.request()
        self.agent.flush()
        self.assertEqual(self.successResultOf(pending).status, 500)
        self.assertEqual(harness.upstream.seen, [])
        self.assertTrue(logs.containing("trapped in on_http_call_response"))
        self.assertEqual(self.respond(harness).status, 500)
        self.assertEqual(harness.vm().generation, 2)

    def test_clientGoneCancelsCall(self):
        """
        When the request ends while a call is pending, the callback never
        runs.
        """
        harness = self.harness(routeConfig(hostcalls(
            "request_headers dispatch call.test GET /slow 50; request_headers return pause;"
            " http_call_response log info late-callback")))
        logs = LogCapture(self)
        exchange, _ = harness.exchange()
        run = harness.plan.chainFor(exchange)
        run.requestHeaders()
        run.finish()
        harness.clock.advance(1)
        self.assertEqual(logs.containing("late-callback"), [])


bothRuntimes(DispatchMixin, globals())
