"""
The contract between the proxy resource (C{twistgate.web}) and the filter
chain runner (C{twistgate.gateway.chain}): one mutable L{Exchange} per
request, and an L{IChainRun} that runs the request's filters over it.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from zope.interface import Attribute, Interface

Headers = List[Tuple[bytes, bytes]]


@dataclass
class LocalResponse:
    """
    A response produced by the gateway or a filter instead of the upstream's.
    """

    status: int
    body: bytes = b""
    headers: Headers = field(default_factory=list)
    reason: Optional[bytes] = None


@dataclass
class Exchange:
    """
    The state of one request through the gateway, read and changed by the
    filter chain between the steps.

    Header names are lower-case bytes; repeated headers are separate pairs in
    arrival order.

    @ivar method: request method, e.g. C{b"GET"}.
    @ivar path: the request target as the upstream will receive it: path and
        query (after C{strip_path}); filters may rewrite it (C{:path}).
    @ivar originalUri: the request target as the client sent it.
    @ivar requestBody: the whole request body when it was read for filters.
    @ivar localResponse: set by a filter or the chain runner to answer the
        client without (or instead of) the upstream.
    @ivar properties: free-form per-request properties (C{kong.*}).
    """

    method: bytes
    path: bytes
    originalUri: bytes
    scheme: bytes
    authority: bytes
    requestHeaders: Headers
    clientAddress: Tuple[str, int]
    serverAddress: Tuple[str, int]
    route: object = None
    service: object = None
    requestBody: Optional[bytes] = None
    responseStatus: int = 0
    responseReason: Optional[bytes] = None
    responseHeaders: Headers = field(default_factory=list)
    upstreamAddress: Optional[Tuple[str, int]] = None
    localResponse: Optional[LocalResponse] = None
    properties: Dict[str, bytes] = field(default_factory=dict)
    startedAt: float = 0.0
    connectionId: int = 0


class IChainRun(Interface):
    """
    The filters of one request, run step by step over its L{Exchange}.

    Each step returns a Deferred that fires when every filter has handled the
    step (a filter that pauses delays it); when no filter pauses and no
    filter's instance is busy with another guest call, it has already fired
    when the step returns. After a request step the caller
    checks C{exchange.localResponse}: when set, the upstream is not contacted
    and the local response goes through the response steps instead. A filter
    failure under C{fail_closed} sets a 500 (or 503 in backoff) local
    response; it never errbacks a request step.
    """

    wantsRequestBody = Attribute(
        "True if a filter handles the request body: the caller then reads the"
        " whole body into C{exchange.requestBody} before L{requestBody}.")
    rewritesResponseBody = Attribute(
        "True if a filter may change the response body: the caller then drops"
        " the upstream's Content-Length and frames the body itself.")

    def requestHeaders():
        """
        Run C{on_request_headers}. @return: a Deferred firing with L{None}.
        """

    def requestBody():
        """
        Run C{on_request_body} once over C{exchange.requestBody}.
        @return: a Deferred firing with L{None}.
        """

    def responseHeaders():
        """
        Run C{on_response_headers} over C{exchange.responseStatus} and
        C{exchange.responseHeaders}; a filter may set
        C{exchange.localResponse} to replace the upstream response.
        @return: a Deferred firing with L{None}.
        """

    def responseBody(chunk, endOfStream):
        """
        Run C{on_response_body} over one chunk.

        @return: a Deferred firing with the bytes to send downstream now
            (possibly empty while a filter buffers the body).
        """

    def finish():
        """
        End the request: C{on_done}, C{on_log}, C{on_delete} for every
        filter context. Safe to call once at any point, also after the
        client went away.
        """
