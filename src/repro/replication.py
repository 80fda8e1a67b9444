"""How stable is a verdict? The chance that an independent rerun of the same design gives the same verdict.

Why (issue 26): "the same run on another CPU changes <= 10 % of verdicts" asks something of the *design*, not of
the CPU. Another CPU's float kernels make every training run diverge from the committed one (chaotic amplification
of last-bit differences), so a rerun there is a fresh draw of training noise: the same as a rerun with new seeds.
A verdict then changes as often as the rerun's estimate lands on the other side of one of its boundaries, and
that is predictable from the numbers each claim already carries.

The model (normal approximation of the paired bootstrap; docs/methods.md §5):
    se       = (ci_high - ci_low) / (2 z_{0.975})                  the claim's standard error, read off its CI
    u        = s * (rerun's difference),  s = +1 ("higher") or -1  in the paper's direction
    u        ~ Normal(s * difference, 2 se^2)                     a rerun: the truth is uncertain by se (this run)
                                                                  and the rerun has its own se (same design)
    m        = p_holm / p_value                                   the Holm factor of this claim's family (>= 1)
    c        = se * z_{1 - alpha / (2 m)}                         |u| > c: significant after Holm
regions of u (stats.verdict, with the rerun's CI u -+ z_{0.975} se):
    reproduced     u > c
    opposite       u < -c
    below_paper    -c <= u <= c and u + z_{0.975} se < e   (e: the paper's effect in the paper's direction, > 0)
    inconclusive   the rest of [-c, c]
agreement = P(u in the region of the observed verdict). The sum of (1 - agreement) over the claims is the number
of verdicts a rerun is expected to change; docs/results.md compares it with the changes measured on the other
kernel path.

Planning (`two_run_agreement`, `expected_changes(scale=f)`): if the effects are what this run measured, how often do
two runs of a design with f times the evidence (seeds and test items together: se / sqrt(f)) disagree? Each run's
u ~ Normal(s * difference, se^2 / f) and agreement = sum over verdicts of P(verdict)^2. It takes the estimate for
the truth (it cannot know better), so read it as a planning number, not a promise.

Whether the arms learn (the learned rule, repro.papers.probe.learned): a claim is judged only when its methods'
pooled validation probe rose (CI above 0). Where a claim carries its methods' rules (`learning`: difference and CI
of each method's probe gain, repro.papers.claims.judge), a rerun learns with
    P(learns) = P(u_L - z_{0.975} se_L > 0),  u_L ~ Normal(d_L, 2 se_L^2)     per method, independent
so a judged claim agrees with probability prod P(learns) * P(same verdict), and a not_trained one with
1 - prod P(learns). Two runs at f times the evidence: u_L ~ Normal(d_L, se_L^2 / f) each, and a judged claim agrees
when both do not learn or both learn and agree on the verdict: (1 - q)^2 + q^2 sum P(v)^2, q = prod P(learns).

What it leaves out: the start. Stage 02 trains it once, so every seed of a run shares it and the claim's SE does
not contain its variation; on another CPU the start differs too (and SynthMed's pixels did, before repro.libm), and
more verdicts change than predicted (docs/results.md: 9 of 18 of 04's rows between an AVX512 and an AVX2 machine,
against 4.1; stage 02 at other seeds moves the start as much as another CPU).

Not predicted (NaN): not_trained claims without their methods' rules (older results; arms without a probe) or
whose methods all learned (then a seed did not move: not a random event of the probe), not_trained claims in the
two-run planning (what they would read if both learned is unknown), claims without a CI, and zero-width CIs (two
arms that agree on every item give no spread to predict from).
"""

from __future__ import annotations

import math
import statistics

import pandas as pd

from repro.stats import verdict_class

Z95 = statistics.NormalDist().inv_cdf(0.975)
PREDICTED = ("reproduced", "opposite", "below_paper", "inconclusive")
SCALES = (1, 2, 4, 8, 16, 32)  # the evidence multiples the planning table shows
TARGET = 0.9                    # "stable": two runs agree at least this often


def _cdf(x: float) -> float:
    return statistics.NormalDist().cdf(x) if math.isfinite(x) else (1.0 if x > 0 else 0.0)


