"""Each law's formula written once: numpy, jax.numpy and torch agree, the laws nest as the
design says (BiMix inside the cross-domain law, no step axis = the mixture part), gradients
flow in torch, and the registry names every law. Fast: no fitting."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmix.laws import LAW_NAMES, formulas, get_law

T, M, P, D = 3, 4, 5, 2  # targets, domains, mixtures, draws


def params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "logk": np.log(rng.uniform(2, 4, (D, T))),
        "alpha_own": rng.uniform(0.03, 0.3, (D, T)),
        "alpha": rng.normal(0.0, 0.05, (D, T, M)),
        "eps": np.exp(rng.normal(np.log(3e-3), 1.0, (D, T))),  # the own-share law's, per target
        "eps_domain": np.exp(rng.normal(np.log(3e-3), 1.0, (D, M))),  # the cross law's
        "frac": rng.uniform(0.1, 0.9, (D, T)),
        "beta": rng.uniform(0.2, 1.0, (D, T)),
        "log_c": np.log(rng.uniform(1.0, 2.0, (D, T))),
        "A": rng.normal(0.0, 1.0, (D, T, M)),
        "r": rng.dirichlet(np.ones(M), size=P),
        "s_rel": rng.uniform(0.1, 1.0, P),
    }


OWN = np.array([0, 2, 3])  # target t measures domain OWN[t]; domain 1 has no target


def evaluate(xp, p: dict, law: str, steps: bool = True):
    s_rel = p["s_rel"] if steps else None
    frac, beta = (p["frac"], p["beta"]) if steps else (None, None)
    if law == "bimix":
        r_own = p["r"][:, OWN]
        return formulas.bimix_log_loss(
            xp, p["logk"], p["alpha_own"], p["eps"], r_own, s_rel, frac, beta
        )
    if law == "cross":
        return formulas.cross_log_loss(
            xp, p["logk"], p["alpha"], p["eps_domain"], p["r"], s_rel, frac, beta
        )
    return formulas.loglinear_log_loss(xp, p["log_c"], p["A"], p["r"], s_rel, frac, beta)


@pytest.mark.parametrize("law", ["bimix", "cross", "loglinear"])
@pytest.mark.parametrize("steps", [True, False])
def test_numpy_jax_torch_agree(law, steps):
    import jax.numpy as jnp
    import torch

    p = params()
    ref = evaluate(np, p, law, steps)
    assert ref.shape == (D, P, T) and np.isfinite(ref).all()
    import jax

    out_j = evaluate(jnp, {k: jnp.asarray(v) for k, v in p.items()}, law, steps)
    rtol = 1e-12 if jax.config.jax_enable_x64 else 1e-5  # bayesmix turns float64 on when fitting
    np.testing.assert_allclose(np.asarray(out_j), ref, rtol=rtol)
    out_t = evaluate(torch, {k: torch.as_tensor(v) for k, v in p.items()}, law, steps)
    np.testing.assert_allclose(out_t.numpy(), ref, rtol=1e-12)


def test_namespace_finds_the_array_module():
    import jax.numpy as jnp
    import torch

    assert formulas.namespace(np.ones(2)) is np
    assert formulas.namespace(jnp.ones(2)) is jnp
    assert formulas.namespace(np.ones(2), torch.ones(2)) is torch


def test_bimix_by_hand():
    """L = (r_own + eps)^-alpha K_ref (1 - f + f s^-beta), K_ref = exp(logk)."""
    p = params()
    out = evaluate(np, p, "bimix")
    r_own = p["r"][:, OWN]
    k_s = (
        1
        - p["frac"][:, None]
        + p["frac"][:, None] * p["s_rel"][None, :, None] ** (-p["beta"][:, None])
    )
    by_hand = (
        np.exp(p["logk"])[:, None]
        * (r_own[None] + p["eps"][:, None]) ** (-p["alpha_own"][:, None])
        * k_s
    )
    np.testing.assert_allclose(np.exp(out), by_hand, rtol=1e-12)


def test_step_factor_is_one_at_the_reference_step_and_decreasing():
    p = params()
    at_ref = formulas.log_step_factor(np, p["frac"], p["beta"], np.ones(P))
    np.testing.assert_allclose(at_ref, 0.0, atol=1e-15)
    s = np.array([0.1, 0.3, 1.0, 3.0])
    f = formulas.log_step_factor(np, p["frac"], p["beta"], s)
    assert (np.diff(f, axis=1) < 0).all()  # more training, lower loss
    assert formulas.log_step_factor(np, p["frac"], p["beta"], None) == 0.0
    # Without a step axis the law is its mixture part: the same as s at the reference step.
    np.testing.assert_allclose(
        evaluate(np, p | {"s_rel": np.ones(P)}, "bimix"), evaluate(np, p, "bimix", steps=False)
    )


def test_cross_law_contains_bimix():
    """alpha_tj = 0 off each target's own domain gives BiMix, whose floor is then the own
    domain's."""
    p = params()
    alpha = np.zeros((D, T, M))
    alpha[:, np.arange(T), OWN] = p["alpha_own"]
    cross = evaluate(np, p | {"alpha": alpha}, "cross")
    bimix = evaluate(np, p | {"eps": p["eps_domain"][:, OWN]}, "bimix")
    np.testing.assert_allclose(cross, bimix, rtol=1e-12)


