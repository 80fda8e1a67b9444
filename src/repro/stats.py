"""Statistics of the claims: paired comparisons of two evaluated arms on the same test items, their power, and
multiplicity control.

Input of every comparison: a per-row score frame (pandas) with columns
    seed     int, or None for a deterministic start (greedy evaluation of a model that was not trained per seed)
    item     str, the test row id
    cluster  str, the image id (several items may share one image, and their scores are not independent)
    score    float (0/1 for binary metrics)

Design (issue 11 item 4). The unit of evidence is the *paired difference* D[s, i] = treat(s, i) - base(s, i) on
the same item i under the same seed s; a deterministic base (seed None) is paired with every seed of treat.
Rows are matched by (seed, item) keys, never by list position. The estimate is the mean of D over all seeds and
items. Its uncertainty has two sources, and both are resampled:
    - which images were drawn into the test set  -> resample clusters (images) with replacement;
    - which training seeds were run              -> resample seeds with replacement.
A constant per-seed difference that lives on one item is therefore *not* certain: the t-interval over seeds
(`ci95`, kept for seed-level summaries) had zero width there; the cluster bootstrap does not.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

import numpy as np
import pandas as pd

_COLUMNS = ("seed", "item", "cluster", "score")
_EXACT_LIMIT = 200_000  # enumerated (seed multiset x cluster multiset) pairs above which n_boot=0 refuses
_TIE = 1e-12  # float tolerance when comparing bootstrap statistics to the estimate (exact ties are common)
TEST_BOOT = "paired bootstrap (clusters x seeds)"
TEST_MCNEMAR = "McNemar (exact)"
CLAIM_COLUMNS = ["paper", "claim", "kind", "metric", "comparison", "difference", "ci_low", "ci_high", "p_value",
                 "p_holm", "mde", "mde_planned", "n_items", "seeds", "per_seed", "verdict", "learning"]


# ----------------------------------------------------------------------------------------------- seed-level
def ci_text(difference: float, low: float, high: float) -> str:
    """A difference with its CI as every table and `why` prints it: "+0.018 [-0.004, +0.040]"."""
    return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"


def ci95(values) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval) of the finite values; half-width nan for fewer than 2.
    Over seeds only: it ignores test-set sampling, so use it to summarise arms, not to judge claims."""
    from scipy import stats

    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


# ----------------------------------------------------------------------------------------------- pairing
@dataclass(frozen=True)
class Paired:
    """The paired design. d: [S, N] differences (seed x item), items sorted by (cluster, item);
    cluster_of: [N] cluster index of each item; sizes: [C] items per cluster; seeds: the S seed labels."""

    d: np.ndarray
    cluster_of: np.ndarray
    sizes: np.ndarray
    seeds: list
    items: list
    clusters: list
    treat_scores: np.ndarray  # [S, N], aligned with d (McNemar needs the two arms, not only their difference)
    base_scores: np.ndarray

    def cluster_sums(self) -> np.ndarray:
        """T: [S, C] sum of the differences of each cluster's items, per seed."""
        t = np.zeros((self.d.shape[0], len(self.sizes)))
        np.add.at(t.T, self.cluster_of, self.d.T)
        return t


def _seed_key(x):
    return None if x is None or pd.isna(x) else int(x)