def _threshold(se: float, holm_factor: float, alpha: float) -> float:
    """c: the |u| above which a difference is significant after Holm (and its 95 % CI excludes 0)."""
    z_m = statistics.NormalDist().inv_cdf(1 - alpha / (2 * max(holm_factor, 1.0)))
    return se * max(z_m, Z95)


def verdict_probs(mean: float, spread: float, se: float, *, expect: str = "higher",
                  paper_effect: float | None = None, holm_factor: float = 1.0, alpha: float = 0.05) -> dict:
    """{verdict: probability} for a rerun whose difference ~ Normal(mean, spread^2) and whose own CI is
    difference -+ 1.96 se (see the module docstring for the regions). mean and paper_effect are signed as
    measured (treatment - baseline); expect orients them."""
    if expect not in ("higher", "lower"):
        raise ValueError(f"verdict_probs: expect={expect!r}, must be 'higher' or 'lower'")
    if not (se > 0 and spread > 0 and math.isfinite(mean)):
        raise ValueError(f"verdict_probs: need se > 0, spread > 0 and a finite mean (got {se}, {spread}, {mean})")
    s = 1.0 if expect == "higher" else -1.0
    mu, c = s * mean, _threshold(se, holm_factor, alpha)

    def mass(lo: float, hi: float) -> float:
        return max(0.0, _cdf((hi - mu) / spread) - _cdf((lo - mu) / spread)) if hi > lo else 0.0

    e = None if paper_effect is None or not math.isfinite(paper_effect) else s * float(paper_effect)
    below_top = min(c, e - Z95 * se) if e is not None and e > 0 else -math.inf
    below = mass(-c, below_top) if below_top > -c else 0.0
    return {"reproduced": mass(c, math.inf), "opposite": mass(-math.inf, -c), "below_paper": below,
            "inconclusive": max(0.0, mass(-c, c) - below)}


def _inputs(row: dict) -> tuple[float, float, float] | None:
    """(difference, se, holm factor) of a ledger row, or None when it cannot be predicted."""
    d, lo, hi = (finite(row.get(k)) for k in ("difference", "ci_low", "ci_high"))
    if d is None or lo is None or hi is None or hi - lo <= 0:
        return None
    p, ph = finite(row.get("p_value")), finite(row.get("p_holm"))
    m = ph / p if p and ph and p > 0 else 1.0
    return d, (hi - lo) / (2 * Z95), max(m, 1.0)


