"""Does this CPU compute what the committed run's CPU computed? Bit fingerprints of the suite's arithmetic.

Run as: python -m repro.arithmetic                 (this machine against the records in results/arithmetic.json)
        python -m repro.arithmetic --record        (add or replace this machine's record; commit the file)

Why: stage 02's SFT is chaotic (docs/results.md, "Why a start does not hold across float paths"): two runs whose
arithmetic differs in the last bit of one kernel end as different starts, and the verdicts of 04-06 move with the
start. So a run reproduces another machine's only if every kernel it calls returns the same bits there. Whether a
pin of the kernels (ISA caps, MKL's conditional numerical reproducibility) gives another CPU the committed CPU's
bits cannot be read from documentation; it is measured here in minutes, before an hour of `make verify`.

What it computes, in a fresh process per environment (ENVS: ATEN_CPU_CAPABILITY, MKL and oneDNN are read once, at
import), with inputs drawn from integers (so the inputs are the same bits everywhere):
    ops        each kernel family the suite calls, alone: torch's RNG (init, sampling), matmul, attention, softmax,
               norms, activations, reductions, the patch convolution, one AdamW step
    vlm_train  5 AdamW steps of a LLaVA of the cpu profile's dimensions on random tokens and images (the weights
               after them), at 1 and at 2 threads
    vlm_greedy greedy decoding of 12 tokens from the trained model (the tokens and the logits)
Each check is the first 12 hex digits of the SHA-256 of its output's bytes.

Reading it: `native` matching the committed machine's `native` record everywhere means this CPU reproduces the
committed run as is; otherwise an environment of this machine that matches that record is the pin to rerun with
(`make verify ISA=...` covers the ISA caps); if none does, the committed run cannot be reproduced bit for bit here,
and `vlm_train` says how soon it parts (ops name the kernels that differ).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys

import numpy as np

from repro import paths
from repro.verify import ISA_ENV, hardware, load_dir

RECORDS = paths.RESULTS / "arithmetic.json"

# name -> environment of the child process. `isa-avx2` is `make verify ISA=avx2` (repro.verify.ISA_ENV). The CNR
# pins ask MKL for a conditional-numerical-reproducibility branch: AVX2, which Intel documents as reproducible across
# Intel CPUs with AVX2 at a fixed thread count, or COMPATIBLE (SSE2 without the approximate reciprocal instructions,
# whose results differ between vendors); `portable` adds ATen's and oneDNN's ISA-free kernels to the latter.
ENVS = {
    "native": {},
    "isa-avx2": ISA_ENV["avx2"],
    "mkl-cnr-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "portable": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
NEEDS_AVX2 = ("isa-avx2", "mkl-cnr-avx2")


def digest(*arrays) -> str:
    """First 12 hex digits of the SHA-256 of the arrays' bytes (tensors are read as numpy)."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def uniform(rng: np.random.Generator, *shape, scale: float = 1.0):
    """float32 tensor in [-scale, scale) from 24-bit integers: exactly the same bits on every machine (no libm, no
    SIMD in the draw)."""
    import torch

    ints = rng.integers(0, 1 << 24, size=shape, dtype=np.int64)
    return torch.from_numpy(((ints.astype(np.float64) / (1 << 23) - 1.0) * scale).astype(np.float32))