def _check(df: pd.DataFrame, name: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame with columns {list(_COLUMNS)}, got {type(df).__name__}")
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: score frame lacks columns {missing} (needs {list(_COLUMNS)})")
    if len(df) == 0:
        raise ValueError(f"{name}: score frame is empty")
    out = pd.DataFrame({"seed": [_seed_key(s) for s in df["seed"].astype(object)], "item": df["item"].astype(str),
                        "cluster": df["cluster"].astype(str), "score": pd.to_numeric(df["score"], errors="coerce")})
    bad = out["score"].isna() | ~np.isfinite(out["score"].to_numpy(dtype=float))
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} non-finite score(s), e.g. item {out['item'][bad].iloc[0]!r}")
    det = out["seed"].isna()
    if det.any() and not det.all():
        raise ValueError(f"{name}: mixes seed None (deterministic) with integer seeds")
    dup = out.duplicated(["seed", "item"])
    if dup.any():
        r = out[dup].iloc[0]
        raise ValueError(f"{name}: duplicate (seed, item) row ({r['seed']}, {r['item']!r})")
    clusters = out.groupby("item")["cluster"].nunique()
    if (clusters > 1).any():
        raise ValueError(f"{name}: item {clusters[clusters > 1].index[0]!r} has more than one cluster")
    return out


def _matrix(df: pd.DataFrame, seeds: list, items: list, name: str) -> np.ndarray:
    """[len(seeds), len(items)] scores; a deterministic frame (seed None) is repeated for every seed."""
    det = df["seed"].isna().all()
    rows = []
    for s in seeds:
        sub = df if det else df[df["seed"] == s]
        got = sub.set_index("item")["score"]
        missing = [i for i in items if i not in got.index]
        if missing:
            raise ValueError(f"{name}: seed {s} lacks {len(missing)} item(s) of the other arm, e.g. {missing[0]!r}")
        rows.append(got.reindex(items).to_numpy(dtype=float))
    return np.stack(rows)


def pair(treat: pd.DataFrame, base: pd.DataFrame) -> Paired:
    """Match two score frames by (seed, item). Both arms must cover the same items with the same clusters; two
    seeded arms must have the same seeds; a deterministic arm (seed None) pairs with every seed of the other."""
    t, b = _check(treat, "treat"), _check(base, "base")
    t_det, b_det = t["seed"].isna().all(), b["seed"].isna().all()
    t_seeds = sorted(set(t["seed"].dropna().astype(int)))
    b_seeds = sorted(set(b["seed"].dropna().astype(int)))
    if not t_det and not b_det and t_seeds != b_seeds:
        raise ValueError(f"treat seeds {t_seeds} != base seeds {b_seeds}: pair arms by seed")
    seeds = t_seeds if not t_det else (b_seeds if not b_det else [None])
    t_items, b_items = set(t["item"]), set(b["item"])
    if t_items != b_items:
        odd = sorted(t_items ^ b_items)
        raise ValueError(f"treat and base cover different items ({len(odd)} unmatched, e.g. {odd[0]!r})")
    cl_t = t.drop_duplicates("item").set_index("item")["cluster"]
    cl_b = b.drop_duplicates("item").set_index("item")["cluster"]
    diff = [i for i in cl_t.index if cl_t[i] != cl_b[i]]
    if diff:
        raise ValueError(f"item {diff[0]!r}: cluster {cl_t[diff[0]]!r} in treat but {cl_b[diff[0]]!r} in base")
    order = sorted(cl_t.index, key=lambda i: (cl_t[i], i))  # sorted keys: row order of the inputs cannot matter
    clusters = sorted(set(cl_t))
    cidx = {c: k for k, c in enumerate(clusters)}
    cluster_of = np.array([cidx[cl_t[i]] for i in order])
    ts, bs = _matrix(t, seeds, order, "treat"), _matrix(b, seeds, order, "base")
    return Paired(d=ts - bs, cluster_of=cluster_of, sizes=np.bincount(cluster_of, minlength=len(clusters)),
                  seeds=seeds, items=order, clusters=clusters, treat_scores=ts, base_scores=bs)


