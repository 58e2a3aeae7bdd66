"""plots: every figure renders to a PNG; helpers pick and arrange images as stated."""

import numpy as np
import torch

from elbox import VAE, VAEConfig, plots


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
            path = plots.save(figure, tmp_path / f"{name}-{data_dim}.png")
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000, name
