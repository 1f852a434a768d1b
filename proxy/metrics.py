"""/metrics: the figures of /stats as Prometheus metric families (pure: no I/O).

The counters come from the totals all workers add to the cache's diskcache (``proxy.stats``),
not from prometheus-client's multiprocess mode: those totals already exist for /stats, survive
restarts and include every worker, so one scrape of any worker reads the same numbers, and no
per-process files need cleaning up after a worker dies. The latency histogram is kept the same
way (per-worker bucket counts added to shared buckets). prometheus-client gives the data model
(types, histogram samples, naming); the text is written here so that integers are printed as
integers (``496423816``, not ``4.96423816e+08``).

Breaker figures are the answering worker's own (each worker has its breakers), as their names
say.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from proxy.stats import BUCKETS, Latency

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
P = "pypi_proxy_"
_CIRCUITS = ("closed", "open", "half-open")


def _counter(name: str, doc: str, value: int | float) -> CounterMetricFamily:
    return CounterMetricFamily(P + name, doc, value=value)


def _gauge(name: str, doc: str, value: int | float) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, value=value)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


def families(data: dict[str, Any], latency: Sequence[Latency]) -> list[Metric]:
    """Metric families from the /stats document and the shared latency histogram."""
    found: list[Metric] = [
        InfoMetricFamily(P + "build", "The proxy's version.", value={"version": data["version"]}),
        _counter("requests", "Client requests for index pages and files.", data["requests"]),
        _counter("not_found", "Client requests answered 404.", data["not_found"]),
        _counter("bytes_served", "Bytes of package files sent to clients.", data["bytes_served"]),
        _counter(
            "bytes_fetched", "Bytes of package files fetched upstream.", data["bytes_fetched"]
        ),
        _counter("upstream_errors", "Upstream fetches that failed.", data["upstream_errors"]),
        _counter("integrity_errors", "Files whose bytes did not match.", data["integrity_errors"]),
        _counter("entries_dropped", "Page entries left out as unusable.", data["entries_dropped"]),
        _counter(
            "pages_distrusted",
            "Upstream pages refused as not like the stored one.",
            data["pages_distrusted"],
        ),
        _counter(
            "pages_revalidated",
            "Page fetches the upstream answered 304.",
            data["pages"]["revalidated"],
        ),
        _counter(
            "pages_stale_served",
            "Page requests answered from the cache after the upstream failed.",
            data["pages"]["stale_served"],
        ),
        _counter("evicted_files", "Files evicted to keep under the cap.", data["evicted"]["files"]),
        _counter("evicted_bytes", "Bytes evicted to keep under the cap.", data["evicted"]["bytes"]),
        _gauge("uptime_seconds", "Seconds since this worker started.", data["uptime_seconds"]),
        _gauge("offline", "1 when the proxy never asks the upstream.", int(data["offline"])),
        _gauge("cache_projects", "Project pages in the cache.", data["cache"]["projects"]),
        _gauge("cache_files", "Package files in the cache.", data["cache"]["files"]),
        _gauge("cache_bytes", "Bytes of package files in the cache.", data["cache"]["bytes"]),
    ]
    hits = CounterMetricFamily(
        P + "cache_hits", "Requests answered from the cache.", labels=["kind"]
    )
    misses = CounterMetricFamily(
        P + "cache_misses", "Requests that asked the upstream.", labels=["kind"]
    )
    for kind in ("pages", "files"):
        hits.add_metric([kind], data[kind]["hits"])
        misses.add_metric([kind], data[kind]["misses"])
    found += [hits, misses]
    if data.get("hit_ratio") is not None:
        found.append(_gauge("hit_ratio", "Hits over hits and misses.", data["hit_ratio"]))
    if data.get("max_cache_size") is not None:
        found.append(_gauge("cache_max_bytes", "The cache's cap.", data["max_cache_size"]))
    found.append(_histogram(latency))
    if "upstream_health" in data:
        found += _breakers(data["upstream_health"])
    found.append(_errors_by_origin(data.get("upstream_errors_by_origin") or {}))
    if isinstance(data.get("prefetch"), dict):
        found += _prefetch(data["prefetch"])
    return found


def _histogram(latency: Sequence[Latency]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        P + "request_duration_seconds",
        "Time to answer a request, to its last byte, by route and outcome.",
        labels=["route", "outcome"],
    )
    bounds = [*(repr(b) for b in BUCKETS), "+Inf"]
    for series in latency:
        cumulative, running = [], 0
        for bound, count in zip(bounds, series.buckets, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        family.add_metric([series.route, series.outcome], cumulative, series.sum_seconds)
    return family


def _breakers(health: dict[str, Any]) -> list[Metric]:
    state = GaugeMetricFamily(
        P + "upstream_circuit",
        "1 for each origin's breaker state in the answering worker.",
        labels=["origin", "state"],
    )
    failures = GaugeMetricFamily(
        P + "upstream_consecutive_failures",
        "Consecutive failed upstream requests per origin in the answering worker.",
        labels=["origin"],
    )
    opened = CounterMetricFamily(
        P + "upstream_circuit_opened",
        "Times each origin's breaker opened in the answering worker since it started.",
        labels=["origin"],
    )
    origins = [{"origin": "index", **health}, *health.get("origins", [])]  # the index first
    for entry in origins:
        origin = str(entry["origin"])
        for name in _CIRCUITS:
            state.add_metric([origin, name], 1.0 if entry.get("circuit") == name else 0.0)
        failures.add_metric([origin], float(entry.get("consecutive_failures", 0)))
        opened.add_metric([origin], float(entry.get("times_opened", 0)))
    return [state, failures, opened]


def _errors_by_origin(errors: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        P + "upstream_origin_errors",
        "Failed upstream fetches by origin, all workers.",
        labels=["origin"],
    )
    for origin, count in sorted(errors.items()):
        family.add_metric([origin], count)
    return family


def _prefetch(prefetch: dict[str, Any]) -> list[Metric]:
    found: list[Metric] = [
        _gauge(
            "prefetch_running", "1 while a prefetch pass runs.", prefetch.get("state") == "running"
        )
    ]
    gauges = {
        "prefetch_queue": ("Projects waiting in the prefetch queue.", prefetch.get("queue")),
        "prefetch_mirror_serial": ("The serial the mirror holds.", prefetch.get("mirror_serial")),
        "prefetch_upstream_serial": (
            "The upstream's serial at the last pass.",
            prefetch.get("upstream_serial"),
        ),
        "prefetch_lag": ("Upstream serial minus the mirror's.", prefetch.get("lag")),
        "prefetch_projects": ("Projects the mirror holds.", prefetch.get("projects")),
    }
    last = prefetch.get("last_run") or {}
    gauges["prefetch_last_run_started_timestamp_seconds"] = (
        "When the last prefetch pass started.",
        last.get("started"),
    )
    gauges["prefetch_last_run_finished_timestamp_seconds"] = (
        "When the last prefetch pass finished.",
        last.get("finished"),
    )
    gauges["prefetch_last_run_seconds"] = ("How long the last pass took.", last.get("seconds"))
    if last.get("result") is not None:
        gauges["prefetch_last_run_ok"] = ("1 when the last pass succeeded.", last["result"] == "ok")
    if last.get("result") == "ok":
        gauges["prefetch_last_success_timestamp_seconds"] = (
            "When the last successful prefetch pass finished.",
            last.get("finished"),
        )
    for name, (doc, value) in gauges.items():
        number = _number(value)
        if number is not None:
            found.append(_gauge(name, doc, number))
    return found


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))  # exact: a counter of bytes reads as the number it is
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(found: Iterable[Metric]) -> str:
    """The Prometheus text format (0.0.4) for ``found``."""
    lines: list[str] = []
    for metric in found:
        name, kind = metric.name, metric.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name, kind = name + "_info", "gauge"
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
            shown = f"{sample.name}{{{labels}}}" if labels else sample.name
            lines.append(f"{shown} {_value(float(sample.value))}")
    return "\n".join(lines) + "\n"
