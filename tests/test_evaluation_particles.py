"""evaluation.particles: the one chunked generator of the evaluation's log-weights, as ``bounds.Particles``."""

import torch

from elbox import VAE, VAEConfig
from elbox.bounds import Particles
from elbox.evaluation.particles import BLOCK, blocks, decoder_log_lik, particles, stream_seeds


def _vae_and_data(family: str = "diagonal"):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(data_dim=6, latent_dim=2, hidden=(8,), likelihood="bernoulli", family=family)).eval()
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    return vae, x


def _log_lik(vae):
    return lambda z, x: decoder_log_lik(vae, z, x)


def test_chunks_are_particles_whose_log_weights_are_the_joint_over_q():
    vae, x = _vae_and_data()
    q, prior = vae.encode(x), vae.prior()
    seeds = stream_seeds(0, 0, 0, blocks(250))
    with torch.no_grad():
        chunks = list(particles(q, prior, x, 250, _log_lik(vae), chunk=200, seeds=seeds))
    assert all(isinstance(p, Particles) for p in chunks)
    assert [p.z.shape[0] for p in chunks] == [200, 50]  # whole blocks of BLOCK, the last one short
    for p in chunks:
        expected = vae.decode(p.z).log_prob(x) + prior.log_prob(p.z) - q.log_prob(p.z)
        assert p.log_w.shape == (p.z.shape[0], 3)
        assert torch.allclose(p.log_w, expected, atol=1e-5)


def test_the_chunk_size_never_changes_the_draws():
    vae, x = _vae_and_data()
    q, prior = vae.encode(x), vae.prior()
    seeds = stream_seeds(3, 0, 0, blocks(350))
    with torch.no_grad():
        runs = [torch.cat([p.log_w for p in particles(q, prior, x, 350, _log_lik(vae), chunk=c, seeds=seeds)])
                for c in (BLOCK, 2 * BLOCK, None)]  # fmt: skip
    assert runs[0].shape == (350, 3)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_block_j_is_drawn_under_its_own_seed():
    vae, x = _vae_and_data()
    q, prior = vae.encode(x), vae.prior()
    seeds = stream_seeds(0, 0, 0, 2)
    with torch.no_grad():
        z = torch.cat([p.z for p in particles(q, prior, x, 2 * BLOCK, _log_lik(vae), seeds=seeds)])
        torch.manual_seed(seeds[1])
        second = q.rsample((BLOCK,))
    assert torch.equal(z[BLOCK:], second)


def test_unseeded_draws_come_at_once_and_evaluate_log_q_with_the_stopped_q():
    """The gap fit's particles: q's parameters get gradients only through z (sticking the landing)."""
    vae, x = _vae_and_data()
    family = vae.encoder
    raw = family.encoder(x).detach().requires_grad_(True)
    q = family.distribution(raw)
    (p,) = particles(q, vae.prior(), x, 7, _log_lik(vae), q_stopped=family.distribution(raw.detach()))
    assert p.z.shape == (7, 3, 2) and p.q_stopped is not None
    (through_log_q,) = torch.autograd.grad(p.log_q.sum(), raw, retain_graph=True)
    direct = torch.autograd.grad(q.log_prob(p.z.detach()).sum(), raw, retain_graph=True)[0]
    assert direct.abs().sum() > 0  # log q with live parameters would pass a gradient here ...
    # ... the stopped one passes only the path through z: d log q / dz * dz / draw
    z_path = torch.autograd.grad(family.distribution(raw.detach()).log_prob(p.z).sum(), raw)[0]
    assert torch.equal(through_log_q, z_path)


def test_a_flow_gives_log_q_along_the_draw_and_no_stopped_q():
    vae, x = _vae_and_data("realnvp:2")
    q, prior = vae.encode(x), vae.prior()
    with torch.no_grad():
        (p,) = particles(q, prior, x, 5, _log_lik(vae), q_stopped=q)
        assert p.q_stopped is None and p.log_q_drawn is not None
        assert torch.allclose(p.log_q, q.log_prob(p.z), atol=1e-4)
