"""elbox.report: one self-contained, escaped HTML page per run; `elbox report`; the page in a real browser."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from command import run_cli

from elbox.cli import main
from elbox.report import verdicts_of_evaluation, verdicts_of_gaps, verdicts_of_posterior, write_report

VAE_SECTIONS = ("configuration", "training", "evaluation", "generation", "latent-space", "diagnostics")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]  # fmt: skip
EVIL = "<script>alert(1)</script>"




@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A tiny trained run, written by `elbox train` (which writes the report by default)."""
    out = tmp_path_factory.mktemp("report") / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "2", "--latent-dim", "2", "--hidden", "16", "--out", str(out), "--no-progress"])
    assert e.value.code == 0
    return out


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """A tiny run on a table of mixed columns, written by `elbox train` (with its report)."""
    import numpy as np
    import pandas as pd

    folder = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    pd.DataFrame({"height": rng.normal(170, 10, 150), "smoker": rng.choice(["yes", "no"], 150),
                  "visits": rng.poisson(3.0, 150)}).to_csv(folder / "t.csv", index=False)  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(folder / "t.csv"), "--epochs", "2", "--latent-dim", "2", "--hidden", "16",
              "--out", str(folder / "run"), "--no-progress"])  # fmt: skip
    assert e.value.code == 0
    return folder / "run"


@pytest.fixture(scope="module")
def bayes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "fit"
    with pytest.raises(SystemExit) as e:
        main(["fit", "eight_schools_noncentered", "--family", "diagonal", "--steps", "300", "--out", str(out),
              "--no-progress"])  # fmt: skip
    assert e.value.code == 0
    return out


def _evaluation(**overrides):
    """A small evaluation.json, in the shape of ``Evaluation.to_dict``."""
    est = {"mean": -90.0, "se": 0.5}
    return {
        "source": {"split": "test", "checkpoint": "last"}, "points": 100,
        "units": "nats per data point; se is the standard error over data points",
        "log_px": est | {"k": 100}, "ess": {"median": 10.0, "min": 1.0, "k": 100},
        "psis_khat": {"median": 0.8, "max": 0.92, "share_above_0.7": 0.4, "threshold": 0.7},
        "bounds": {"elbo": {"mean": -93.0, "se": 0.6, "log_px_minus_bound": {"mean": 3.0, "se": 0.1}}},
        "rate": {"mean": 5.0, "se": 0.1}, "distortion": {"mean": 85.0, "se": 0.4},
        "active_units": {"count": 1, "dimensions": 2, "threshold": 0.01},
        "mutual_information": {"mean": 2.0, "se": 0.05},
        "gaps": {"points": 5, "steps": 20, "approximation": {"mean": 0.4, "se": 0.1},
                 "amortization": {"mean": 2.6, "se": 0.3}, "total": {"mean": 3.0, "se": 0.3}},
        "warnings": ["posterior collapse: 0 of 2 latent dimensions are active"],
    } | overrides  # fmt: skip


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


# ----------------------------------------------------------------- the page


@pytest.mark.slow
def test_train_writes_one_self_contained_report_with_every_section(vae_run):
    html = (vae_run / "report.html").read_text(encoding="utf-8")
    assert [p.name for p in vae_run.glob("*.html")] == ["report.html"]
    for section in VAE_SECTIONS:
        assert f'<section id="{section}">' in html, section
    images = re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)
    assert len(images) == len(list((vae_run / "figures").glob("*.png"))) >= 4
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"https?://", html)
    assert "<link" not in html and "<script" not in html
    assert "elbox evaluate" in html  # no evaluation.json yet: the page says how to get one


def test_evaluation_numbers_verdicts_and_figures_added_later(vae_run, tmp_path):
    run = _copy(vae_run, tmp_path)
    (run / "evaluation.json").write_text(json.dumps(_evaluation()))
    shutil.copy(run / "figures" / "samples.png", run / "figures" / "something_new.png")
    html = write_report(run).read_text(encoding="utf-8")
    assert "-90.000 ± 0.500" in html  # log p(x) with its standard error
    assert "k-hat above 0.7 on 40% of points" in html and "do not trust the log p(x) error bars" in html
    assert "the encoder is the larger cost" in html
    assert "posterior collapse: 0 of 2" in html
    assert "something_new.png" in html


def test_user_strings_render_as_text(vae_run, tmp_path):
    run = _copy(vae_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"name": EVIL}))
    (run / "evaluation.json").write_text(json.dumps(_evaluation(warnings=[EVIL])))
    html = write_report(run).read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html


def test_bayesian_run_renders_its_verdict_and_posterior(bayes_run):
    html = (bayes_run / "report.html").read_text(encoding="utf-8")
    posterior = json.loads((bayes_run / "posterior.json").read_text())
    for section in ("configuration", "posterior", "diagnostics", "comparison", "figures"):
        assert f'<section id="{section}">' in html, section
    assert f"verdict: {posterior['diagnostics']['verdict']}" in html
    assert "mu" in html and "tau" in html
    assert all(src.startswith("data:") for src in re.findall(r"<img [^>]*src=\"([^\"]*)\"", html))


# ----------------------------------------------------------------- verdicts


