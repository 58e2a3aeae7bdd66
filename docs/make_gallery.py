"""Regenerate docs/gallery.md and docs/gallery/*.png: the figures of the default run, drawn by elbox.

    python docs/make_gallery.py        # about 2 minutes on 2 cores

Trains the README's default job (`elbox train`: digits, 2-D latents, 200 epochs, seed 0),
evaluates it (K = 1000, the gap split on 100 test points), fits the non-centered eight
schools with `--family auto`, and copies every figure the two run folders hold into
docs/gallery/, with a page that shows them. Nothing is drawn by hand.
"""

import shutil
import tempfile
from pathlib import Path

from elbox.cli import main

HERE = Path(__file__).resolve().parent
GALLERY = HERE / "gallery"
CAPTIONS = {
    "curves": "Training curves: train and validation ELBO with its two terms, per epoch.",
    "samples": "Prior samples: z ~ N(0, I) decoded.",
    "reconstructions": "Test inputs (top) above their reconstructions.",
    "interpolation": "Straight lines between the posterior means of pairs of test inputs, decoded.",
    "manifold": "The decoded grid over the 2-D latent space (Kingma & Welling 2014, Figure 4).",
    "traversals": "Latent traversals: one latent dimension moved at a time over ±3.",
    "embedding": "Posterior means E_q[z | x] of the test inputs, coloured by digit.",
    "bound_tightness": "The ELBO, IWAE_k against k, CUBO_2 and the log p(x) estimate with its error.",
    "rate_distortion": "Rate (KL) against distortion; the dotted line has the same ELBO.",
    "kl_per_dimension": "KL per latent dimension; active units in colour.",
    "gaps": "The encoder's gap split into approximation (the family) and amortization (the encoder).",
    "marginals": "Eight schools: q's marginals (flow family chosen by auto) over the reference draws.",
    "pairs": "Eight schools: the most correlated pairs of quantities under q.",
    "elbo": "Eight schools: the ELBO trace of the fit.",
    "khat": "Eight schools: PSIS k-hat of each set of draws against the 0.5 / 0.7 thresholds.",
}


def elbox(*args: str) -> None:
    try:
        main([*args, "--no-progress"])
    except SystemExit as e:
        if e.code:
            raise


def main_() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vae, fit = Path(tmp) / "digits", Path(tmp) / "eight_schools"
        elbox("train", "--out", str(vae))
        elbox("evaluate", str(vae), "--k", "1000", "--gap-points", "100")
        elbox("fit", "eight_schools_noncentered", "--family", "auto", "--out", str(fit))
        shutil.rmtree(GALLERY, ignore_errors=True)
        GALLERY.mkdir()
        names = []
        for folder, prefix in ((vae, ""), (fit, "eight_schools_")):
            for png in sorted((folder / "figures").glob("*.png")):
                shutil.copy(png, GALLERY / f"{prefix}{png.name}")
                names.append((f"{prefix}{png.name}", png.stem))
    lines = [
        "# Gallery",
        "",
        "The figures of the README's default run (`elbox train`, then `elbox evaluate RUN --k 1000`)",
        "and of `elbox fit eight_schools_noncentered --family auto --out RUN`, made by",
        "`python docs/make_gallery.py`. Every run folder holds these in `figures/` and in `report.html`.",
        "",
    ]
    for file, stem in names:
        lines += [f"### {stem.replace('_', ' ')}", "", CAPTIONS.get(stem, ""), "", f"![{stem}](gallery/{file})", ""]
    (HERE / "gallery.md").write_text("\n".join(lines))
    print(f"wrote {HERE / 'gallery.md'} and {len(names)} figures in {GALLERY}")


if __name__ == "__main__":
    main_()
