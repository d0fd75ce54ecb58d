"""
The access log: one line per request, written when the request ends.

Two formats: C{json} (the default), one JSON object per line shaped like
Kong's log serializer (C{request}, C{response}, C{route}, C{service},
C{latencies} in milliseconds, C{client_ip}, C{started_at}) plus the
C{filters} that ran; and C{combined}, the Apache/nginx combined format.
The destination is C{stdout}, C{stderr}, C{off} or a file path (opened for
appending).
"""

import json
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Optional, Sequence

FORMATS = ("json", "combined")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
           "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class AccessLogEntry:
    """
    What the log says about one request.

    @ivar startedAt: POSIX time the request arrived.
    @ivar uri: the request target as the client sent it.
    @ivar url: the full URL the client asked for (scheme, host, target).
    @ivar upstreamURI: the target sent upstream, if any.
    @ivar totalSeconds: arrival to the end of the response.
    @ivar upstreamSeconds: time waiting for the upstream (L{None}: not
        contacted).
    @ivar proxySeconds: the gateway's own time before the upstream (Kong's
        C{X-Kong-Proxy-Latency}).
    @ivar requestSize: the request's bytes (head and body), Kong's
        C{request.size}.
    @ivar responseSize: the response's bytes sent (head and body), Kong's
        C{response.size}.
    @ivar responseBodySize: the response body's bytes sent (the combined
        format's size).
    @ivar filters: names of the filters that ran, in chain order.
    """

    startedAt: float
    clientIP: str
    method: str
    uri: str
    status: int
    totalSeconds: float
    url: str = ""
    protocol: str = "HTTP/1.1"
    requestSize: int = 0
    responseSize: int = 0
    responseBodySize: int = 0
    upstreamSeconds: Optional[float] = None
    proxySeconds: Optional[float] = None
    upstreamURI: Optional[str] = None
    serviceId: Optional[str] = None
    serviceName: Optional[str] = None
    routeId: Optional[str] = None
    routeName: Optional[str] = None
    filters: Sequence[str] = field(default_factory=tuple)
    userAgent: Optional[str] = None
    referer: Optional[str] = None


def _milliseconds(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(round(seconds * 1000))


def formatJSON(entry: AccessLogEntry) -> str:
    """
    @return: C{entry} as one line of JSON, shaped like Kong's log
        serializer.
    """
    record = {
        "client_ip": entry.clientIP,
        "started_at": int(entry.startedAt * 1000),
        "request": {"method": entry.method, "uri": entry.uri,
                    "url": entry.url, "size": entry.requestSize},
        "response": {"status": entry.status, "size": entry.responseSize},
        "latencies": {"request": _milliseconds(entry.totalSeconds),
                      "proxy": _milliseconds(entry.upstreamSeconds),
                      "kong": _milliseconds(entry.proxySeconds)},
        "upstream_uri": entry.upstreamURI,
        "route": None if entry.routeId is None and entry.routeName is None
        else {"id": entry.routeId, "name": entry.routeName},
        "service": None if entry.serviceId is None and entry.serviceName is None
        else {"id": entry.serviceId, "name": entry.serviceName},
        "filters": list(entry.filters),
    }
    if entry.userAgent is not None:
        record["request"]["user_agent"] = entry.userAgent
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _quoted(value: Optional[str]) -> str:
    if not value:
        return '"-"'
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if " " <= c < "\x7f" else "\\x%02x" % ord(c)
                         for c in escaped) + '"'


def formatCombined(entry: AccessLogEntry) -> str:
    """
    @return: C{entry} in the combined log format (local time).
    """
    local = time.localtime(entry.startedAt)
    offset = local.tm_gmtoff // 60
    stamp = "%02d/%s/%04d:%02d:%02d:%02d %s%02d%02d" % (
        local.tm_mday, _MONTHS[local.tm_mon - 1], local.tm_year,
        local.tm_hour, local.tm_min, local.tm_sec,
        "-" if offset < 0 else "+", abs(offset) // 60, abs(offset) % 60)
    requestLine = "{} {} {}".format(entry.method, entry.uri, entry.protocol)
    return '{} - - [{}] {} {} {} {} {}'.format(
        entry.clientIP or "-", stamp, _quoted(requestLine), entry.status,
        entry.responseBodySize or "-", _quoted(entry.referer),
        _quoted(entry.userAgent))


class AccessLog:
    """
    Writes one line per request to a text stream.
    """

    def __init__(self, output: Optional[IO[str]], format: str = "json",
                 ownsOutput: bool = False) -> None:
        """
        @param output: where lines go; L{None} logs nothing.
        @param format: C{"json"} or C{"combined"}.
        @param ownsOutput: close C{output} in L{close}.
        @raise ValueError: for an unknown format.
        """
        if format not in FORMATS:
            raise ValueError("access log format: {!r} is not one of {}".format(
                format, ", ".join(FORMATS)))
        self.format = format
        self._output = output
        self._ownsOutput = ownsOutput
        self._formatter = formatJSON if format == "json" else formatCombined

    @classmethod
    def open(cls, destination: str, format: str = "json") -> "AccessLog":
        """
        @param destination: C{"stdout"}, C{"stderr"}, C{"off"} or a file
            path (appended to, line-buffered).
        @raise ValueError: one line naming the destination when the file
            cannot be opened, or for an unknown format.
        """
        if destination in ("off", ""):
            return cls(None, format)
        if destination == "stdout":
            return cls(sys.stdout, format)
        if destination == "stderr":
            return cls(sys.stderr, format)
        try:
            output = open(destination, "a", buffering=1, encoding="utf-8")
        except OSError as e:
            raise ValueError("access log {}: cannot be opened: {}".format(
                destination, e.strerror or e))
        try:
            return cls(output, format, ownsOutput=True)
        except ValueError:
            output.close()
            raise

    @property
    def enabled(self) -> bool:
        """
        Whether lines are written (false for C{off}, or once closed).
        """
        return self._output is not None

    def log(self, entry: AccessLogEntry) -> None:
        """
        Write one line for C{entry}.
        """
        if self._output is None:
            return
        self._output.write(self._formatter(entry) + "\n")

    def close(self) -> None:
        """
        Close the file this log opened.
        """
        if self._ownsOutput and self._output is not None:
            self._output.close()
        self._output = None