def test_cross_law_by_hand():
    """log L_dpt = log K_dt(s) - sum_j alpha_dtj log(r_pj + eps_dj)."""
    p = params()
    log_r = np.log(p["r"][None, :, None, :] + p["eps_domain"][:, None, None, :])
    step = formulas.log_step_factor(np, p["frac"], p["beta"], p["s_rel"])
    by_hand = p["logk"][:, None, :] - (log_r * p["alpha"][:, None]).sum(-1) + step
    np.testing.assert_allclose(evaluate(np, p, "cross"), by_hand, rtol=1e-12)


def test_loglinear_by_hand():
    p = params()
    out = evaluate(np, p, "loglinear", steps=False)
    lin = np.einsum("pm,dtm->dpt", p["r"], p["A"])
    np.testing.assert_allclose(np.exp(out), np.exp(p["log_c"])[:, None] + np.exp(lin))


@pytest.mark.parametrize("law", ["bimix", "cross", "loglinear"])
def test_torch_gradients_flow_to_the_mixture(law):
    import torch

    p = {k: torch.as_tensor(v) for k, v in params().items()}
    r = p["r"].clone().requires_grad_(True)
    evaluate(torch, p | {"r": r}, law).exp().sum().backward()
    assert r.grad is not None and torch.isfinite(r.grad).all()
    if law == "bimix":
        # Only the targets' own domains matter to BiMix: domain 1 gets no gradient.
        assert (r.grad[:, 1] == 0).all() and (r.grad[:, OWN] < 0).all()


def test_law_registry():
    assert set(LAW_NAMES) == {"bimix", "bimix-cross", "loglinear", "cross-scaling", "additive"}
    for name in LAW_NAMES:
        law = get_law(name)
        assert law.name == name
        assert law.own_share == (name == "bimix")
    with pytest.raises(ValueError, match="unknown law 'nope'; choose one of"):
        get_law("nope")


def test_formulas_import_without_jax():
    """The proxy and acquisition code use the formulas on machines without the JAX stack."""
    import subprocess
    import sys

    code = (
        "import sys, bayesmix.laws.formulas as f, numpy as np; "
        "f.bimix_log_loss(np, np.zeros(1), np.ones(1), np.ones(1), np.ones((1, 1))); "
        "assert 'jax' not in sys.modules and 'numpyro' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_grouped_equicorrelated_normal_is_the_dense_normal():
    """The closed-form density of correlated noise (and of the cross law's exponents) equals
    the dense multivariate normal, block by block, for groups of unequal sizes (a run that
    measured fewer targets), and its draws have the stated correlation."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from bayesmix.laws.blocks import GroupedEquicorrelatedNormal

    rng = np.random.default_rng(3)
    group = np.array([0, 0, 0, 2, 2, 3, 3, 3, 3, 0])  # group 1 empty, sizes 4, 2, 4
    loc = rng.normal(size=len(group))
    scale = np.exp(rng.normal(0.0, 0.3, len(group)))
    rho = 0.37
    y = loc + rng.normal(size=len(group))
    noise = GroupedEquicorrelatedNormal(jnp.asarray(loc), jnp.asarray(scale), rho, group, 4)
    want = 0.0
    for g in (0, 2, 3):
        o = group == g
        corr = rho * np.ones((o.sum(), o.sum())) + (1 - rho) * np.eye(o.sum())
        cov = np.outer(scale[o], scale[o]) * corr
        want += float(dist.MultivariateNormal(loc[o], cov).log_prob(y[o]))
    assert float(noise.log_prob(jnp.asarray(y))) == pytest.approx(want, rel=1e-10)

    draws = np.asarray(noise.sample(jax.random.PRNGKey(0), (20000,)))
    z = (draws - loc) / scale
    c = np.corrcoef(z.T)
    same = group[:, None] == group[None, :]
    off = ~np.eye(len(group), dtype=bool)
    assert np.allclose(c[same & off], rho, atol=0.03)
    assert np.allclose(c[~same], 0.0, atol=0.03)
    assert np.allclose(z.std(axis=0), 1.0, atol=0.03)
