"""MMedPO (docs/methods.md §3): DPO on the stage-03 text pairs (unweighted) vs MMedPO's clinically weighted DPO
on text + lesion-noised visual pairs, both from the SFT model. With `equal_text_exposure` both arms see the same
number of text pairs (MMedPO's visual pairs come on top), so the comparison is not confounded by how many text
pairs each arm saw (trainer knob of repro.train.dpo).

Data (`mmedpo_data`, repro.data.protocols): "synthmed" (default) or "real" — the VQA and report test (and the
starting point, on train rows: that folder has no validation split) then come from the VQA-RAD + SLAKE + IU-Xray
folder stage 01 writes; per-dataset scores from the rows' `source`. The preference set stays data_dir/preference
(stage 03 curates it from the folder its own mmedpo_data names).

Weights (`weight_mode`, default "raw"): MMedPO's text weights are recomputed from each pair's stored `score` with
clinical.dpo_weights, so a weight mode needs no new curation. "raw" is the release's operational definition (s
itself; the printed clip rule is the constant 0.75 on [0, 1], i.e. DPO with a scaled loss); "normalize" is stage
05's sensitivity row. The mode reaches the arm's key through Job.extra["weights"] of the weighted arms only, so
DPO's arm (unweighted) keeps its key when the mode changes.

Matched update size (stage 05's "global noise (matched KL)"): Job.extra["match_kl"] names a finished arm; training
stops at the first logged step where this arm's KL, as its record will report it (common.summarize_curve's kl_end
over the curve so far), reaches that arm's kl_end (`matched_step`, `kl_stop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from repro.papers import common, continued, measure, probe

PAPER = "mmedpo"
PREFIX = "mmedpo_"
METHODS = ("DPO", "MMedPO")


@dataclass
class MMedPOConfig:
    """Every knob the MMedPO run reads (params keys: mmedpo_<name>)."""

    eval_limit: int = 40        # test rows of each of vqa and report (0 = all)
    start_rows: int = 32        # validation VQA rows for the starting point (closed questions are scored)
    start_k: int = 4            # samples per item for pass@k (DPO has no group; 4 = the PPO papers' k)
    steps: int = 2
    batch_size: int = 4         # pairs per step
    lr: float = 5e-5
    beta: float = 0.1           # DPO temperature (the released code's default)
    equal_text_exposure: bool = True
    min_kl: float = 0.01        # nats per sequence of |log pi - log pi_ref| (from TRL's implicit rewards / beta)
    probe_pairs: int = 16       # preference pairs held out of training for the probe (whole images; 0 = none)
    probe_rows: int = 16        # closed validation VQA rows of the probe's target metric (0 = all)
    probe_k: int = 4            # sampled answers per target row
    probe_points: int = 3       # probe points after step 0 (repro.papers.probe.points)
    data: str = "synthmed"      # synthmed | real: the test data (repro.data.protocols knob mmedpo_data)
    continued_sft: bool = False  # also run the compute-matched continued-SFT arm (repro.papers.continued)
    weight_mode: str = "raw"    # text weights from `score`: raw (the release) | normalize | literal | minmax

    KEY_IF_SET: ClassVar[dict] = {"data": "synthmed"}  # in an arm's cache key only when not the default
    # continued_sft adds an arm; weight_mode enters the weighted arms' keys through Job.extra["weights"] (weights()),
    # so the unweighted DPO and continued-SFT arms stay cached when it changes
    NOT_IN_KEY: ClassVar[tuple] = ("continued_sft", "weight_mode")

    def __post_init__(self):
        from repro.config import ConfigError
        from repro.rewards import clinical

        if self.weight_mode not in clinical.WEIGHT_MODES:
            raise ConfigError(f"04_rl: key 'mmedpo_weight_mode' has value {self.weight_mode!r}, expected one of "
                              f"{list(clinical.WEIGHT_MODES)}")

    @classmethod
    def from_params(cls, params) -> MMedPOConfig:
        return common.from_params(cls, params, PREFIX)


def jobs(cfg: MMedPOConfig, stage: common.Stage) -> list[common.Job]:
    d = common.protocol_extra("mmedpo_data", cfg.data)
    start = common.sft_eval_jobs(PAPER, cfg, stage, {"model": "sft", "tasks": ["vqa", "report"],
                                                     "limit": cfg.eval_limit, **d})
    return start + [common.Job(PAPER, m, s, "repro.papers.mmedpo:arm", cfg, stage,
                               {**d, **(weights(cfg) if m == "MMedPO" else {})})
                    for s in stage.seeds for m in METHODS] + continued.jobs(PAPER, cfg, stage, d)


def weights(cfg: MMedPOConfig) -> dict:
    """The Job.extra of a weighted arm: its text weight mode (module docstring)."""
    return {"weights": cfg.weight_mode}


def start_job(cfg: MMedPOConfig, stage: common.Stage) -> common.Job:
    d = common.protocol_extra("mmedpo_data", cfg.data)
    return common.Job(PAPER, "start", stage.seed, "repro.papers.measure:start_arm", cfg, stage,
                      {"model": "sft", "task": "vqa", "metric": "closed_correct", "k": cfg.start_k,
                       "limit": cfg.start_rows, **d, **({"split": "train"} if d else {})})


def dpo_curve(history: list[dict], beta: float):
    """DPO log -> step, reward (implicit reward margin), kl (mean |log-ratio| of chosen and rejected, nats per
    sequence = (|rewards/chosen| + |rewards/rejected|) / (2 beta)), length (None)."""
    import pandas as pd

    out = []
    for h in history:
        if "loss" not in h:
            continue
        ch, rj = h.get("rewards/chosen"), h.get("rewards/rejected")
        kl = (abs(ch) + abs(rj)) / (2 * beta) if ch is not None and rj is not None else None
        out.append({"step": h["step"], "reward": h.get("rewards/margins"), "kl": kl, "length": None})
    return pd.DataFrame(out, columns=["step", "reward", "kl", "length"])


def set_weights(pref, values: list[float]):
    """The preference set with its weight column replaced (no image is decoded)."""
    return pref.remove_columns("weight").add_column("weight", [float(w) for w in values])


def reweight_text(pref, scores: list[float], mode: str):
    """The text pairs' weights recomputed from `scores` (one per text pair, in set order) with weight mode `mode`
    (data.preference.weights_for, as stage 03 computes them); visual pairs keep theirs."""
    from repro.data.preference import weights_for

    new = iter(weights_for(scores, mode))
    return set_weights(pref, [next(new) if k == "text" else w for k, w in zip(pref["kind"], pref["weight"],
                                                                               strict=True)])


def text_scores(pref) -> list[float]:
    """The stored clinical score `score` of each text pair, in set order."""
    return [s for k, s in zip(pref["kind"], pref["score"], strict=True) if k == "text"]


# ----------------------------------------------------------------------------------------------- matched KL
def matched_step(curve, target: float) -> tuple[int, float] | None:
    """The first logged step at which the arm's kl_end, computed on the curve up to that step exactly as its record
    computes it (common.summarize_curve: the mean of the last few logged KLs), reaches `target` -> (step, that
    kl_end); None when it never does. curve: DataFrame[step, kl] (dpo_curve) or a list of (step, kl)."""
    import pandas as pd

    df = curve if isinstance(curve, pd.DataFrame) else pd.DataFrame(list(curve), columns=["step", "kl"])
    df = df.reset_index(drop=True)
    for n in range(1, len(df) + 1):
        kl = common.summarize_curve(df.iloc[:n].assign(reward=None), 0.0)["kl_end"]
        if kl is not None and kl >= target:
            return int(df["step"].iloc[n - 1]), float(kl)
    return None


def match_target(job: common.Job) -> float:
    """The kl_end of the arm Job.extra["match_kl"] names ({"arm": folder name, "key": its key}): it must be on disk
    with that key (stage 04's MMedPO arm; stage 05 runs it first when it is not)."""
    import json

    spec = job.extra["match_kl"]
    f = common.out_root(job.stage) / PAPER / spec["arm"] / "arm.json"
    rec = json.loads(f.read_text()) if f.exists() else {}
    if rec.get("key") != spec["key"] or rec.get("kl_end") is None:
        raise FileNotFoundError(f"matched KL: the target arm {f.parent} is not finished under key {spec['key']}: "
                                "run its stage-04 arm first")
    return float(rec["kl_end"])


def kl_stop(target: float, beta: float, recorder=None, processor=None):
    """A TrainerCallback that stops training at `matched_step` of the logged curve (and scores the probe there, so
    the learned rule reads the point the arm stopped at). Its `.hit` is (step, kl_end) once it stopped."""
    from transformers import TrainerCallback

    class KLStop(TrainerCallback):
        hit = None

        def on_log(self, args, state, control, model=None, **kw):
            hit = matched_step(dpo_curve(state.log_history, beta), target)
            if hit is None or self.hit is not None:
                return
            self.hit = hit
            if recorder is not None and model is not None:
                recorder.at = sorted({*recorder.at, hit[0]})
                recorder(hit[0], model, processor)
            control.should_training_stop = True

    return KLStop()


def held_out_images(ids: list[str], n_pairs: int) -> set[str]:
    """Images whose pairs are held out of training for the probe: images in the order of a hash of their id (a
    fixed draw, unrelated to the data order) until their pairs number at least n_pairs."""
    import hashlib
    from collections import Counter

    count = Counter(ids)
    held, total = set(), 0
    for i in sorted(count, key=lambda x: hashlib.sha1(x.encode()).hexdigest()):
        if total >= n_pairs:
            break
        held.add(i)
        total += count[i]
    return held


def probe_spec(job: common.Job, held, weighted: bool, ref) -> probe.PairSpec:
    """The held-out pairs the arm's own objective sees (DPO: text pairs; MMedPO: text and visual) and closed-VQA
    accuracy on validation rows."""
    from repro import evaluation as ev

    cfg: MMedPOConfig = job.cfg
    pairs = [r for r in held if weighted or r["kind"] == "text"]
    rows = probe.val_rows(measure.job_data_dir(job), "vqa", cfg.probe_rows,
                          split="train" if job.extra.get("data") else "val",
                          where=lambda r: r.get("answer_type") == "closed")
    target = probe.Spec(task="vqa", rows=rows, reward_fns=[], metric="closed_correct", k=cfg.probe_k,
                        max_new_tokens=ev.MAX_NEW_TOKENS["vqa"], batch_size=job.stage.eval_batch_size)
    return probe.PairSpec(pairs=pairs, ref=ref, beta=cfg.beta, target=target)


def arm(job: common.Job):
    import datasets

    from repro.models import load_vlm
    from repro.train import dpo

    cfg: MMedPOConfig = job.cfg
    pref_dir = common.data_dir(job.stage) / "preference"
    if not (pref_dir / "dataset_dict.json").exists():
        raise FileNotFoundError(f"preference set {pref_dir} not found: run stage 03 first")
    pref = datasets.load_from_disk(str(pref_dir))["train"]
    held_ids = held_out_images([str(i) for i in pref["id"]], cfg.probe_pairs) if cfg.probe_pairs else set()
    held = [r for r in pref if str(r["id"]) in held_ids]
    pref = pref.filter(lambda i: str(i) not in held_ids, input_columns="id")
    weighted = job.method == "MMedPO" or bool(job.extra.get("weights"))  # MMedPO and its stage-05 knob rows
    if job.extra.get("weights"):  # the weighted arms' text weights, from the stored score (module docstring)
        pref = reweight_text(pref, text_scores(pref), job.extra["weights"])
    if job.extra.get("pref"):  # a stage-05 ablation: "module:function"(pref, job) -> (its preference set, weighted)
        pref, weighted = common.resolve(job.extra["pref"])(pref, job)
    sft = common.model_dir(job.stage, "sft", job.seed)
    kw = dict(weighted=weighted, max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, beta=cfg.beta,
              seed=job.seed, save_steps=max(cfg.steps, 1), equal_text_exposure=cfg.equal_text_exposure)
    rec, callbacks = None, []
    if held:
        ref, processor = load_vlm(sft)
        kinds = pref["kind"]
        n_text = sum(k == "text" for k in kinds)
        steps = (dpo.text_exposure_steps(cfg.steps, n_text, len(pref)) if weighted and cfg.equal_text_exposure
                 else cfg.steps)
        rec = probe.Recorder(probe_spec(job, held, weighted, ref.eval()), probe.points(steps, cfg.probe_points),
                             job.folder / "probe.csv", scorer=probe.score_pairs, shared=common.step0_file(job))
        callbacks = [rec.trl(processor)]
    stop = None
    if job.extra.get("match_kl"):
        target = match_target(job)
        stop = kl_stop(target, cfg.beta, rec, processor if held else None)
        callbacks = callbacks + [stop]
    info = dpo.train(sft, job.folder / "train", pref, **common.supported_kwargs(dpo.train, callbacks=callbacks, **kw))
    curve = dpo_curve(info["log_history"], cfg.beta)
    out, rows = measure.finish_arm(job, info["final_dir"], curve, cfg.min_kl, ["vqa", "report"], cfg.eval_limit,
                                   probe_table=rec.table() if rec else None, log=info["log_history"])
    if stop is not None:  # what was matched: the target, where the arm stopped, its planned length
        hit = matched_step(curve, target)  # from the saved log, so a cached or resumed run reports the same
        out["matched_kl"] = {"target": target, "reached": hit is not None, "step": hit[0] if hit else None,
                             "kl": hit[1] if hit else out.get("kl_end"), "planned_steps": info.get("steps")}
    return out, rows


def run(cfg: MMedPOConfig, stage: common.Stage, only_cached: bool = False) -> dict:
    recs, rows = common.run_jobs(jobs(cfg, stage), stage.n_workers(), only_cached)
    return {"paper": PAPER, "records": recs, "rows": rows}
