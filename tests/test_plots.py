"""plots: every figure renders to a PNG; helpers pick and arrange images as stated."""

import numpy as np
import pytest
import torch
from figures import saves_as_png

from elbox import VAE, VAEConfig, plots
from elbox.plots import model as plots_model


def test_spread_takes_evenly_spaced_rows_including_both_ends():
    x = torch.arange(10.0)[:, None]
    assert plots.spread(x, 4).flatten().tolist() == [0.0, 3.0, 6.0, 9.0]
    assert plots.spread(x, 50).shape == (10, 1)


def test_tile_puts_images_in_a_padded_grid():
    images = np.zeros((2, 3, 4, 5))
    grid = plots.tile(images, pad=1)
    assert grid.shape == (2 * 5 - 1, 3 * 6 - 1)
    assert grid[4, 0] == 1 and grid[0, 5] == 1 and grid[0, 0] == 0  # padding rows and columns


def test_every_figure_renders_for_image_and_non_image_data(tmp_path):
    for data_dim, shape in ((16, (4, 4)), (5, None)):
        vae = VAE(VAEConfig(data_dim=data_dim, latent_dim=2, hidden=(8,), likelihood="bernoulli"))
        x = torch.randint(0, 2, (6, data_dim)).float()
        metrics = [
            {
                "epoch": e,
                **{f"{s}_{k}": -float(e) for s in ("train", "valid") for k in ("elbo", "reconstruction", "kl")},
            }
            for e in (1, 2)
        ]
        figures = {
            "samples": plots.samples(vae, 9, shape),
            "reconstructions": plots.reconstructions(vae, x, shape),
            "interpolation": plots.interpolation(vae, x, 5, shape),
            "manifold": plots.manifold(vae, 4, shape),
            "curves": plots.curves(metrics),
        }
        for name, figure in figures.items():
            assert saves_as_png(figure, tmp_path / f"{name}-{data_dim}.png"), name
    scheduled = [m | {"step": 10 * m["epoch"], "kl_weight_per_step": [0.1 * m["epoch"]] * 10} for m in metrics]
    assert len(plots.curves(scheduled).axes) == 4 and len(plots.curves(metrics).axes) == 3  # beta has its panel


def _evaluation(latent_dim, gap_points=4):
    from elbox.evaluation import evaluate

    torch.manual_seed(0)
    vae = VAE(VAEConfig(data_dim=16, latent_dim=latent_dim, hidden=(8,), likelihood="bernoulli"))
    x = torch.randint(0, 2, (30, 16)).float()
    return vae, x, evaluate(vae, x, k=50, gap_points=gap_points, gap_steps=10, mi_points=30)


@pytest.mark.slow
def test_traversals_and_embedding_render_for_2d_and_higher_latents(tmp_path):
    for latent_dim in (2, 5):
        for data_dim, shape in ((16, (4, 4)), (5, None)):
            vae = VAE(VAEConfig(data_dim=data_dim, latent_dim=latent_dim, hidden=(8,), likelihood="bernoulli"))
            x = torch.randint(0, 2, (12, data_dim)).float()
            labels = torch.arange(12) % 3
            figures = {
                "traversals": plots.traversals(vae, x, steps=5, image_shape=shape),
                "traversals-dims": plots.traversals(vae, x[0], dims=[1, 0], steps=4),
                "embedding": plots.embedding(vae, x),
                "embedding-classes": plots.embedding(vae, x, labels),
                "embedding-values": plots.embedding(vae, x, np.linspace(0, 1, 12)),
            }
            for name, figure in figures.items():
                assert saves_as_png(figure, tmp_path / f"{name}-{latent_dim}-{data_dim}.png"), name


def test_traversals_default_to_active_units_largest_first():
    means = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 2.0], [-0.3, 0.001, -2.0]])
    assert plots_model._traversed_dims(means) == [2, 0]  # dim 1 varies by less than the threshold
    assert plots_model._traversed_dims(torch.zeros(4, 3)) == [0, 1, 2]  # none active: the most variable stand in


def test_traversal_rows_move_only_their_dimension():
    vae = VAE(VAEConfig(data_dim=4, latent_dim=3, hidden=(8,), likelihood="bernoulli"))
    decoded = plots_model._traverse(vae, torch.zeros(3), [2], steps=3, span=1.0)
    expected = vae.decode(torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])).mean
    torch.testing.assert_close(decoded[0], expected.detach())


def test_pca_of_points_on_a_line_puts_all_variance_on_the_first_axis():
    t = torch.linspace(-1, 1, 20, dtype=torch.float64)[:, None]
    points, share = plots_model._pca(t * torch.tensor([[1.0, 2.0, -2.0]], dtype=torch.float64))
    torch.testing.assert_close(points[:, 0].abs(), 3 * t[:, 0].abs())
    assert share[0] > 0.999


@pytest.mark.slow
def test_evaluation_figures_render_for_2d_and_higher_latents(tmp_path):
    for latent_dim in (2, 4):
        _, _, e = _evaluation(latent_dim)
        figures = {
            "kl_per_dimension": plots.kl_per_dimension(e),
            "bound_tightness": plots.bound_tightness(e),
            "gaps": plots.gaps(e),
            "rate_distortion": plots.rate_distortion(e),
            "rate_distortion-many": plots.rate_distortion([e, e], labels=["a", "b"], iso_elbo=False),
        }
        for name, figure in figures.items():
            assert saves_as_png(figure, tmp_path / f"{name}-{latent_dim}.png"), name


def test_evaluation_figures_refuse_what_the_evaluation_lacks():
    import dataclasses

    import pytest

    _, _, e = _evaluation(2, gap_points=0)
    with pytest.raises(ValueError, match="gap_points"):
        plots.gaps(e)
    with pytest.raises(ValueError, match="factorize"):
        plots.kl_per_dimension(dataclasses.replace(e, kl_per_dimension=None))
    with pytest.raises(ValueError, match="labels"):
        plots.rate_distortion([e, e], labels=["only one"])