def op_checks(seed: int = 0) -> dict[str, str]:
    """{kernel family: digest} on fixed integer-drawn inputs."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    x, w, b = uniform(rng, 512, 224), uniform(rng, 640, 224, scale=0.05), uniform(rng, 640, scale=0.05)
    logits = uniform(rng, 256, 1065, scale=8.0)
    q, k, v = (uniform(rng, 2, 4, 96, 56) for _ in range(3))
    img, patch = uniform(rng, 8, 3, 64, 64), uniform(rng, 128, 3, 8, 8, scale=0.1)
    big = uniform(rng, 1_000_003)
    out = {}
    torch.manual_seed(seed)
    out["randn"] = digest(torch.randn(4099))
    torch.manual_seed(seed)
    out["multinomial"] = digest(torch.multinomial(torch.softmax(logits[:64], -1), 4, replacement=True))
    out["matmul"] = digest(x @ w.T)
    out["linear"] = digest(F.linear(x, w, b))
    g = uniform(rng, 512, 640)
    out["matmul_grad"] = digest(x.T @ g, g @ w, torch.bmm(q[0], k[0].transpose(1, 2)))  # a linear layer's backward
    out["sdpa"] = digest(F.scaled_dot_product_attention(q, k, v, is_causal=True))
    out["softmax"] = digest(torch.softmax(logits, -1), torch.log_softmax(logits, -1))
    out["cross_entropy"] = digest(F.cross_entropy(logits, torch.arange(256) % 1065))
    out["rms_norm"] = digest(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))  # as Llama writes it
    out["layer_norm"] = digest(F.layer_norm(x, (224,)))
    out["activations"] = digest(F.silu(x), F.gelu(x), x * torch.sigmoid(1.702 * x), torch.exp(x), torch.tanh(x))
    out["reductions"] = digest(big.sum(), big.mean(), big.norm(), x.sum(0))
    out["conv2d"] = digest(F.conv2d(img, patch, stride=8))
    qq, pp, xx = q.clone().requires_grad_(), patch.clone().requires_grad_(), x.clone().requires_grad_()
    loss = (F.scaled_dot_product_attention(qq, k, v, is_causal=True).square().sum()
            + F.conv2d(img, pp, stride=8).square().sum() + F.layer_norm(xx, (224,)).exp().sum())
    out["backward"] = digest(*torch.autograd.grad(loss, [qq, pp, xx]))  # attention, patch conv, layer norm
    p = torch.nn.Parameter(x.clone())
    opt = torch.optim.AdamW([p], lr=1e-3)
    p.grad = w[:512].clone()
    opt.step()
    out["adamw"] = digest(p)
    return out


def tiny_llava(rng: np.random.Generator):
    """A LLaVA with the cpu profile's dimensions (repro.models.SIZES), weights drawn from integers."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from repro.models import SIZES

    vh, vl, vn, vi = SIZES["cpu"]["vision"]
    th, tl, tn, ti = SIZES["cpu"]["text"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=vh, num_hidden_layers=vl, num_attention_heads=vn,
                                       intermediate_size=vi, image_size=64, patch_size=8, projection_dim=vh),
        text_config=LlamaConfig(vocab_size=1065, hidden_size=th, num_hidden_layers=tl, num_attention_heads=tn,
                                num_key_value_heads=tn, intermediate_size=ti, max_position_embeddings=1024,
                                tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_id=3, image_seq_length=64, vision_feature_select_strategy="default", vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(config)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(uniform(rng, *p.shape, scale=0.05) if p.dim() > 1 else torch.ones_like(p))
    return model


def model_checks(seed: int = 0, steps: int = 5) -> dict[str, str]:
    """{vlm_train@<threads>t, vlm_greedy: digest}: a few SFT-like steps of the cpu-sized LLaVA, then greedy decoding."""
    import torch

    out, threads = {}, torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            rng = np.random.default_rng(seed)
            model = tiny_llava(rng)
            model.train()
            ids = torch.from_numpy(rng.integers(4, 1065, size=(4, 96)))
            ids[:, 1:65] = 3  # 64 image tokens after BOS
            ids[:, 0] = 1
            labels = ids.clone()
            labels[:, :65] = -100
            pixels = uniform(rng, 4, 3, 64, 64)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            losses, mask = [], torch.ones_like(ids)
            for _ in range(steps):
                loss = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, labels=labels).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
                losses.append(loss.detach())
            out[f"vlm_train@{t}t"] = digest(torch.stack(losses), *[p for _, p in sorted(model.named_parameters())])
        model.eval()
        with torch.no_grad():
            prompt = ids[:2, :70]
            gen = model.generate(input_ids=prompt, pixel_values=pixels[:2], attention_mask=torch.ones_like(prompt),
                                 max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None,
                                 return_dict_in_generate=True, output_scores=True)
        out["vlm_greedy"] = digest(gen.sequences, *gen.scores)  # the tokens and every step's logits
    finally:
        torch.set_num_threads(threads)
    return out


