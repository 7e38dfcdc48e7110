"""One real Ray cluster for every Ray test of the session: a head and a second node (two raylets on this
machine, ``ray.cluster_utils.Cluster``), on loopback. Starting Ray takes seconds, so it is started once; each
test runs ``streamer --workers N --ray ADDRESS`` as a user would, a driver process of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Ray binds the node's own address unless told that this is a one-machine cluster: then it keeps to 127.0.0.1
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_DEDUP_LOGS": "0"}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """The address (HOST:PORT) of a running two-node Ray cluster, for ``--ray``."""
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        pytest.fail("the scale-out tests need Ray: pip install -e '.[ray]' (the README's command 2 does)")
    saved = {key: os.environ.get(key) for key in LOOPBACK_ENV}
    os.environ.update(LOOPBACK_ENV)
    store = 128 << 20  # the workers pass Ray only small objects; a small store fits a CI container's /dev/shm
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "object_store_memory": store})
    try:
        cluster.add_node(num_cpus=2, object_store_memory=store)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