def finite(x) -> float | None:
    """A finite float, or None (absent, null, NaN, a bool, or not a number); repro.ledger reads numbers with it."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def claims_only(ledger: pd.DataFrame) -> pd.DataFrame:
    """The rows of kind "claim": checks (a reward did what it pays for) and controls are never counted."""
    return ledger[ledger["kind"].fillna("claim") == "claim"] if "kind" in ledger.columns else ledger


def expect_of(row: dict) -> str:
    """The paper's direction of a ledger row: its `expect` where the results carry it; else read off the verdict's
    why ("in / against the paper's direction" with the sign of the difference), else the sign of the paper's own
    difference, else "higher" (a row with neither is inconclusive or has no paper effect, and for those the
    regions are symmetric: the direction changes no probability)."""
    if row.get("expect") in ("higher", "lower"):
        return row["expect"]
    d, why = finite(row.get("difference")), str(row.get("why") or "")
    if d and ("in the paper's direction" in why or "against the paper's direction" in why):
        same = "in the paper's direction" in why
        return "higher" if (d > 0) == same else "lower"
    e = finite(row.get("paper_difference"))
    return "lower" if e is not None and e < 0 else "higher"


def _kw(row: dict) -> dict:
    return {"expect": expect_of(row), "paper_effect": finite(row.get("paper_difference"))}


def _verdict(row: dict) -> str:
    return verdict_class(row.get("verdict"))


def rules_of(row: dict) -> list[dict]:
    """The learned rules a row carries (`learning`: [{method, difference, ci_low, ci_high, learned}], one per method
    with a probe); [] when absent (older results, a list that is NaN in a frame)."""
    rules = row.get("learning")
    return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list | tuple) else []


def p_learns(rule: dict, scale: float | None = None) -> float:
    """P(a run's learned rule passes: its probe CI's lower end above 0). scale None: a rerun of this run (u ~
    Normal(d, 2 se^2), its own CI d -+ z se); a number f: a run of f times the evidence (u ~ Normal(d, se^2 / f)).
    A zero-width CI (the null control: lr 0, no change on any item) is deterministic."""
    d, lo, hi = (finite(rule.get(k)) for k in ("difference", "ci_low", "ci_high"))
    if d is None or lo is None or hi is None:
        return 1.0 if rule.get("learned") else 0.0
    se = (hi - lo) / (2 * Z95)
    if se <= 0:
        return 1.0 if lo > 0 else 0.0
    if scale is None:
        return _cdf((d - Z95 * se) / (math.sqrt(2) * se))
    se_f = se / math.sqrt(scale)
    return _cdf((d - Z95 * se_f) / se_f)


def agreement(row: dict) -> float:
    """P(an independent rerun of this design gives this row's verdict); NaN where not predicted. row: a ledger row
    (difference, ci_low, ci_high, p_value, p_holm, verdict, paper_difference, expect, learning)."""
    rules, v = rules_of(row), _verdict(row)
    if v == "not_trained":
        if not rules or all(r.get("learned") for r in rules):
            return float("nan")
        return 1 - math.prod(p_learns(r) for r in rules)
    got = _inputs(row)
    if got is None or v not in PREDICTED:
        return float("nan")
    d, se, m = got
    return verdict_probs(d, math.sqrt(2) * se, se, holm_factor=m, **_kw(row))[v] * \
        math.prod(p_learns(r) for r in rules)


def two_run_agreement(row: dict, scale: float = 1.0, se: float | None = None) -> float:
    """P(two runs of a design with `scale` times this one's evidence give the same verdict), the truth taken at
    this row's difference; se: that design's standard error instead (a design that adds seeds and items in other
    proportions, tools/verdict_design.py); NaN where not predicted."""
    got = _inputs(row)
    if got is None or _verdict(row) not in PREDICTED:
        return float("nan")
    d, se_now, m = got
    se_f = se if se is not None else se_now / math.sqrt(scale)
    probs = verdict_probs(d, se_f, se_f, holm_factor=m, **_kw(row))
    q = math.prod(p_learns(r, scale) for r in rules_of(row))  # both runs learn; (1 - q)^2: neither does
    return (1 - q) ** 2 + q * q * sum(p * p for p in probs.values())


def scale_for(row: dict, target: float = TARGET, scales=SCALES) -> float:
    """The smallest evidence multiple in `scales` at which two runs agree >= target (inf: none of them; NaN: not
    predicted)."""
    if _inputs(row) is None or _verdict(row) not in PREDICTED:
        return float("nan")
    return next((float(f) for f in scales if two_run_agreement(row, f) >= target), math.inf)


def annotate(ledger: pd.DataFrame) -> pd.DataFrame:
    """The ledger with `agreement` (P(a rerun gives this verdict)) and `stable_at` (evidence multiple for two runs
    to agree >= TARGET) per row."""
    out = ledger.copy()
    rows = out.to_dict("records")
    out["agreement"] = [agreement(r) for r in rows]
    out["stable_at"] = [scale_for(r) for r in rows]
    return out


def expected_changes(ledger: pd.DataFrame, scale: float | None = None) -> dict:
    """Over the ledger's rows of kind "claim": {"claims", "predicted", "expected", "share"}: how many verdicts a
    rerun is expected to change (scale None: a rerun of this run, from `agreement`; a number: two runs of a
    design with that many times the evidence, `two_run_agreement`). Unpredicted rows (the module docstring says
    which) are counted in "claims", not in "predicted"."""
    mine = claims_only(ledger)
    rows = mine.to_dict("records")
    p = [agreement(r) if scale is None else two_run_agreement(r, scale) for r in rows]
    p = [x for x in p if math.isfinite(x)]
    expected = float(sum(1 - x for x in p))
    return {"claims": len(rows), "predicted": len(p), "expected": expected,
            "share": expected / len(p) if p else float("nan")}


def planning_table(ledger: pd.DataFrame, scales=SCALES) -> pd.DataFrame:
    """Per stage and in all: expected verdict changes between two runs at each evidence multiple (rows: stages +
    "all"; columns: "x1", "x2", ...; values: expected changes / predicted claims)."""
    groups = [(s, g) for s, g in ledger.groupby("stage", sort=True)] + [("all", ledger)]
    table = {name: {f"x{f:g}": expected_changes(g, f)["share"] for f in scales} for name, g in groups}
    return pd.DataFrame(table).T.rename_axis("stage")



def summary_line(ledger: pd.DataFrame) -> str:
    """"A rerun is expected to change 9.7 of the 34 predicted verdicts (29 %; 2 of 36 claims not predicted); two
    runs agree on >= 90 % of them at x8 the evidence"."""
    now = expected_changes(ledger)
    if not now["predicted"]:
        return "no verdict to predict (no claim with a CI)"
    line = (f"a rerun is expected to change {now['expected']:.1f} of the {now['predicted']} predicted verdicts "
            f"({now['share']:.0%}")
    missing = now["claims"] - now["predicted"]
    line += f"; {missing} of {now['claims']} claims not predicted)" if missing else ")"
    enough = next((f for f in SCALES if expected_changes(ledger, f)["share"] <= 1 - TARGET), None)
    return line + (f"; two runs disagree on <= {1 - TARGET:.0%} of them at x{enough} the evidence" if enough
                   else f"; two runs still disagree on > {1 - TARGET:.0%} of them at x{SCALES[-1]} the evidence")


def short_label(claim: str, n: int = 64) -> str:
    """A claim's label for a tick: its start and its end (robustness variants differ only at the end)."""
    claim = str(claim)
    return claim if len(claim) <= n else claim[: n // 2 - 1] + "…" + claim[-(n // 2 - 1):]


def figure(ledger: pd.DataFrame, colors: dict | None = None):
    """Left: each claim's agreement (P(a rerun gives its verdict)), coloured by verdict, the TARGET line dashed.
    Right: the share of verdicts two runs are expected to disagree on, per stage, against the evidence multiple."""
    import matplotlib.pyplot as plt

    colors = colors or {}
    mine = claims_only(ledger).reset_index(drop=True)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 2.2 + 0.24 * max(len(mine), 4)),
                                 gridspec_kw={"width_ratios": [3, 2]})
    y = list(range(len(mine)))[::-1]
    agree = mine["agreement"] if "agreement" in mine else [agreement(r) for r in mine.to_dict("records")]
    for yi, a, v in zip(y, agree, mine["verdict"], strict=True):
        if math.isfinite(a):
            ax.barh(yi, a, color=colors.get(v, "#7f7f7f"), height=0.7)
        else:
            ax.text(0.01, yi, "not predicted", va="center", fontsize=7, color="grey")
    ax.axvline(TARGET, color="black", ls="--", lw=0.8)
    ax.set_yticks(y, [f"{short_label(c)} [{s[:2]}]" for c, s in zip(mine["claim"], mine["stage"], strict=True)],
                  fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(a rerun gives the same verdict)")
    ax.set_title("How stable is each verdict?", loc="left", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors.get(v, "#7f7f7f")) for v in PREDICTED]
    ax.legend(handles, PREDICTED, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.6 / fig.get_figheight()),
              ncol=len(PREDICTED), frameon=False)
    table = planning_table(mine)
    for name, values in table.iterrows():
        bx.plot(list(SCALES), values.values, marker="o", lw=2.5 if name == "all" else 1.2, label=str(name))
    bx.axhline(1 - TARGET, color="black", ls="--", lw=0.8)
    bx.set_xscale("log", base=2)
    bx.set_xlim(SCALES[0] / 1.3, SCALES[-1] * 1.3)  # a ledger with nothing to plan (all NaN) still has a log axis
    bx.set_xticks(list(SCALES), [f"x{f}" for f in SCALES])
    bx.set_xlabel("evidence (seeds x test items) relative to this run")
    bx.set_ylabel("expected share of verdicts that change")
    bx.set_title("Planning: two runs of a larger design", loc="left", fontsize=10)
    bx.legend(fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))
    return fig
