"""networks: the convolutional encoder and decoder on images of any size, and a VAE built on them."""

import json

import numpy as np
import pytest
import torch
from command import run_cli

from elbox import VAE, VAEConfig
from elbox.errors import ElboxError
from elbox.networks import ConvDecoder, ConvEncoder
from elbox.runs import load_run
from elbox.training import train

SHAPES = [(28, 28), (8, 8), (5, 7), (1, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_conv_encoder_maps_flat_images_with_any_leading_dims_to_its_feature_width(shape):
    h, w = shape
    enc = ConvEncoder(shape, channels=(4, 8))
    sides = [-(-h // 4), -(-w // 4)]  # two halvings, rounding up: 28 -> 7, 8 -> 2, 5 -> 2, 7 -> 2
    assert enc.out_features == 8 * sides[0] * sides[1]
    x = torch.rand(3, 2, h * w)
    features = enc(x)
    assert features.shape == (3, 2, enc.out_features)
    assert torch.allclose(features, enc(x.reshape(6, h * w)).reshape(3, 2, -1))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("outputs", [1, 2])
def test_the_conv_decoder_gives_m_values_per_pixel_channel_major_for_particles(shape, outputs):
    h, w = shape
    dec = ConvDecoder([3, 16], shape, channels=(4, 8), outputs=outputs)
    z = torch.randn(5, 2, 3)  # [K, B, D]
    out = dec(z)
    assert out.shape == (5, 2, outputs * h * w)
    assert torch.allclose(out, dec(z.reshape(10, 3)).reshape(5, 2, -1))
    # channel j, pixel (r, c) of the transposed convolutions' map is output j * H * W + r * W + c
    maps = dec.layers(dec.dense(z.reshape(10, 3)).reshape(10, *dec.start))
    assert maps.shape[-2] >= h and maps.shape[-1] >= w
    assert torch.equal(out.reshape(10, outputs, h, w), maps[..., :h, :w])


def test_a_conv_vae_gets_gradients_in_every_parameter_for_every_kind_of_likelihood_output():
    x = torch.randint(0, 17, (4, 64)) / 16
    for likelihood, family in [("binomial", "diagonal"), ("logistic", "iaf:1"), ("categorical", "fullrank")]:
        config = VAEConfig(data_dim=64, latent_dim=2, hidden=(8,), likelihood=likelihood, levels=16, family=family,
                           network="conv", channels=(2, 4), image_shape=(8, 8))  # fmt: skip
        vae = VAE(config)
        assert isinstance(vae.encoder.encoder[0], ConvEncoder) and isinstance(vae.decoder, ConvDecoder)
        log_w = vae.log_weights(x, 3)
        assert log_w.shape == (3, 4) and torch.isfinite(log_w).all()
        log_w.mean().backward()
        for name, p in vae.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (likelihood, name)


def test_conv_options_are_checked():
    with pytest.raises(ElboxError, match="network must be one of"):
        VAEConfig(network="cnn")
    with pytest.raises(ElboxError, match="channels must be"):
        VAEConfig(network="conv", channels=(4, 0))
    with pytest.raises(ElboxError, match="two positive sides"):
        VAEConfig(network="conv", image_shape=(8,))
    with pytest.raises(ElboxError, match="holds 49 pixels, but the data have 64"):
        VAEConfig(network="conv", image_shape=(7, 7), data_dim=64)
    with pytest.raises(ValueError, match="image_shape"):
        VAE(VAEConfig(data_dim=64, likelihood="bernoulli", network="conv"))


def test_conv_on_rows_without_an_image_shape_is_refused_unless_given_one(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rows.npy"
    np.save(path, rng.random((60, 12)).astype(np.float32))
    with pytest.raises(ElboxError, match=r"needs images.*--image-shape H,W, or use --network mlp"):
        train(data=str(path), network="conv", out=str(tmp_path / "a"), progress=False)
    with pytest.raises(ElboxError, match="holds 16 pixels, but the data have 12"):
        train(data=str(path), network="conv", image_shape=(4, 4), out=str(tmp_path / "b"), progress=False)
    run = train(data=str(path), network="conv", image_shape=(3, 4), channels=(2,), epochs=1, hidden=(4,),
                out=str(tmp_path / "c"), progress=False)  # fmt: skip
    assert run.model.config.image_shape == (3, 4)


@pytest.mark.slow
def test_a_conv_vae_trains_on_digits_and_its_run_loads_with_the_image_shape(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--network", "conv", "--channels", "4,8", "--hidden", "16",
                             "--epochs", "2", "--out", tmp_path / "run", "--no-report", "--no-progress")  # fmt: skip
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert config["network"] == "conv" and config["channels"] == [4, 8] and config["image_shape"] == [8, 8]
    run = load_run(tmp_path / "run")
    first, last = run.metrics[0]["valid_elbo"], run.metrics[-1]["valid_elbo"]
    assert last > first  # two epochs of Adam raise the validation ELBO of a fresh network
    assert run.model.sample(3).shape == (3, 64)
