"""The few places edgedistill touches Ray outside training: start/attach, and parallel maps.

Local Ray is the embedded default (``ray.init()`` starts an instance); under
``ray job submit`` the driver finds the cluster through ``RAY_ADDRESS`` and attaches.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

from tqdm import tqdm

from .config import RayConfig

log = logging.getLogger("edgedistill.ray")


def ensure_ray(cfg: RayConfig) -> None:
    """Attach to ``cfg.address`` / ``RAY_ADDRESS`` or start a local instance (idempotent)."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("attaching to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        log.info("starting a local Ray instance (num_cpus=%s)", cfg.num_cpus or "all")
        # address="local": always start a new instance. Without it Ray attaches to the last
        # cluster it finds recorded under /tmp/ray (a stale one included) and then refuses num_cpus.
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=cfg.include_dashboard,
            dashboard_host="127.0.0.1",
            log_to_driver=True,
            configure_logging=False,
        )


def parallel_map(fn: Callable[..., Any], items: Sequence[Any], desc: str, num_cpus: float = 1, **kwargs) -> list[Any]:
    """``[fn(item, **kwargs) for item in items]`` as Ray tasks, results in input order.

    A progress bar advances as tasks finish. The first task error is re-raised with its
    original message (Ray wraps it in a RayTaskError that names the remote function).
    """
    import ray

    if not items:
        return []
    remote = ray.remote(num_cpus=num_cpus, max_retries=2)(fn)
    kw_ref = {k: ray.put(v) for k, v in kwargs.items()}
    refs = [remote.remote(item, **kw_ref) for item in items]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    with tqdm(total=len(refs), desc=desc, unit="task", dynamic_ncols=True) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                results[index[ref]] = ray.get(ref)
                bar.update(1)
    return results
