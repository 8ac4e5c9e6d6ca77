"""A minimal Adam / AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019) over JAX pytrees, so no optax is needed."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class AdamState(NamedTuple):
    step: jax.Array
    mu: Any
    nu: Any


def adam_init(params: Any) -> AdamState:
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return AdamState(jnp.zeros((), jnp.int32), zeros, zeros)


def adam_update(
    params: Any,
    grads: Any,
    state: AdamState,
    lr: float,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[Any, AdamState]:
    """One bias-corrected Adam step (AdamW with ``weight_decay`` > 0, as optax.adamw); (new params, new state)."""
    step = state.step + 1
    mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
    c1 = 1 - b1 ** step.astype(jnp.float32)
    c2 = 1 - b2 ** step.astype(jnp.float32)
    new = jax.tree_util.tree_map(
        lambda p, m, v: p - lr * ((m / c1) / (jnp.sqrt(v / c2) + eps) + weight_decay * p), params, mu, nu
    )
    return new, AdamState(step, mu, nu)


def clip_by_global_norm(grads: Any, max_norm: float) -> Any:
    """Scale ``grads`` so that their global L2 norm is at most ``max_norm`` (no-op when ``max_norm`` <= 0).

    ``max_norm`` may be traced (a jit argument), so the no-op case is a ``where``, not a Python branch.
    """
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
    scale = jnp.where(max_norm > 0.0, jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30)), 1.0)
    return jax.tree_util.tree_map(lambda g: g * scale, grads)
