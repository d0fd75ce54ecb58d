"""
Prometheus metrics: the gateway's own (requests, latencies, filter phases,
traps, recycles, instance memory) and every metric filters define with
C{proxy_define_metric}, served in the Prometheus text format by
L{MetricsResource} (C{GET /metrics} on the admin listener).

Filter metrics are named as Kong 3.9 names them: C{pw_<filter>_<name>}, with
labels cut out of the name by the filter's C{metrics.label_patterns}
(C{<filter>.meta.json}). Each pattern is searched in C{pw.<filter>.<name>};
the value of the label is the pattern's second capture group when it has
two (Kong's form, C{"(_s_id=([0-9a-z%-]+))"}: the first capture is the
labelled part), else its first; the metric's name ends where the first
matching pattern starts. Patterns are regular expressions; Lua's C{%}
escapes (C{%d}, C{%a}, C{%w}, C{%-}, ...) are understood too, as Kong
evaluates them with Lua's C{string.find}. As C{prometheus_client} has it,
counters are exposed with a C{_total} suffix.
"""

import math
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import (
    Dict, FrozenSet, Iterable, Mapping, Optional, Sequence, Set, Tuple)

from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.exposition import generate_latest
from twisted.logger import Logger
from twisted.web.resource import Resource
from zope.interface import implementer

from twistgate.config.filters import pcreToPython
from twistgate.proxywasm.constants import MetricType
from twistgate.proxywasm.metrics import HISTOGRAM_BOUNDS, MetricStore
from twistgate.proxywasm.vm import IFilterObserver

#: Buckets (seconds) of the request and upstream latency histograms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets (seconds) of the per-filter phase histogram.
PHASE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

#: The media type of what L{generate_latest} writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The trap kind L{GatewayMetrics.filterTrapped} counts as a CPU-deadline hit.
TRAP_KIND_DEADLINE = "deadline"

_KINDS = {MetricType.COUNTER: "counter", MetricType.GAUGE: "gauge",
          MetricType.HISTOGRAM: "histogram"}
_PHASE_PREFIX = re.compile(r"^(proxy_)?(on_)?")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_INVALID_METRIC_CHARACTERS = re.compile(r"[^a-zA-Z0-9_:]")
_LUA_CLASSES = {
    "a": "A-Za-z", "d": "0-9", "l": "a-z", "s": r"\s", "u": "A-Z",
    "w": "A-Za-z0-9", "x": "0-9A-Fa-f", "p": r"!-/:-@\[-`{-~", "c": r"\x00-\x1f\x7f",
}


def luaEscapesToRegex(pattern: str) -> str:
    """
    Translate Lua pattern escapes to regular expression syntax: C{%d} to
    C{[0-9]} (inside a set, C{0-9}), C{%.} to C{\\.}, and so on; other
    characters are kept.

    @param pattern: a label pattern as Kong's documentation writes them.
    @return: a regular expression.
    """
    out = []
    inSet = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "%" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            i += 2
            lowered = escaped.lower()
            if lowered in _LUA_CLASSES:
                members = _LUA_CLASSES[lowered]
                if escaped.isupper():
                    out.append("[^" + members + "]")
                elif inSet:
                    out.append(members)
                else:
                    out.append("[" + members + "]")
            elif escaped.isalnum():
                out.append("%" + escaped)
            else:
                out.append(re.escape(escaped))
            continue
        if char == "\\" and i + 1 < len(pattern):
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if char == "[" and not inSet:
            inSet = True
        elif char == "]" and inSet and not out[-1].endswith("["):
            inSet = False
        out.append(char)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class LabelPattern:
    """
    One entry of a filter's C{metrics.label_patterns}.
    """

    label: str
    regex: "re.Pattern[str]"

    def valueIn(self, match: "re.Match[str]") -> Optional[str]:
        """
        @return: the label's value in C{match}: the group named after the
            label, else the second group, else the first.
        """
        if self.label in self.regex.groupindex:
            return match.group(self.label)
        if self.regex.groups >= 2:
            return match.group(2)
        if self.regex.groups == 1:
            return match.group(1)
        return None


