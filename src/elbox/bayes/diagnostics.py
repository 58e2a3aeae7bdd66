"""How far a fitted q can be trusted: PSIS k-hat, importance ESS, PSIS-corrected moments, the
log evidence, and a verdict that does not approve bad fits.

Everything comes from the log-weights of draws u_s ~ q (DESIGN.md),

    log w_s = log p(theta(u_s), x) + log |det J(u_s)| - log q(u_s),        s = 1..S,

whose mean is the ELBO and whose log-mean-exp estimates log p(x). Pareto-smoothed importance
sampling (PSIS; Vehtari, Simpson, Gelman, Yao & Gabry 2024) fits a generalised Pareto
distribution to the largest weights: its shape k-hat says how heavy their tail is, and so
whether p / q can be importance-sampled at all (Yao, Vehtari, Simpson & Gelman 2018: below
0.5 good, 0.5-0.7 usable, above 0.7 do not trust q). With the smoothed weights w~ the
posterior moments E_p f ~ sum_s w~_s f(u_s) correct q's own moments.

The verdict (``verdict``). One k-hat from a few thousand draws is noisy (on one fit,
independent sets of 4,000 draws give 0.62 to 0.91), and a k-hat alone does not measure what
a user needs, the error of the posterior means and sds. So the rule reads three things from
R independent sets of S draws (default 4 x 5,000):

1. tails: the largest k-hat of the R sets (decide on the upper end of the spread);
2. means: for every scalar quantity (parameters and transformed quantities, constrained),
   |PSIS-corrected mean - q's mean| in PSIS-corrected sds, averaged over the sets, plus two
   standard errors of that average, must be below ``MEAN_TOL`` (0.075);
3. spreads: |q's sd / the PSIS-corrected sd - 1|, the same way, below ``SD_TOL`` (7.5%).

A fit is trusted when (1) every k-hat is below 0.7 and (2) and (3) hold. When PSIS is
reliable its moments are close to the posterior's, so (2) and (3) bound q's error in the
units of the benchmark's targets (means within 0.1 sd, sds within 10%), keeping a quarter
of each target for the importance sampler's own bias (measured on the posteriordb fits with
k-hat < 0.7: at most 0.025 sd in means and 0.015 in sd ratios). Above 0.7 the corrected moments lag behind the truth
(measured: a flow on the centered eight schools at k-hat 0.80 is 0.13 sd off where PSIS sees
0.05), so they can refute q but not confirm it. One more way to trust a fit whose k-hat is
between 0.7 and 1 (a near-exact full-rank fit of ``kilpisjarvi`` has 0.84 because its log-weights
have a heavy tail, not because its moments are off): agreement with a fit from a family of
another kind. When a Gaussian fit and a flow fit, each passing (2) and (3) with every k-hat
below 1, agree within 0.05 sds in every mean and 5% in every sd (their own moments, from
20,000 draws each: little noise), the flow is trusted
(``family="auto"`` makes this check after its flow). Two Gaussian families are never
compared: they share the Gaussian's blind spots.

The defensive check (``_defensive_check``): a second importance sampler, made whenever the
first trusts q or refuses it for k-hat alone. A k-hat above 0.7 says that p / q has a heavy
tail, which is often only the posterior's tails being heavier than q's (a regression's
coefficients given its noise scale are a scale mixture: no Gaussian has its tails) while q's
means and sds are right. Importance sampling from the defensive mixture
g = (1 - a) q + a T (Hesterberg 1995; Owen & Zhou 2000), T a multivariate Student-t with
``DEFENSIVE_DF`` degrees of freedom, q's mean and ``DEFENSIVE_WIDTH`` times q's covariance's
Cholesky factor, a = ``DEFENSIVE_SHARE``, bounds the weights by p / (a T); its k-hat says
whether *that* estimate of p's moments is reliable, and conditions (2) and (3) compare q's own
moments (from q's draws alone) with it. The rule: **every reliable estimate (k-hat below 0.7)
must confirm q, and one must exist.** So a fit refused for k-hat alone is trusted when g's
estimate is reliable and confirms q (the diagnostics then carry g's moments and say so), and a
fit that q's own weights confirm is refused when g's reliable estimate refutes it: PSIS from q
itself sees less of a long tail than g does (measured: the eight schools' auto fit, seed 4, has
tau's sd 0.895 of the reference; q's weights put it at 0.940 of theirs, g's at 0.933, beyond
the tolerance). A q that is too wide or off-centre is refuted by (2) and (3) either way (the
full-rank fits of eight schools from 32 fixed draws, sds up to 7 and 12 times the reference's
on seeds 0 and 1, are refused by both). Otherwise the verdict is "do not trust", with the reasons.

Stopping early (``diagnose``'s ``refuse_early``). Each estimate is reliable only when every one of its sets
is, so a set whose k-hats from q and from g both reach ``KHAT_MAX`` decides the verdict: no later set can make
it "trust". ``family="auto"`` judges the fits it may pass over that way, set by set, and stops there (at
``KHAT_LIMIT`` for q where the agreement rule may read the verdict).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..bounds import log_mean_exp
from ..importance import KHAT_THRESHOLD, effective_sample_size, log_px_standard_error, psis
from .model import flatten

if TYPE_CHECKING:
    from .posterior import Posterior

__all__ = [
    "DEFENSIVE_DF",
    "DEFENSIVE_SHARE",
    "KHAT_LIMIT",
    "KHAT_MAX",
    "MEAN_TOL",
    "SD_TOL",
    "Diagnostics",
    "agreement",
    "combine",
    "diagnose",
    "verdict",
]

KHAT_MAX = KHAT_THRESHOLD  # Yao et al. (2018): above it, the importance weights (and q) are not to be trusted
KHAT_LIMIT = 1.0  # above it, importance sampling does not even converge: no agreement can rescue q
MEAN_TOL = 0.075  # posterior sds between the PSIS-corrected and q's means: 3/4 of the target 0.1
SD_TOL = 0.075  # relative difference between the PSIS-corrected and q's sds: 3/4 of the target 10%
AGREE_MEAN, AGREE_SD = 0.05, 0.05  # between a Gaussian and a flow fit's own moments (little noise)
DEFENSIVE_SHARE = 0.2  # of the defensive mixture's draws from the Student-t: weights at most 5 p / T
DEFENSIVE_DF = 5.0  # the Student-t's degrees of freedom: tails heavier than any regression posterior's
DEFENSIVE_WIDTH = 1.5  # the Student-t's scale in q's sds: at 1, it takes over from q too far out (measured: t_8
# posteriors, 4 dimensions, q with the exact moments: k-hat of p / g 1.2 at 1, 0.3 at 1.5)


@dataclass
class Diagnostics:
    """PSIS diagnostics of a fit from ``replicates`` sets of ``draws`` draws each.

    Per set: ``khat`` and ``ess`` (the importance ESS 1 / sum w~^2 of the smoothed weights).
    Pooled over all draws: ``elbo`` and ``log_evidence`` as (estimate, standard error): the
    mean log-weight and log (1/S) sum w (the SE by the delta method; it is too small when
    k-hat is high). Per scalar quantity (``names``): q's mean and sd and the PSIS-corrected
    ones (averaged over the sets), the mean shift (PSIS - q) / sd_PSIS and the sd ratio
    q / PSIS, each with the standard error of its average over the sets.
    """

    draws: int
    replicates: int
    khat: list[float]
    ess: list[float]
    elbo: tuple[float, float]
    log_evidence: tuple[float, float]
    names: list[str]
    q_mean: np.ndarray
    q_sd: np.ndarray
    psis_mean: np.ndarray
    psis_sd: np.ndarray
    mean_shift: np.ndarray
    mean_shift_se: np.ndarray
    sd_ratio: np.ndarray
    sd_ratio_se: np.ndarray
    verdict: str = ""
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was checked and how (``subsample``: estimated log-weights)
    khat_se: list[float] = field(default_factory=list)  # per set, k-hat's error from estimated log-weights
    defensive_khat: list[float] = field(default_factory=list)  # per set, of p / g (``defensive``); [] when not run
    evaluations: int = 0  # of the log density, the defensive check's included
    stopped: str = ""  # why the verdict ended before its last set (``refuse_early``); "" when it ran them all

    @property
    def trusted(self) -> bool:
        return self.verdict == "trust"

    @property
    def khat_max(self) -> float:
        return max(self.khat)

    def __str__(self) -> str:
        ks = ", ".join(f"{k:.2f}" for k in self.khat)
        lines = [
            f"PSIS k-hat over {self.replicates} x {self.draws} draws: {ks} (max {self.khat_max:.2f}; "
            "< 0.5 good, 0.5-0.7 usable, > 0.7 do not trust)",
            f"importance ESS per set: {', '.join(f'{e:.0f}' for e in self.ess)} of {self.draws}",
            f"ELBO {self.elbo[0]:.3f} ± {self.elbo[1]:.3f}   log p(x) ~ {self.log_evidence[0]:.3f} "
            f"± {self.log_evidence[1]:.3f} (importance sampling)",
            f"worst PSIS-vs-q mean shift {np.abs(self.mean_shift).max():.3f} sd, "
            f"sd ratio q/PSIS {self.sd_ratio.min():.3f} - {self.sd_ratio.max():.3f}",
            f"verdict: {self.verdict.upper()}" + "".join(f"\n  - {r}" for r in self.reasons),
            *(f"checked: {n}" for n in self.notes),
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        per = {n: {"q_mean": float(self.q_mean[i]), "q_sd": float(self.q_sd[i]), "psis_mean": float(self.psis_mean[i]),
                   "psis_sd": float(self.psis_sd[i]), "mean_shift": float(self.mean_shift[i]),
                   "sd_ratio": float(self.sd_ratio[i])} for i, n in enumerate(self.names)}  # fmt: skip
        return {"draws": self.draws, "replicates": self.replicates, "khat": self.khat, "ess": self.ess,
                "elbo": list(self.elbo), "log_evidence": list(self.log_evidence), "verdict": self.verdict,
                "reasons": self.reasons, "notes": self.notes, "khat_se": self.khat_se,
                "defensive_khat": self.defensive_khat, "quantities": per}  # fmt: skip


def _moments(x: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of the columns of ``x`` ``[S, P]``, weighted by normalised ``weights`` ``[S]``."""
    if weights is None:
        return x.mean(0), x.std(0, ddof=1)
    mean = weights @ x
    return mean, np.sqrt(np.maximum(weights @ (x - mean) ** 2, 0.0))