def test_gap_verdicts_name_the_larger_cost():
    family = verdicts_of_gaps({"approximation": {"mean": 1.4, "se": 0.2}, "amortization": {"mean": 0.2, "se": 0.1}})
    assert family[0].level == "warn" and "approximation gap 1.40" in family[0].text
    assert "a richer family could help" in family[0].text and family[1].level == "ok"
    encoder = verdicts_of_gaps({"approximation": {"mean": 0.3, "se": 0.1}, "amortization": {"mean": 2.0, "se": 0.1}})
    assert encoder[0].level == "ok" and "the encoder is the larger cost" in encoder[1].text


def test_khat_verdicts():
    clean = _evaluation(psis_khat={"median": 0.2, "max": 0.5, "share_above_0.7": 0.0, "threshold": 0.7}, warnings=[])
    assert any(v.level == "ok" and "can be trusted" in v.text for v in verdicts_of_evaluation(clean))
    assert any(v.level == "bad" and "k-hat above 0.7" in v.text for v in verdicts_of_evaluation(_evaluation()))
    posterior = {"diagnostics": {"verdict": "do not trust", "khat": [0.92, 0.5], "reasons": ["heavy tail"]}}
    texts = [v.text for v in verdicts_of_posterior(posterior)]
    assert "k-hat 0.92: do not trust these posterior sds (nor the means)." in texts and "heavy tail" in texts


# ----------------------------------------------------------------- the command


def test_report_command_writes_the_page(vae_run, tmp_path, capsys):
    run = _copy(vae_run, tmp_path)
    (run / "report.html").unlink()
    code, out, _ = run_cli(capsys, "report", run)
    assert code == 0 and (run / "report.html").is_file() and str(run / "report.html") in out


@pytest.mark.slow
def test_train_without_report(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", "--epochs", "1", "--hidden", "8", "--out", out, "--no-progress",
                        "--no-report")  # fmt: skip
    assert code == 0 and (out / "config.json").is_file() and not (out / "report.html").exists()


@pytest.mark.parametrize(("make", "message"), [(lambda p: p / "missing", "does not exist"),
                                               (lambda p: p, "holds no config.json")])  # fmt: skip
def test_bad_folder_prints_one_paragraph_and_exits_2(tmp_path, capsys, make, message):
    code, out, err = run_cli(capsys, "report", make(tmp_path))
    assert code == 2 and message in err and err.startswith("elbox: error:") and "Traceback" not in err
    assert "\n\n" not in err.strip() and out == ""


# ----------------------------------------------------------------- in a real browser


def _browser():
    """Playwright's sync API, or a skip (a failure under CI) naming what is missing. Never downloads a browser."""
    missing = [] if Path(CHROMIUM).exists() else [f"{CHROMIUM} (apt-get install chromium)"]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the playwright package (pip install playwright)")
    if missing:
        reason = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must not skip it")
        pytest.skip(reason)
    return sync_playwright


@pytest.mark.slow
def test_report_in_a_real_browser(vae_run, tmp_path):
    sync_playwright = _browser()
    import matplotlib.image

    run = _copy(vae_run, tmp_path)
    (run / "evaluation.json").write_text(json.dumps(_evaluation()))
    url = write_report(run).resolve().as_uri()
    errors, fetched = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: fetched.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(url, wait_until="load")
            for section in VAE_SECTIONS:
                assert page.locator(f"section#{section}").count() == 1, section
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) >= 4 and all(w > 0 for w in widths), widths
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == [] and fetched == []
    assert matplotlib.image.imread(shot).var() > 0


IMAGE_GRIDS = ("samples.png", "interpolation.png", "traversals.png", "manifold.png")


def _figure_names(html: str) -> set[str]:
    return set(re.findall(r"[\w-]+\.png", html))


def test_a_table_runs_report_shows_marginals_and_correlations_and_no_image_grid(table_run, vae_run):
    html = (table_run / "report.html").read_text(encoding="utf-8")
    names = _figure_names(html)
    assert {"marginals.png", "correlations.png", "reconstructions.png", "embedding.png"} <= names
    assert not names & set(IMAGE_GRIDS), names
    generation = html[html.index('id="generation"') :]
    generation = generation[: generation.index("</section>")]
    assert "marginals.png" in generation and "correlations.png" in generation and "stand for the image" in generation
    # the same check sees an image run's grid
    assert _figure_names((vae_run / "report.html").read_text(encoding="utf-8")) & set(IMAGE_GRIDS)


def test_a_table_runs_report_in_a_real_browser(table_run, tmp_path):
    sync_playwright = _browser()
    url = write_report(_copy(table_run, tmp_path)).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url, wait_until="load")
            shown = page.eval_on_selector_all("#generation img", "imgs => imgs.map(i => [i.alt, i.naturalWidth])")
            every = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.alt)")
        finally:
            browser.close()
    assert shown and all(width > 0 for _, width in shown), shown
    titles = " ".join(alt for alt, _ in shown).lower()
    assert "marginals" in titles and "correlations" in titles
    assert not any(word in " ".join(every).lower() for word in ("samples", "interpolation", "traversals",
                                                                 "manifold")), every  # fmt: skip


def test_a_gap_verdict_within_its_error_of_the_line_says_it_is_not_decided():
    sure = verdicts_of_gaps({"approximation": {"mean": 1.7, "se": 0.1}, "amortization": {"mean": 0.2, "se": 0.1}})
    unsure = verdicts_of_gaps({"approximation": {"mean": 1.7, "se": 1.6}, "amortization": {"mean": 0.2, "se": 0.1}})
    assert "not decided" not in sure[0].text and "could help" in sure[0].text
    assert "not decided" in unsure[0].text and "could help" in unsure[0].text
