"""Ray, or a one-line error naming the extra that installs it; joining or starting a cluster."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import ModuleType
from typing import Any

from streamer.errors import ConfigError

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'streamer[ray]'"


def ray_module() -> ModuleType:
    # every worker's log line as it comes (Ray folds similar lines of several workers into one by default;
    # read when ray is imported)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stderr.isatty():  # no colour codes in a log file
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--workers needs Ray, which is not installed", EXTRA_HINT) from None
    return ray


def connect(address: str, workers: int, log_level: str) -> None:
    """Join the cluster at ``address`` (``auto``: the one this machine belongs to), or start a local Ray for
    this run when ``address`` is empty (``ray.shutdown`` stops it again).

    A local Ray gets at least one CPU per worker (``max(cores, workers)``): the workers then always fit,
    and the operating system shares the cores, as it would between separate streamer processes."""
    ray = ray_module()
    # ray.init makes SIGTERM exit at once; the streamer's own handler (drain, then exit 0) must stay
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        _connect(ray, address, workers, log_level)
    finally:
        if main and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


def _connect(ray: Any, address: str, workers: int, log_level: str) -> None:
    quiet = {"logging_level": logging.WARNING if log_level != "debug" else logging.INFO,
             "log_to_driver": True, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **quiet)
            log.info("Ray: joined the cluster at %s (%s)", address, _resources(ray))
            return
        ray.init(num_cpus=max(os.cpu_count() or 1, workers), include_dashboard=False, **quiet)
    except ConnectionError as exc:
        raise ConfigError(f"--ray {address}: cannot reach a Ray cluster there ({first_line(exc)})",
                          "give the head's HOST:PORT (ray status prints it), auto on a cluster node, or "
                          "leave --ray out for a local Ray") from None
    except Exception as exc:  # Ray raises RuntimeError/ValueError for bad addresses and failed start-ups
        where = f"--ray {address}" if address else "starting a local Ray"
        raise ConfigError(f"{where}: {type(exc).__name__}: {first_line(exc)}",
                          "ray status shows the cluster; leave --ray out for a local Ray") from None
    log.info("Ray: started a local instance (%s)", _resources(ray))


def _resources(ray: Any) -> str:
    res = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    return f"{nodes} node{'s' if nodes != 1 else ''}, {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"


def first_line(exc: BaseException) -> str:
    """``exc``'s message up to its first line break (its type's name when it has none): one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