def compileLabelPatterns(pairs: Iterable[Tuple[str, str]],
                         where: str = "metrics.label_patterns"
                         ) -> Tuple[LabelPattern, ...]:
    """
    Compile C{(label, pattern)} pairs (L{twistgate.config.filters.FilterFile}
    C{.labelPatterns}).

    @param where: where the pairs come from, for error messages.
    @raise ValueError: one line naming the entry, for an invalid label name
        or pattern.
    """
    compiled = []
    for index, (label, pattern) in enumerate(pairs):
        if not _LABEL_NAME.match(label):
            raise ValueError("{}[{}].label: {!r} is not a Prometheus label"
                             " name".format(where, index, label))
        try:
            regex = re.compile(pcreToPython(luaEscapesToRegex(pattern)))
        except re.error as e:
            raise ValueError("{}[{}].pattern: invalid pattern {!r}: {}".format(
                where, index, pattern, e))
        if regex.groups == 0:
            raise ValueError("{}[{}].pattern: {!r} has no capture group for"
                             " the value".format(where, index, pattern))
        compiled.append(LabelPattern(label, regex))
    return tuple(compiled)


def prometheusName(name: str) -> str:
    """
    @return: C{name} with every character Prometheus does not allow in a
        metric name replaced by C{_}.
    """
    name = _INVALID_METRIC_CHARACTERS.sub("_", name)
    return name if not name[:1].isdigit() else "_" + name


def splitFilterMetricName(filterName: str, metricName: str,
                          patterns: Sequence[LabelPattern]
                          ) -> Tuple[str, Dict[str, str]]:
    """
    Name and label a filter's metric as Kong does.

    @return: the Prometheus metric name (C{pw_<filter>_<name>} without the
        labelled parts) and the labels.
    """
    key = "pw.{}.{}".format(filterName, metricName)
    labels = {}
    end = len(key)
    for pattern in patterns:
        match = pattern.regex.search(key)
        if match is None:
            continue
        value = pattern.valueIn(match)
        if value is None:
            continue
        labels[pattern.label] = value
        end = min(end, match.start())
    return prometheusName(key[:end].replace(".", "_")), labels


