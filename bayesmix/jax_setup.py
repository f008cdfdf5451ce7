"""JAX settings every model needs, applied on import (before any JAX computation).

- float64: the potentials of these laws are sums over thousands of observations whose
  curvature spans many orders of magnitude; float32 gradients stall L-BFGS and NUTS.
- one XLA host device per CPU chain, so NUTS chains run in parallel on CPU threads (read when
  JAX initialises its backend, at the first computation).
"""

from __future__ import annotations

import os

CHAIN_DEVICES = max(4, os.cpu_count() or 1)

_FLAG = "--xla_force_host_platform_device_count"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}={CHAIN_DEVICES}".strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
