"""Past one GPU and one host: a driver that shards the sources over Ray workers, each running the ordinary
pipeline, and merges what they produce (docs/scale-out.md).

Data flow, one direction::

    driver: shard sources ─plan─▶ worker k (a Ray actor: Pipeline over its sources)
    worker k ─PUB (connect)─▶ driver's XSUB ═ forwarder ═ XPUB on --bind ─▶ subscribers   (lossy, as ever)
    worker k ─PUSH (connect)─▶ driver's PULL ─▶ collector: each (source, frame) once ─▶ --output JSONL

- :mod:`.shard`: which worker runs which source (the rule), source names unique over the whole run.
- :mod:`.channel`: the lossless channel (worker sink → driver collector), the resume points it keeps.
- :mod:`.forward`: the XSUB → XPUB forwarder the subscribers connect to, plus the driver's own ``stats``.
- :mod:`.worker`: what runs inside a Ray actor; :mod:`.ray_env`: Ray itself, or the extra to install.
- :mod:`.driver`: start, supervise and restart the workers, drain them on a signal, summarise.
- :mod:`.control`: the driver's HTTP control plane (/metrics of every worker, /sources over all of them).
"""
