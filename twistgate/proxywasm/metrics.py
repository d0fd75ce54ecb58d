"""
The metrics filters define with C{proxy_define_metric} and update with
C{proxy_increment_metric} and C{proxy_record_metric}.

One L{MetricStore} per process holds every filter's metrics, keyed by owner
(the filter name) and metric name, so a recycled instance that defines its
metrics again gets the same ids and keeps the values. The Prometheus
exporter (C{twistgate.web.metrics}) reads it with L{MetricStore.metrics}.

Statuses follow Envoy, restricted to what the SDKs accept (reference §5.3):
C{increment} may return BAD_ARGUMENT, C{record} only OK or NOT_FOUND.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from twistgate.proxywasm.constants import MetricType, Status

#: Upper bounds of the histogram buckets (the last bucket, +Inf, is implied):
#: powers of two from 1 to 65536, as Kong's WasmX histograms export them.
HISTOGRAM_BOUNDS: Tuple[int, ...] = tuple(2 ** i for i in range(17))

_U64 = 1 << 64
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class MetricSnapshot:
    """
    The state of one metric at one moment.

    @ivar value: the counter's or gauge's value (0 for a histogram).
    @ivar bucketCounts: for a histogram, the number of observations per
        bucket (not cumulative): one per L{HISTOGRAM_BOUNDS} entry, then the
        +Inf bucket; empty for counters and gauges.
    @ivar sum: for a histogram, the sum of the observations.
    @ivar count: for a histogram, the number of observations.
    """

    metricId: int
    owner: str
    name: str
    metricType: MetricType
    value: int
    bucketCounts: Tuple[int, ...] = ()
    sum: int = 0
    count: int = 0


class _Metric:
    """
    The mutable state behind one metric id.
    """

    __slots__ = ("metricId", "owner", "name", "metricType", "value",
                 "bucketCounts", "sum")

    def __init__(self, metricId: int, owner: str, name: str,
                 metricType: MetricType) -> None:
        self.metricId = metricId
        self.owner = owner
        self.name = name
        self.metricType = metricType
        self.value = 0
        self.sum = 0
        self.bucketCounts: List[int] = (
            [0] * (len(HISTOGRAM_BOUNDS) + 1)
            if metricType == MetricType.HISTOGRAM else [])

    def observe(self, value: int) -> None:
        index = len(HISTOGRAM_BOUNDS)
        for i, bound in enumerate(HISTOGRAM_BOUNDS):
            if value <= bound:
                index = i
                break
        self.bucketCounts[index] += 1
        self.sum += value

    def snapshot(self) -> MetricSnapshot:
        return MetricSnapshot(
            metricId=self.metricId, owner=self.owner, name=self.name,
            metricType=self.metricType, value=self.value,
            bucketCounts=tuple(self.bucketCounts), sum=self.sum,
            count=sum(self.bucketCounts))


class MetricStore:
    """
    Every Proxy-Wasm metric of a process.

    Ids are 1, 2, 3, ... in definition order and never reused.
    """

    def __init__(self) -> None:
        self._byId: Dict[int, _Metric] = {}
        self._byName: Dict[Tuple[str, str], _Metric] = {}

    def define(self, metricType: int, name: str, owner: str) -> int:
        """
        Define a metric, or find the one C{owner} already defined under
        C{name} (whatever type it was defined with, as Kong does).

        @param metricType: a L{MetricType} value.
        @param name: the name the filter gave.
        @param owner: the filter's name.
        @return: the metric id.
        @raise ValueError: for an unknown metric type (the hostcall
            returns BAD_ARGUMENT).
        """
        existing = self._byName.get((owner, name))
        if existing is not None:
            return existing.metricId
        try:
            kind = MetricType(metricType)
        except ValueError:
            raise ValueError("unknown metric type {}".format(metricType))
        metric = _Metric(len(self._byId) + 1, owner, name, kind)
        self._byId[metric.metricId] = metric
        self._byName[(owner, name)] = metric
        return metric.metricId

    def increment(self, metricId: int, delta: int) -> int:
        """
        Add C{delta} to a counter (C{delta >= 0}) or a gauge.

        @return: C{Status.OK}, C{Status.NOT_FOUND} for an unknown id,
            C{Status.BAD_ARGUMENT} for a negative counter delta or a
            histogram.
        """
        metric = self._byId.get(metricId)
        if metric is None:
            return Status.NOT_FOUND
        if metric.metricType == MetricType.COUNTER:
            if delta < 0:
                return Status.BAD_ARGUMENT
            metric.value = (metric.value + delta) % _U64
        elif metric.metricType == MetricType.GAUGE:
            metric.value = max(_I64_MIN, min(_I64_MAX, metric.value + delta))
        else:
            return Status.BAD_ARGUMENT
        return Status.OK

    def record(self, metricId: int, value: int) -> int:
        """
        Record C{value}: a counter adds it, a gauge takes it, a histogram
        observes it. Negative values are ignored by counters and
        histograms (their values are unsigned in the ABI).

        @return: C{Status.OK} or C{Status.NOT_FOUND}.
        """
        metric = self._byId.get(metricId)
        if metric is None:
            return Status.NOT_FOUND
        if metric.metricType == MetricType.GAUGE:
            metric.value = value
        elif value >= 0:
            if metric.metricType == MetricType.COUNTER:
                metric.value = (metric.value + value) % _U64
            else:
                metric.observe(value)
        return Status.OK

    def get(self, metricId: int) -> Tuple[int, int]:
        """
        Read a counter or a gauge.

        @return: C{(Status.OK, value)} (a gauge may be negative: the
            hostcall writes it as two's complement),
            C{(Status.NOT_FOUND, 0)} or C{(Status.BAD_ARGUMENT, 0)} for a
            histogram.
        """
        metric = self._byId.get(metricId)
        if metric is None:
            return Status.NOT_FOUND, 0
        if metric.metricType == MetricType.HISTOGRAM:
            return Status.BAD_ARGUMENT, 0
        return Status.OK, metric.value

    def find(self, owner: str, name: str) -> Optional[MetricSnapshot]:
        """
        @return: the metric C{owner} defined as C{name}, or L{None}.
        """
        metric = self._byName.get((owner, name))
        return None if metric is None else metric.snapshot()

    def metrics(self, owner: Optional[str] = None) -> Iterator[MetricSnapshot]:
        """
        @param owner: only this filter's metrics, or all when L{None}.
        @return: snapshots in definition order.
        """
        for metric in list(self._byId.values()):
            if owner is None or metric.owner == owner:
                yield metric.snapshot()