def _mean_and_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average over the sets (axis 0) and its standard error (NaN with one set)."""
    r = values.shape[0]
    se = values.std(0, ddof=1) / math.sqrt(r) if r > 1 else np.full(values.shape[1:], np.nan)
    return values.mean(0), se


def diagnose(
    posterior: "Posterior", *, draws: int = 5000, replicates: int = 4, seed: int = 0,
    log_weights: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    refuse_early: float | None = None,
) -> Diagnostics:  # fmt: skip
    """Diagnostics of ``posterior`` from ``replicates`` independent sets of ``draws`` draws, with the verdict.

    ``log_weights(draws, seed)`` -> (u ``[draws, d]``, log w ``[draws]``) replaces
    ``posterior.log_weights`` (all the data): ``subsample`` passes its estimate from a subsample, and
    the defensive check (which needs the exact log density at its own draws) is then not made.

    ``refuse_early`` (a k-hat, at least ``KHAT_MAX``): judge the sets one at a time and stop once the
    verdict cannot be "trust" whatever the other sets hold (``_refused``): a set whose q k-hat reaches
    ``refuse_early`` and whose defensive k-hat reaches ``KHAT_MAX``. Neither estimate can then be reliable
    (each is reliable only when every one of its sets is), so no rule of this module can trust q. Pass
    ``KHAT_LIMIT`` where ``agreement`` may still use these diagnostics (it accepts k-hats below 1). A verdict
    that does not stop is the full one, number for number."""
    if draws < 100 or replicates < 1:
        raise ValueError(f"diagnostics need at least 100 draws and 1 replicate, got {draws} and {replicates}")
    if refuse_early is not None and not refuse_early >= KHAT_MAX:
        raise ValueError(f"refuse_early must be a k-hat of at least {KHAT_MAX}, got {refuse_early}")
    sets, kept, all_log_w, defensive, stopped = [], [], [], {}, ""
    for r in range(replicates):
        if log_weights is None:  # exact: log p and log q kept apart for the defensive check
            u, log_p, log_q = posterior.weighted(draws, seed * 1000 + r)
            log_w = log_p - log_q
        else:
            u, log_w = log_weights(draws, seed * 1000 + r)
        x = _quantities(posterior, u)
        sets.append((*_psis_moments(x, log_w), *_moments(x)))
        all_log_w.append(log_w)
        kept.append((u, log_p, log_q, x) if log_weights is None else None)
        if refuse_early is not None and log_weights is None and r + 1 < replicates:
            stopped = _refused(posterior, sets[-1][0], kept[-1], r, seed, refuse_early, defensive)
            if stopped:
                break
    log_w = torch.cat(all_log_w).double()
    khat, ess, p_mean, p_sd, q_mean, q_sd = _by_kind(sets)
    names = posterior.model.names(posterior.model.quantities(posterior.model.constrain(u[:1])[0]))
    d = Diagnostics(
        draws=draws, replicates=len(sets), khat=khat, ess=ess,
        elbo=(float(log_w.mean()), float(log_w.std() / math.sqrt(log_w.numel()))),
        log_evidence=(float(log_mean_exp(log_w, 0)), float(log_px_standard_error(log_w))),
        names=names, q_mean=q_mean.mean(0), q_sd=q_sd.mean(0), psis_mean=p_mean.mean(0), psis_sd=p_sd.mean(0),
        **_shift_and_ratio(q_mean, q_sd, p_mean, p_sd), evaluations=draws * len(sets),
    )  # fmt: skip
    d.verdict, d.reasons = verdict(d)
    if log_weights is None and (d.trusted or _khat_reason(d, KHAT_MAX)):  # a second estimate; the third way
        _defensive_check(posterior, d, kept, q_mean, q_sd, seed, defensive)
    if stopped:
        d.stopped = f"stopped after {len(sets)} of {replicates} sets: {stopped}"
        d.notes.append(d.stopped)
    return d


def _refused(
    posterior: "Posterior", khat: float, kept: tuple, r: int, seed: int, limit: float, defensive: dict[int, tuple]
) -> str:  # fmt: skip
    """Why set ``r`` already decides the verdict against q ("" when it does not): its q k-hat is at least
    ``limit`` and its defensive k-hat at least ``KHAT_MAX``. The defensive set is kept in ``defensive``
    (the verdict's defensive check reuses it)."""
    if khat < limit:
        return ""
    if r not in defensive:
        defensive[r] = _defensive_set(posterior, *kept, seed * 1000 + r + 500)
    if defensive[r] is None or not defensive[r][0] >= KHAT_MAX:
        return ""
    return (f"its k-hat {khat:.2f} (>= {limit:g}) and the defensive check's {defensive[r][0]:.2f} (>= {KHAT_MAX}) "
            "make both importance estimates unreliable, so the verdict cannot be 'trust' whatever the other sets "
            "hold")  # fmt: skip


def _by_kind(sets: list[tuple]) -> list:
    """Per-set tuples (k-hat, ESS, arrays ``[P]`` ...) to lists of the numbers and arrays ``[R, P]``."""
    return [list(v) if i < 2 else np.stack(v) for i, v in enumerate(zip(*sets, strict=True))]


def _quantities(posterior: "Posterior", u: torch.Tensor) -> np.ndarray:
    """Every scalar quantity at draws u ``[S, d]``: ``[S, P]``, constrained."""
    return flatten(posterior.model.quantities(posterior.model.constrain(u)[0]))


def _psis_moments(x: np.ndarray, log_w: torch.Tensor) -> tuple[float, float, np.ndarray, np.ndarray]:
    """PSIS of one set: k-hat, the importance ESS, and the corrected mean and sd of x ``[S, P]`` (each ``[P]``)."""
    smoothed, k = psis(log_w)
    k = 0.0 if math.isnan(k) else float(k)  # NaN: every weight equal, q is p; no tail at all
    return (k, float(effective_sample_size(smoothed)), *_moments(x, smoothed.exp().numpy()))


def _shift_and_ratio(q_mean: np.ndarray, q_sd: np.ndarray, p_mean: np.ndarray, p_sd: np.ndarray) -> dict:
    """Per set ``[R, P]`` to the averages and standard errors of (PSIS - q) / sd_PSIS and q's sd / sd_PSIS."""
    constant = (q_sd == 0) & (p_sd == 0)  # a quantity that does not vary (a fixed transformed value): nothing to check
    floor = np.finfo(np.float64).tiny
    shift, shift_se = _mean_and_se(np.where(constant, 0.0, (p_mean - q_mean) / np.maximum(p_sd, floor)))
    ratio, ratio_se = _mean_and_se(np.where(constant, 1.0, q_sd / np.maximum(p_sd, floor)))
    return dict(mean_shift=shift, mean_shift_se=shift_se, sd_ratio=ratio, sd_ratio_se=ratio_se)


def _student_t(mean: torch.Tensor, tril: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws u ``[n, d]`` of the multivariate Student-t with ``DEFENSIVE_DF`` degrees of freedom, location
    ``mean`` ``[d]`` and scale ``tril`` ``[d, d]``, and log T(u) ``[n]``:
    u = mean + L z / sqrt(c / nu), z ~ N(0, I), c ~ chi2(nu)."""
    nu, d = DEFENSIVE_DF, mean.shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        z = torch.randn(n, d, dtype=mean.dtype)
        c = torch.distributions.Chi2(torch.tensor(nu, dtype=mean.dtype)).sample((n, 1))
    u = mean + (z / (c / nu).sqrt()) @ tril.T
    return u, _student_t_log_prob(u, mean, tril)


def _student_t_log_prob(u: torch.Tensor, mean: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    """log T(u) ``[n]`` of ``_student_t``'s distribution at u ``[n, d]``."""
    nu, d = DEFENSIVE_DF, mean.shape[0]
    z = torch.linalg.solve_triangular(tril, (u - mean).T, upper=False).T
    return (math.lgamma((nu + d) / 2) - math.lgamma(nu / 2) - d / 2 * math.log(nu * math.pi)
            - tril.diagonal().log().sum() - (nu + d) / 2 * torch.log1p((z * z).sum(-1) / nu))  # fmt: skip


def _defensive_set(
    posterior: "Posterior", u: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor, x: np.ndarray, seed: int
) -> tuple | None:  # fmt: skip
    """PSIS of one set from the defensive mixture g = (1 - a) q + a T (this module's rule): q's draws u ``[S, d]``
    with their log p, log q ``[S]`` and quantities x ``[S, P]``, plus a / (1 - a) S draws from T (q's mean and
    covariance, from those draws). log w = log p - log g, log g = logaddexp(log (1 - a) + log q, log a + log T).
    The set's (k-hat, ESS, corrected mean, corrected sd), and its extra log-density evaluations; ``None`` when q
    has collapsed in some direction (no Student-t to widen it with)."""
    a = DEFENSIVE_SHARE
    center = u.mean(0)
    tril, info = torch.linalg.cholesky_ex(DEFENSIVE_WIDTH**2 * torch.cov(u.T).reshape(u.shape[1], u.shape[1]))
    if info:
        return None
    u_t, log_t = _student_t(center, tril, round(u.shape[0] * a / (1 - a)), seed)
    with torch.no_grad():  # log q at T's draws only: q's own draws came with theirs
        log_q_all = torch.cat([log_q, posterior.q().log_prob(u_t)]).double()
        log_p_t = torch.cat([posterior.model.log_density(c, posterior.data) for c in u_t.split(1000)])
        log_t_all = torch.cat([_student_t_log_prob(u, center, tril), log_t]).double()
    log_p_all = torch.cat([log_p, log_p_t]).double()
    log_g = torch.logaddexp(math.log1p(-a) + log_q_all.nan_to_num(-math.inf), math.log(a) + log_t_all)
    x_all = np.concatenate([x, _quantities(posterior, u_t)])
    fine = np.isfinite(x_all).all(1) & (log_p_all - log_g).isfinite().numpy()  # far in T's tails: p is 0 there
    log_w_g = torch.where(torch.from_numpy(fine), log_p_all - log_g, -math.inf)
    return (*_psis_moments(np.where(fine[:, None], x_all, 0.0), log_w_g), u_t.shape[0])


def _defensive_check(
    posterior: "Posterior", d: Diagnostics, kept: list, q_mean: np.ndarray, q_sd: np.ndarray, seed: int,
    done: dict[int, tuple] | None = None,
) -> None:  # fmt: skip
    """The defensive check (this module's rule), made when q's own weights trust q or refuse it for k-hat alone:
    PSIS from the defensive mixture g (``_defensive_set``) on every set, reusing those in ``done`` (by set). When
    every k-hat of p / g is below ``KHAT_MAX`` (a reliable estimate), conditions (2) and (3) against g's corrected
    moments decide: a refusal for k-hat alone becomes trust (``d`` then carries g's moments), a trust becomes a
    refusal when they fail. An unreliable g changes nothing."""
    done = {} if done is None else done
    sets = []
    for r, set_r in enumerate(kept):
        if r not in done:
            done[r] = _defensive_set(posterior, *set_r, seed * 1000 + r + 500)
        if done[r] is None:
            return
        sets.append(done[r][:4])
        d.evaluations += done[r][4]
    khat, _, p_mean, p_sd = _by_kind(sets)
    g = replace(d, khat=khat, psis_mean=p_mean.mean(0), psis_sd=p_sd.mean(0),
                **_shift_and_ratio(q_mean, q_sd, p_mean, p_sd))  # fmt: skip
    combine(d, g)


def combine(d: Diagnostics, g: Diagnostics) -> None:
    """The rule over two importance samplers, q's own (``d``) and the defensive mixture's (``g``: the same
    quantities, g's k-hats and corrected moments): every reliable estimate (every k-hat below ``KHAT_MAX``)
    must confirm q by conditions (2) and (3), and one must exist. Updates ``d``'s verdict, reasons and notes;
    when only g's estimate is reliable and confirms q, ``d`` takes g's corrected moments."""
    d.defensive_khat = g.khat
    what = (f"the defensive check (PSIS from {1 - DEFENSIVE_SHARE:.0%} q + {DEFENSIVE_SHARE:.0%} Student-t("
            f"{DEFENSIVE_DF:g}), q's mean, {DEFENSIVE_WIDTH:g} q's sds) has k-hat up to {g.khat_max:.2f}")  # fmt: skip
    if _khat_reason(g, KHAT_MAX):  # g's estimate is not reliable: it decides nothing
        if not d.trusted:
            d.reasons.append(f"{what}: it cannot confirm q either")
        return
    refuted = _moment_reasons(g)
    if refuted and d.trusted:
        d.verdict, d.reasons = "do not trust", [f"{what}, and it refutes q: {refuted[0]}"]
    elif refuted:
        d.reasons.append(f"{what}, and it does not confirm q: {refuted[0]}")
    elif not d.trusted and _khat_reason(d, KHAT_MAX):  # g alone is reliable, and it confirms q
        for name in ("psis_mean", "psis_sd", "mean_shift", "mean_shift_se", "sd_ratio", "sd_ratio_se"):
            setattr(d, name, getattr(g, name))
        d.verdict, d.reasons = "trust", []
        d.notes.append(f"q's own k-hat reaches {d.khat_max:.2f}: the posterior's tails are heavier than q's (do "
                       f"not use q as an importance proposal as it is), but {what} and confirms q's means and sds")


def _moment_reasons(d: Diagnostics) -> list[str]:
    """Conditions (2) and (3) of the rule: PSIS-corrected against q's moments."""
    reasons = []
    se = lambda v: np.nan_to_num(v, nan=0.0)  # noqa: E731 -- one set: no spread to add
    pm = lambda v, i: f" ± {v[i]:.3f}" if np.isfinite(v[i]) else ""  # noqa: E731 -- one set: no error to show
    mean_bound = np.abs(d.mean_shift) + 2 * se(d.mean_shift_se)
    worst = int(np.argmax(mean_bound))
    if not mean_bound[worst] < MEAN_TOL:
        reasons.append(f"the PSIS-corrected mean of {d.names[worst]} is {d.mean_shift[worst]:+.3f}"
                       f"{pm(d.mean_shift_se, worst)} sds from q's (tolerance {MEAN_TOL})")  # fmt: skip
    sd_bound = np.abs(d.sd_ratio - 1) + 2 * se(d.sd_ratio_se)
    worst = int(np.argmax(sd_bound))
    if not sd_bound[worst] < SD_TOL:
        reasons.append(f"q's sd of {d.names[worst]} is {d.sd_ratio[worst]:.3f}{pm(d.sd_ratio_se, worst)} "
                       f"times the PSIS-corrected sd (tolerance {SD_TOL:.1%})")  # fmt: skip
    return reasons


def _khat_reason(d: Diagnostics, limit: float) -> list[str]:
    if all(math.isfinite(k) for k in d.khat) and d.khat_max < limit:
        return []
    sets = f"{d.replicates} set" + ("s" if d.replicates != 1 else "")
    return [f"k-hat reaches {d.khat_max:.2f} (>= {limit}) in {sets} of {d.draws} draws: p / q has "
            "too heavy a tail for importance sampling to check or correct q"]  # fmt: skip


def verdict(d: Diagnostics) -> tuple[str, list[str]]:
    """ "trust" or "do not trust", with the reasons: conditions (1)-(3) of this module's rule."""
    reasons = _khat_reason(d, KHAT_MAX) + _moment_reasons(d)
    return ("do not trust" if reasons else "trust"), reasons


def agreement(gaussian: Diagnostics, flow: Diagnostics) -> tuple[bool, str]:
    """The second way to trust (this module's rule): a Gaussian fit and a flow fit, each with every k-hat
    below 1 and conditions (2) and (3), agree within ``AGREE_MEAN`` sds and ``AGREE_SD`` in every quantity."""
    for name, d in (("the Gaussian fit", gaussian), ("the flow fit", flow)):
        problems = _khat_reason(d, KHAT_LIMIT) + _moment_reasons(d)
        if problems:
            return False, f"{name}: {problems[0]}"
    shift = np.abs(gaussian.q_mean - flow.q_mean) / flow.q_sd
    ratio = np.abs(gaussian.q_sd / flow.q_sd - 1)
    i, j = int(np.argmax(shift)), int(np.argmax(ratio))
    if shift[i] >= AGREE_MEAN or ratio[j] >= AGREE_SD:
        return False, (f"the Gaussian and flow fits disagree: means up to {shift[i]:.3f} sds apart ({flow.names[i]}), "
                       f"sds up to {ratio[j]:.1%} ({flow.names[j]})")  # fmt: skip
    return True, (f"k-hat {flow.khat_max:.2f} is above {KHAT_MAX}, but the Gaussian and flow fits agree: means "
                  f"within {shift[i]:.3f} sds, sds within {ratio[j]:.1%}, and PSIS confirms both")  # fmt: skip