# ----------------------------------------------------------------------------------------------- bootstrap
def _stat(v: np.ndarray, w: np.ndarray, t: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean difference of resampled designs. v: [B, S] seed counts, w: [B, C] cluster counts, t: [S, C] cluster
    sums, sizes: [C]. Each drawn (seed, cluster) copy contributes its items: sum v_s w_c T_sc / (S * sum w_c n_c)."""
    n_seeds = t.shape[0]
    return np.einsum("bc,bc->b", v @ t, w) / (n_seeds * (w @ sizes))


def _multisets(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All count vectors of n draws with replacement from n things, with their multinomial probabilities."""
    counts = np.array([np.bincount(c, minlength=n) for c in itertools.combinations_with_replacement(range(n), n)])
    logp = math.lgamma(n + 1) - np.sum([[math.lgamma(k + 1) for k in row] for row in counts], axis=1) - n * math.log(n)
    return counts, np.exp(logp)


def bootstrap(p: Paired, n_boot: int = 2000, rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two-level bootstrap distribution of the mean difference: (values [K], weights [K] summing to 1).
    n_boot > 0: Monte Carlo, clusters and seeds drawn independently with replacement (equal weights).
    n_boot = 0: exact — every multiset of clusters x every multiset of seeds, with its multinomial probability
    (for tiny designs; refused above a few hundred thousand combinations)."""
    t, sizes = p.cluster_sums(), p.sizes
    n_s, n_c = t.shape
    if n_boot == 0:
        n_comb = math.comb(2 * n_c - 1, n_c) * math.comb(2 * n_s - 1, n_s)
        if n_comb > _EXACT_LIMIT:
            raise ValueError(f"n_boot=0: exact enumeration needs {n_comb} combinations ({n_c} clusters, {n_s} seeds),"
                             f" over {_EXACT_LIMIT}; use n_boot > 0")
        (w, pw), (v, pv) = _multisets(n_c), _multisets(n_s)
        vals = (v @ t @ w.T) / (n_s * (w @ sizes))[None, :]  # [Ks, Kc]
        return vals.ravel(), np.outer(pv, pw).ravel()
    if n_boot < 0:
        raise ValueError(f"n_boot={n_boot}: must be > 0 (Monte Carlo) or 0 (exact enumeration)")
    rng = np.random.default_rng(rng_seed)
    out = np.empty(n_boot)
    for lo in range(0, n_boot, 500):  # chunks bound memory at 500 x C counts
        b = min(500, n_boot - lo)
        w = rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=b)
        v = rng.multinomial(n_s, np.full(n_s, 1.0 / n_s), size=b)
        out[lo:lo + b] = _stat(v, w, t, sizes)
    return out, np.full(n_boot, 1.0 / n_boot)


def _quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Inverse of the weighted empirical CDF: the smallest value whose cumulative weight reaches q (numpy's
    'inverted_cdf' for equal weights), so the exact and Monte Carlo modes share one definition."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    k = int(np.searchsorted(cum, q * cum[-1] - _TIE, side="left"))
    return float(values[order][min(k, len(values) - 1)])


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p on the discordant pairs: b = treat right & base wrong, c = the reverse.
    Under H0 each discordant pair is a fair coin: p = min(1, 2 * P[Binom(b + c, 1/2) <= min(b, c)])."""
    if b + c == 0:
        return 1.0
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n  # exact integer sum, no scipy import
    return float(min(1.0, 2.0 * tail))


def _is_binary(p: Paired) -> bool:
    both = np.concatenate([p.treat_scores.ravel(), p.base_scores.ravel()])
    return bool(np.isin(both, (0.0, 1.0)).all())


def compare(treat: pd.DataFrame, base: pd.DataFrame, *, n_boot: int = 2000, rng_seed: int = 0, alpha: float = 0.05,
            binary: bool | None = None) -> dict:
    """Paired comparison mean(treat) - mean(base) on the same items (see the module docstring for the design).

    CI: percentile interval (alpha/2, 1 - alpha/2) of the two-level bootstrap (clusters x seeds).
    p-value: two-sided, from the bootstrap distribution centred at the estimate (it stands in for the null
    distribution): P*(|theta* - theta| >= |theta|), counted as (1 + hits) / (1 + n_boot) in Monte Carlo mode so
    it is never 0; exact probabilities with n_boot = 0. For a binary metric with a single seed and one item per
    image the p-value is McNemar's exact test on the discordant items instead (the items are then independent;
    the CI still resamples images). binary=None detects it (every score 0 or 1).
    """
    p = pair(treat, base)
    vals, wts = bootstrap(p, n_boot=n_boot, rng_seed=rng_seed)
    ones = np.ones((1, len(p.seeds))), np.ones((1, len(p.sizes)))
    est = float(_stat(ones[0], ones[1], p.cluster_sums(), p.sizes)[0])  # same formula as the resamples
    lo, hi = _quantile(vals, wts, alpha / 2), _quantile(vals, wts, 1 - alpha / 2)
    is_bin = _is_binary(p) if binary is None else binary
    # McNemar counts items as independent: only right when each image has one item (several rows of one image,
    # e.g. Zhu's three question kinds, are correlated and would make its p too small; the bootstrap's is not)
    if is_bin and len(p.seeds) == 1 and bool((p.sizes == 1).all()):
        t, b = p.treat_scores[0], p.base_scores[0]
        if not np.isin(np.concatenate([t, b]), (0.0, 1.0)).all():
            raise ValueError("compare(binary=True): scores must be 0 or 1 for McNemar's test")
        p_value, test = mcnemar_exact(int(((t == 1) & (b == 0)).sum()), int(((t == 0) & (b == 1)).sum())), TEST_MCNEMAR
    else:
        hits = float(wts[np.abs(vals - est) >= abs(est) - _TIE].sum())
        p_value = (1 + round(hits * n_boot)) / (1 + n_boot) if n_boot > 0 else min(1.0, hits)
        test = TEST_BOOT
    per_seed = [float(x) for x in p.d.mean(axis=1)]  # each seed's mean difference over all items
    both = (p.treat_scores, p.base_scores)
    floor, ceiling = (float(np.mean((both[0] == v) & (both[1] == v))) if is_bin else None for v in (0.0, 1.0))
    return {"difference": est, "ci_low": lo, "ci_high": hi, "p_value": float(p_value), "mde": observed_mde(p),
            "n_items": len(p.items), "n_clusters": len(p.clusters), "seeds": len(p.seeds), "per_seed": per_seed,
            "floor": floor, "ceiling": ceiling,
            "test": test, "seed_ids": list(p.seeds), "n_boot": n_boot}


# ----------------------------------------------------------------------------------------------- power
def _z(alpha: float, power: float) -> float:
    """z_{1-alpha/2} + z_{power} (2.802 at 0.05 and 0.8)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha={alpha}, power={power}: both must lie in (0, 1)")
    z = statistics.NormalDist().inv_cdf
    return z(1 - alpha / 2) + z(power)


def se_parts(p: Paired) -> tuple[float, float]:
    """(SE_c, SE_s): the cluster (test images) and seed parts of `se_paired`, whose root sum of squares it is.
    Which part dominates says what buys power: more test items shrink SE_c, more training seeds SE_s."""
    n_c, n_s = len(p.sizes), len(p.seeds)
    dbar = float(p.d.mean())
    t = p.cluster_sums().mean(axis=0)  # [C] seed-averaged cluster sums
    n = float(p.sizes.sum())
    se_c2 = n_c / (n_c - 1) * float(((t - p.sizes * dbar) ** 2).sum()) / n**2 if n_c > 1 else 0.0
    se_s2 = float(p.d.mean(axis=1).var(ddof=1)) / n_s if n_s > 1 else 0.0
    return math.sqrt(se_c2), math.sqrt(se_s2)


def se_paired(p: Paired) -> float:
    """Standard error of the mean paired difference, from two variance components:
        cluster part: SE_c^2 = C / (C - 1) * sum_c (T_c - n_c * dbar)^2 / N^2
            (T_c: sum over cluster c's items of the seed-averaged difference, n_c its items, N = sum n_c, dbar the
            estimate — the usual cluster-robust variance of a ratio mean; with one item per cluster it is
            var(d_i, ddof=1) / N);
        seed part:    SE_s^2 = var_s(m_s, ddof=1) / S  (m_s: mean difference of seed s over all items).
    SE = sqrt(SE_c^2 + SE_s^2). The seed x item interaction enters both parts, so SE is slightly conservative.
    With one cluster the cluster part is 0; with one seed the seed part is 0 (not estimable: it then covers
    test-set sampling only)."""
    return math.hypot(*se_parts(p))


def _mde(p: Paired, alpha: float, power: float) -> float:
    return _z(alpha, power) * se_paired(p)


def mde_no_difference(p: Paired, alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE when no item differs (two arms that answer alike everywhere). The plug-in SE is then 0, and an MDE of 0
    would claim a perfectly powered test where the data say nothing about the variance; so we bound it instead.
    With scores in [0, 1] each cluster's mean difference m_c lies in [-1, 1], so var(m_c) <= E[m_c^2] <=
    P(m_c != 0); none of C clusters differed, so P(m_c != 0) <= 3 / C at 95 % confidence (the rule of three), and
    SE <= sqrt(3 / C / C) = sqrt(3) / C: MDE = (z_{1-alpha/2} + z_{power}) * sqrt(3) / C (0.024 for 200 clusters).
    NaN for scores outside [0, 1] (e.g. log lengths), where no such bound holds."""
    scores = np.concatenate([np.ravel(p.treat_scores), np.ravel(p.base_scores)])
    if not len(p.sizes) or not np.all((scores >= 0) & (scores <= 1)):
        return float("nan")
    return _z(alpha, power) * math.sqrt(3.0) / len(p.sizes)


def observed_mde(p: Paired, alpha: float = 0.05, power: float = 0.8) -> float:
    """The MDE this evaluation had: the plug-in MDE (`se_paired`), but never below the rule-of-three bound of an
    evaluation in which no cluster differed (`mde_no_difference`, for scores in [0, 1]). The plug-in alone is not
    monotone: one discordant item of 200 gives 0.014 while none gives 0.024, so an arm that hardly changed would
    look better powered than one that changed nothing. With the floor, more disagreement never lowers the MDE
    (up to half the clusters discordant, where the plug-in rises with every discordant item)."""
    floor = mde_no_difference(p, alpha, power)  # NaN for unbounded scores (log lengths): no floor there
    if not np.any(p.d):
        return floor
    plug = _mde(p, alpha, power)
    return plug if not math.isfinite(floor) else max(plug, floor)


def mde(treat: pd.DataFrame, base: pd.DataFrame, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of this paired design: (z_{1-alpha/2} + z_{power}) * SE, SE from `se_paired`
    (cluster-level and seed-level variance of the paired differences). At alpha 0.05 and power 0.8 the factor
    is 1.960 + 0.842 = 2.802."""
    return _mde(pair(treat, base), alpha, power)


def mde_planned(sd: float, n_clusters: int, *, alpha: float = 0.05, power: float = 0.8, seed_sd: float = 0.0,
                n_seeds: int = 1) -> float:
    """Planned MDE: (z_{1-alpha/2} + z_{power}) * sqrt(sd^2 / n_clusters + seed_sd^2 / n_seeds).
    sd: standard deviation of the per-cluster mean paired difference (per item when each image has one item);
    seed_sd: standard deviation across seeds of the whole-test mean difference (0 for deterministic arms)."""
    if n_clusters < 1 or n_seeds < 1 or sd < 0 or seed_sd < 0:
        raise ValueError(f"mde_planned: need sd, seed_sd >= 0 and n_clusters, n_seeds >= 1 (got sd={sd}, "
                         f"n_clusters={n_clusters}, seed_sd={seed_sd}, n_seeds={n_seeds})")
    return _z(alpha, power) * math.sqrt(sd**2 / n_clusters + seed_sd**2 / n_seeds)


def n_for_mde(sd: float, target_mde: float, *, alpha: float = 0.05, power: float = 0.8, seed_sd: float = 0.0,
              n_seeds: int = 1) -> int:
    """Smallest number of clusters whose planned MDE (`mde_planned`) is <= target_mde."""
    z = _z(alpha, power)
    room = (target_mde / z) ** 2 - seed_sd**2 / n_seeds
    if target_mde <= 0 or room <= 0:
        raise ValueError(f"n_for_mde: target {target_mde} is not reachable with n_seeds={n_seeds} "
                         f"(seed variance alone gives MDE {z * seed_sd / math.sqrt(n_seeds):.4f}); add seeds")
    n = max(1, math.ceil(sd**2 / room - 1e-9))
    while mde_planned(sd, n, alpha=alpha, power=power, seed_sd=seed_sd, n_seeds=n_seeds) > target_mde:  # float edge
        n += 1
    return n


def paired_binary_sd(p_treat_only: float, p_base_only: float) -> float:
    """SD of a paired 0/1 difference (values -1, 0, 1) when a share p_treat_only of items is right only under
    treat and p_base_only only under base: sqrt(p10 + p01 - (p10 - p01)^2). For planning with `n_for_mde`."""
    if p_treat_only < 0 or p_base_only < 0 or p_treat_only + p_base_only > 1:
        raise ValueError(f"paired_binary_sd: shares {p_treat_only}, {p_base_only} must be >= 0 and sum to <= 1")
    return math.sqrt(p_treat_only + p_base_only - (p_treat_only - p_base_only) ** 2)


# ----------------------------------------------------------------------------------------------- claims
def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order: with the m finite p sorted ascending,
    adj_(k) = max_{j <= k} min(1, (m - j + 1) * p_(j)). NaN/None pass through and do not count in m."""
    p = [float("nan") if x is None else float(x) for x in p_values]
    idx = sorted((i for i, x in enumerate(p) if not math.isnan(x)), key=lambda i: p[i])
    out, running = list(p), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * p[i]))
        out[i] = running
    return out


VERDICTS = ("reproduced", "opposite", "below_paper", "inconclusive", "not_trained")
KINDS = ("claim", "check", "control")


def verdict_class(verdict) -> str:
    """The verdict's class, whatever the results' vintage: "inconclusive (CI contains 0)" -> "inconclusive"; older
    results' "not trained" -> "not_trained"; anything else -> "unknown"."""
    v = str(verdict or "").strip().lower().replace("not trained", "not_trained").replace("below paper", "below_paper")
    return next((cls for cls in VERDICTS if v.startswith(cls)), "unknown")
FLOOR_SHARE = 0.95  # a claim whose two arms both score 0 (or both 1) on this share of items becomes a check


def verdict(result: dict, expect: str = "higher", trained: bool = True, alpha: float = 0.05,
            p_key: str = "p_holm", paper_effect: float | None = None) -> str:
    """The verdict of one paired comparison, in the paper's direction (`expect`):
        not_trained   an arm did not learn (no test);
        reproduced    result[p_key] < alpha and the CI excludes 0 on the paper's side;
        opposite      result[p_key] < alpha and the CI excludes 0 on the other side;
        below_paper   neither, and the CI's end on the paper's side lies below the paper's own effect
                      (`paper_effect`, signed as the paper reported it): a paper-sized effect is ruled out;
        inconclusive  otherwise (the CI holds 0 and, where the paper reports one, the paper's effect).
    A paper effect of 0 or against `expect` cannot rule anything out: no below_paper then."""
    if expect not in ("higher", "lower"):
        raise ValueError(f"verdict: expect={expect!r}, must be 'higher' or 'lower'")
    if not trained:
        return "not_trained"
    if p_key not in result:
        raise KeyError(f"verdict: result has no {p_key!r} (Holm-adjust with claims_frame, or pass p_key='p_value')")
    vals = [result["ci_low"], result["ci_high"], result[p_key]]
    if any(v is None or not math.isfinite(float(v)) for v in vals):
        return "inconclusive"
    lo, hi, pv = (float(v) for v in vals)
    sign = 1 if expect == "higher" else -1
    lo, hi = sorted((sign * lo, sign * hi))  # in the paper's direction: "reproduced" means lo > 0
    if pv < alpha and lo > 0:
        return "reproduced"
    if pv < alpha and hi < 0:
        return "opposite"
    effect = None if paper_effect is None else float(paper_effect)
    if effect is not None and math.isfinite(effect) and sign * effect > 0 and hi < sign * effect:
        return "below_paper"
    return "inconclusive"


def claims_frame(claims: list[dict], alpha: float = 0.05) -> pd.DataFrame:
    """One row per claim: Holm-adjusted p within each (paper, kind) family (p_holm) and the verdict. Claims of
    arms that did not learn ("trained": False) are not tests: they leave the Holm family (p_holm NaN) and read
    "not_trained". A row's kind says what it is: "claim" (a paper's claim), "check" (a reward did what it pays
    for, or a start that saw the task beats one that did not: never counted as a reproduced claim) or "control"
    (a null or planted arm of the pipeline); each kind is its own Holm family, so checks and controls neither
    dilute nor borrow the claims' multiplicity. A claim whose two arms both sit at the floor (or the ceiling) on
    FLOOR_SHARE of the items (compare's floor / ceiling) becomes a check: a difference there is no evidence either
    way (stage 06's held-out abnormal images where both arms score 0); its `pinned` says why. Optional fields per
    claim: expect ("higher" default), trained (True), kind ("claim"), paper_effect (the paper's difference, for
    below_paper), why. Columns: CLAIM_COLUMNS, then expect, trained, why and any other fields given."""
    if not claims:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    rows = []
    for k, c in enumerate(claims):
        missing = [f for f in ("paper", "claim", "p_value", "ci_low", "ci_high") if f not in c]
        if missing:
            raise ValueError(f"claims_frame: claim {k} ({c.get('claim', '?')!r}) lacks fields {missing}")
        if c.get("kind", "claim") not in KINDS:
            raise ValueError(f"claims_frame: claim {k} ({c['claim']!r}) has kind {c['kind']!r}, expected one of "
                             f"{KINDS}")
        rows.append({"expect": "higher", "trained": True, "kind": "claim", "paper_effect": None, "pinned": None, **c})
        for side in ("floor", "ceiling"):  # both arms pinned at 0 (or 1) on nearly every item: nothing to compare
            share = c.get(side)
            if rows[-1]["kind"] == "claim" and share is not None and math.isfinite(share) and share >= FLOOR_SHARE:
                rows[-1]["kind"], rows[-1]["pinned"] = "check", f"{side}: both arms score {side == 'ceiling':d} " \
                                                                f"on {share:.0%} of the items"
    df = pd.DataFrame(rows)
    df["p_holm"] = float("nan")
    for _, grp in df.groupby(["paper", "kind"], sort=False):
        tested = grp.index[grp["trained"].astype(bool)]
        df.loc[tested, "p_holm"] = holm(df.loc[tested, "p_value"].tolist())
    df["verdict"] = [verdict(r, r["expect"], bool(r["trained"]), alpha,
                             paper_effect=None if pd.isna(r["paper_effect"]) else r["paper_effect"])
                     for r in df.to_dict("records")]
    for col in CLAIM_COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in ("expect", "trained", "why") if c in df.columns]
    rest = [c for c in df.columns if c not in CLAIM_COLUMNS and c not in extra]
    return df[CLAIM_COLUMNS + extra + rest].reset_index(drop=True)