def committed_cpu_id(profile: str = "cpu") -> str | None:
    """The CPU that trained the committed start (results/<profile>/02_sft.json's provenance): the run to reproduce."""
    return hardware(load_dir(paths.RESULTS / profile, ["02_sft"])["02_sft"]).get("cpu_id")


def this_machine() -> dict:
    """CPU id, torch's kernel ISA and package versions (what a record is about)."""
    import torch

    from repro.results import cpu_id, git_state

    git = git_state()
    return {"cpu_id": cpu_id(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "torch": torch.__version__, "numpy": np.__version__,
            "git": {"sha": git["sha"], "dirty": git["dirty"]}}


def fingerprint(envs=None) -> dict[str, dict]:
    """{env name: {check: digest}}, each env in its own process (an env this CPU cannot honour is left out)."""
    import torch

    has_avx2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    out = {}
    for name in envs or ENVS:
        if name in NEEDS_AVX2 and not has_avx2:
            continue
        env = {**os.environ, **ENVS[name], "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
        proc = subprocess.run([sys.executable, "-m", "repro.arithmetic", "--child"], env=env, capture_output=True,
                              text=True)
        if proc.returncode:
            raise RuntimeError(f"arithmetic: environment {name!r} failed: {proc.stderr.strip().splitlines()[-1:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def compare(here: dict[str, dict], record: dict[str, dict]) -> list[dict]:
    """One row per (env here, check): the digest, and whether it equals the record's `native` (what that machine's
    run computed) and the record's same env (whether the pin is portable)."""
    rows = []
    ref = record.get("native", {})
    for env, checks in here.items():
        for check, d in checks.items():
            rows.append({"env": env, "check": check, "digest": d, "as_native_there": ref.get(check) == d,
                         "as_same_env_there": record.get(env, {}).get(check) == d})
    return rows


def verdict(rows: list[dict]) -> str:
    """One line: which environments of this machine give the record's native bits on every check."""
    envs = sorted({r["env"] for r in rows})
    good = [e for e in envs if all(r["as_native_there"] for r in rows if r["env"] == e)]
    if "native" in good:
        return "this CPU computes the committed machine's bits as is (native): a rerun should reproduce it exactly"
    if good:
        pin = " ".join(f"{k}={v}" for k, v in ENVS[good[0]].items())
        return (f"pin {good[0]!r} gives the committed machine's bits on every check: rerun with "
                f"`{pin} make verify THREADS=committed`")
    portable = [e for e in envs if all(r["as_same_env_there"] for r in rows if r["env"] == e)]
    tail = f"; environments equal to their own record there: {portable}" if portable else ""
    return "no environment here reproduces the committed machine's bits (a rerun will part from it)" + tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--record", action="store_true", help="write this machine's fingerprints into " + str(RECORDS))
    ap.add_argument("--against", help="cpu_id of the record to compare with (default: the committed cpu run's)")
    ap.add_argument("--envs", nargs="*", choices=sorted(ENVS))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps({**op_checks(), **model_checks()}))
        return 0
    from repro.results import _atomic_write

    me, here = this_machine(), fingerprint(a.envs)
    records = json.loads(RECORDS.read_text()) if RECORDS.exists() else {"records": []}
    against = a.against or committed_cpu_id()
    print(f"this machine: {me['cpu_id']} ({me['cpu_capability']}); comparing with: {against}")
    ref = next((r for r in records["records"] if r["machine"]["cpu_id"] == against), None)
    if ref is None:
        print(f"no record of {against} in {RECORDS}; digests here:")
        for env, checks in here.items():
            print(f"  {env:14s}", " ".join(f"{k}={v}" for k, v in checks.items()))
    else:
        import pandas as pd

        rows = compare(here, ref["envs"])
        table = pd.DataFrame(rows).pivot(index="check", columns="env", values="as_native_there")
        print("equal to the committed machine's native bits:\n" + table.to_string())
        print(verdict(rows))
    if a.record:
        records["records"] = [r for r in records["records"] if r["machine"]["cpu_id"] != me["cpu_id"]]
        records["records"].append({"machine": me, "envs": here})
        _atomic_write(RECORDS, json.dumps(records, indent=1) + "\n")
        print(f"recorded {me['cpu_id']} in {RECORDS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