class _Histogram:
    """
    Bucket counts (not cumulative), sum and count of one labelled series.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


def _addHistogramSamples(metric: Metric, labels: Dict[str, str],
                         bounds: Sequence[float], counts: Sequence[int],
                         total: float) -> None:
    cumulative = 0
    for bound, count in zip(list(bounds) + [math.inf], counts):
        cumulative += count
        metric.add_sample(metric.name + "_bucket",
                          dict(labels, le=_formatBound(bound)), cumulative)
    metric.add_sample(metric.name + "_sum", labels, total)
    metric.add_sample(metric.name + "_count", labels, cumulative)


def _formatBound(bound: float) -> str:
    if bound == math.inf:
        return "+Inf"
    if float(bound).is_integer():
        return str(int(bound))
    return repr(float(bound))


@implementer(IFilterObserver)
class GatewayMetrics:
    """
    The gateway's metrics and the Prometheus collector over them and over
    the filters' L{MetricStore}.

    The proxy calls L{observeRequest}; the filters' VMs call the
    L{IFilterObserver} methods; L{MetricsResource} renders L{registry}.

    @ivar store: the filters' metrics.
    @ivar registry: a L{CollectorRegistry} with this object as its only
        collector.
    """

    log = Logger()

    def __init__(self, store: MetricStore,
                 labelPatterns: Optional[Mapping[str, Iterable[Tuple[str, str]]]] = None
                 ) -> None:
        """
        @param store: the filters' metrics.
        @param labelPatterns: C{(label, pattern)} pairs per filter name (the
            C{labelPatterns} of each L{twistgate.config.filters.FilterFile}).
        @raise ValueError: for an invalid pattern (one line).
        """
        self.store = store
        self._patterns: Dict[str, Tuple[LabelPattern, ...]] = {}
        self.setLabelPatterns(labelPatterns or {})
        self._requests: Dict[Tuple[str, str, str], int] = {}
        self._total: Dict[Tuple[str, str], _Histogram] = {}
        self._upstream: Dict[Tuple[str, str], _Histogram] = {}
        self._phases: Dict[Tuple[str, str], _Histogram] = {}
        self._phaseSeries: Dict[Tuple[str, str], _Histogram] = {}
        self._traps: Dict[Tuple[str, str], int] = {}
        self._deadlines: Dict[str, int] = {}
        self._recycles: Dict[str, int] = {}
        self._memory: Dict[str, int] = {}
        self._conflicts: Set[Tuple[str, str]] = set()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def setLabelPatterns(self, labelPatterns: Mapping[str, Iterable[Tuple[str, str]]]) -> None:
        """
        Replace the label patterns (after a reload found other filters).

        @raise ValueError: for an invalid pattern, naming the filter.
        """
        self._patterns = {
            name: compileLabelPatterns(
                pairs, "{}.meta.json: metrics.label_patterns".format(name))
            for name, pairs in labelPatterns.items()}

    def observeRequest(self, service: Optional[str], route: Optional[str],
                       status: int, totalSeconds: float,
                       upstreamSeconds: Optional[float] = None) -> None:
        """
        Count one finished request.

        @param service: the service's name (or id), L{None} when no route
            matched.
        @param route: the route's name (or id), L{None} when none matched.
        @param status: the status sent to the client.
        @param totalSeconds: time from the request's arrival to its end.
        @param upstreamSeconds: time waiting for the upstream, L{None} when
            it was not contacted.
        """
        names = (service or "", route or "")
        key = names + (str(status),)
        self._requests[key] = self._requests.get(key, 0) + 1
        self._series(self._total, names, LATENCY_BUCKETS).observe(totalSeconds)
        if upstreamSeconds is not None:
            self._series(self._upstream, names, LATENCY_BUCKETS).observe(
                upstreamSeconds)

    def observeFilterPhase(self, filter: str, phase: str, seconds: float) -> None:
        """
        Time one call of a filter in one phase.

        @param phase: the callback's name; C{"proxy_on_request_headers"},
            C{"on_request_headers"} and C{"request_headers"} are all
            labelled C{request_headers}.
        """
        try:
            series = self._phaseSeries[filter, phase]
        except KeyError:
            series = self._phaseSeries[filter, phase] = self._series(
                self._phases, (filter, _PHASE_PREFIX.sub("", phase)), PHASE_BUCKETS)
        series.observe(seconds)

    def filterTrapped(self, filter: str, kind: str = "trap") -> None:
        """
        Count a trap of C{filter}; C{kind} says why (C{"trap"}, C{"panic"},
        L{TRAP_KIND_DEADLINE} for a CPU-deadline hit, C{"memory"}, ...).
        """
        self._traps[(filter, kind)] = self._traps.get((filter, kind), 0) + 1
        if kind == TRAP_KIND_DEADLINE:
            self._deadlines[filter] = self._deadlines.get(filter, 0) + 1

    def filterRecycled(self, filter: str) -> None:
        """
        Count the replacement of one of C{filter}'s instances.
        """
        self._recycles[filter] = self._recycles.get(filter, 0) + 1

    def setInstanceMemory(self, filter: str, size: int) -> None:
        """
        Record the linear memory size (bytes) of C{filter}'s instance.
        """
        self._memory[filter] = size

    @staticmethod
    def _series(table: Dict[Tuple[str, str], _Histogram],
                key: Tuple[str, str], bounds: Tuple[float, ...]) -> _Histogram:
        series = table.get(key)
        if series is None:
            series = table[key] = _Histogram(bounds)
        return series

    def collect(self) -> Iterable[Metric]:
        """
        Build every metric family (the C{prometheus_client} collector API).
        """
        requests = Metric("twistgate_http_requests",
                          "Requests by service, route and status", "counter")
        for (service, route, code), count in sorted(self._requests.items()):
            requests.add_sample("twistgate_http_requests_total",
                                {"service": service, "route": route,
                                 "code": code}, count)
        yield requests
        for name, documentation, table, labelNames in (
                ("twistgate_request_latency_seconds",
                 "Time from request arrival to the end of the response",
                 self._total, ("service", "route")),
                ("twistgate_upstream_latency_seconds",
                 "Time waiting for the upstream", self._upstream,
                 ("service", "route")),
                ("twistgate_filter_phase_seconds",
                 "Time in one filter phase", self._phases,
                 ("filter", "phase"))):
            histogram = Metric(name, documentation, "histogram")
            for key, series in sorted(table.items()):
                _addHistogramSamples(histogram, dict(zip(labelNames, key)),
                                     series.bounds, series.counts, series.sum)
            yield histogram
        yield self._simple("twistgate_filter_traps", "Filter traps by kind",
                           "counter", self._traps, ("filter", "kind"))
        yield self._simple("twistgate_filter_cpu_deadline_hits",
                           "Filter calls stopped at the CPU deadline",
                           "counter", self._deadlines, ("filter",))
        yield self._simple("twistgate_filter_recycles",
                           "Filter instances replaced", "counter",
                           self._recycles, ("filter",))
        yield self._simple("twistgate_filter_instance_memory_bytes",
                           "Linear memory of a filter's instance", "gauge",
                           self._memory, ("filter",))
        yield from self._filterMetrics()

    @staticmethod
    def _simple(name: str, documentation: str, kind: str,
                table: Mapping, labelNames: Tuple[str, ...]) -> Metric:
        metric = Metric(name, documentation, kind)
        sampleName = name + "_total" if kind == "counter" else name
        for key, value in sorted(table.items()):
            key = key if isinstance(key, tuple) else (key,)
            metric.add_sample(sampleName, dict(zip(labelNames, key)), value)
        return metric

    def _filterMetrics(self) -> Iterable[Metric]:
        """
        One family per Prometheus name; metrics whose names give the same
        name and labels are added together (a scrape with a repeated series
        would be rejected whole).
        """
        kinds: Dict[str, str] = {}
        documentation: Dict[str, str] = {}
        series: Dict[str, Dict[FrozenSet[Tuple[str, str]], list]] = {}
        for snapshot in self.store.metrics():
            name, labels = splitFilterMetricName(
                snapshot.owner, snapshot.name,
                self._patterns.get(snapshot.owner, ()))
            kind = _KINDS[snapshot.metricType]
            if name.endswith("_total") and kind == "counter":
                name = name[:-len("_total")]
            if kinds.setdefault(name, kind) != kind:
                if (snapshot.owner, snapshot.name) not in self._conflicts:
                    self._conflicts.add((snapshot.owner, snapshot.name))
                    self.log.warn(
                        "metrics: {filter} metric {metric!r} is a {kind} but"
                        " {name} is a {other}; not exported",
                        filter=snapshot.owner, metric=snapshot.name,
                        kind=kind, name=name, other=kinds[name])
                continue
            documentation.setdefault(name, "Metric {} of filter {}".format(
                snapshot.name, snapshot.owner))
            key = frozenset(labels.items())
            values = [snapshot.value, snapshot.sum] + list(snapshot.bucketCounts)
            current = series.setdefault(name, {}).get(key)
            if current is None:
                series[name][key] = values
            else:
                series[name][key] = [a + b for a, b in zip(current, values)]
        families = []
        for name in sorted(series):
            family = Metric(name, documentation[name], kinds[name])
            for key, values in series[name].items():
                labels = dict(key)
                if family.type == "histogram":
                    _addHistogramSamples(family, labels, HISTOGRAM_BOUNDS,
                                         values[2:], values[1])
                elif family.type == "counter":
                    family.add_sample(name + "_total", labels, values[0])
                else:
                    family.add_sample(name, labels, values[0])
            families.append(family)
        return families

    def render(self) -> bytes:
        """
        @return: every metric in the Prometheus text format.
        """
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """
    C{GET /metrics}: L{GatewayMetrics} in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, metrics: GatewayMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        return self.metrics.render()

    render_HEAD = render_GET
