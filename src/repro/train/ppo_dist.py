"""ppo.train in several processes with accelerate's primitives (docs/multi_gpu.md, "PPO"): used only when a
torch.distributed group is up (under `accelerate launch`, once repro.train.launch has created accelerate's state);
a single process never builds a Dist, so its path is unchanged.

What each process does: its own batch_size / world_size prompt rows of the step (all k samples of a prompt stay on
one process, so the leave-one-out baseline and UMed-LVLM's per-query normalisation, both per prompt, need nothing
from the other processes); its own rollouts and reward calls; the update through the DDP-wrapped policy and value
head (`Accelerator.prepare`), which averages the gradients; minibatch / world_size samples per gradient step, so a
step takes the same number of optimizer steps as in one process. What needs the whole batch is gathered: the
advantage whitening's mean and variance (sums and token counts, `accelerator.reduce`) and every logged statistic
(`accelerator.gather` of per-sample values, summed token statistics).

Gradient weighting: each process's loss is a token mean over its own minibatch and DDP averages the processes'
gradients, so the update equals the one-process update on the same samples when the processes hold equal numbers of
action tokens (e.g. every answer cut at max_new_tokens), and weights each process's tokens a little differently
otherwise.
"""

from __future__ import annotations

import torch

from repro.train import ppo_math
from repro.train.rollouts import nanmean


class Dist:
    """accelerate's Accelerator plus the few global reductions ppo_step needs. rank/world: the process group's."""

    def __init__(self, use_cpu: bool):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # find_unused_parameters: parts of a VLM (e.g. an unused vision projector layer) may get no gradient
        self.acc = Accelerator(cpu=use_cpu,
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device
        self.is_main = self.acc.is_main_process

    # ------------------------------------------------------------------ models
    def prepare(self, policy, head, opt):
        return self.acc.prepare(policy, head, opt)

    def unwrap(self, model):
        return self.acc.unwrap_model(model)

    def backward(self, loss) -> None:
        self.acc.backward(loss)

    def clip(self, params, max_norm: float) -> None:
        self.acc.clip_grad_norm_(params, max_norm)

    # ------------------------------------------------------------------ global statistics
    def _sum(self, *xs: torch.Tensor) -> torch.Tensor:
        """[len(xs)] fp64: each 0-d tensor summed over the processes."""
        return self.acc.reduce(torch.stack([x.detach().double() for x in xs]).to(self.device), "sum")

    def token_mean(self, x: torch.Tensor, mask: torch.Tensor) -> float:
        """masked_mean over the action tokens of all processes. x, mask: [n, T] (T may differ per process)."""
        s = self._sum((x * mask).sum(), mask.sum())
        return (s[0] / s[1].clamp(min=1)).item()

    def whiten(self, x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """ppo_math.masked_whiten with the mean and variance of all processes' action tokens. x, mask: [n, T]."""
        s = self._sum((x * mask).sum(), mask.sum())
        mean = (s[0] / s[1].clamp(min=1)).to(x.dtype)
        var = (self._sum((((x - mean) ** 2) * mask).sum())[0] / s[1].clamp(min=1)).to(x.dtype)
        return (x - mean) * torch.rsqrt(var + eps) * mask

    def sample_mean(self, x: torch.Tensor) -> float:
        """Mean over all processes' samples of a per-sample [n] tensor (n is the same on every process)."""
        return self.acc.gather(x.detach().float().to(self.device)).mean().item()

    def gather_list(self, values: list) -> list:
        from accelerate.utils import gather_object

        return gather_object(list(values))

    def rank_mean(self, value: float | None) -> float | None:
        """Mean over the processes that have a value (None where none has)."""
        got = [v for v in self.gather_list([value]) if v is not None]
        return sum(got) / len(got) if got else None

    def log(self, scores, raw: dict, a: dict, sc: dict, adv, returns, samples, stats: list[dict],
            update_policy: bool) -> dict:
        """ppo_step's log dict, each entry over the whole step (all processes): see ppo.ppo_step."""
        mask = sc["mask"]
        m = mask.bool()
        values = torch.cat([t.cpu() for t in self.gather_list([sc["values"][m].cpu()])])
        rets = torch.cat([t.cpu() for t in self.gather_list([returns[m].cpu()])])
        ended = self._sum(torch.tensor(float(sum(sum(s.ended) for s in samples))),
                          torch.tensor(float(sum(len(s.ended) for s in samples))))
        log = {"reward": self.sample_mean(scores),
               **{f"reward/{k}": nanmean(self.gather_list(v)) for k, v in raw.items()},
               "kl": self.sample_mean(a["kl"].sum(1)), "entropy": self.token_mean(sc["entropy"], mask),
               "response_length": self.sample_mean(mask.sum(1)),
               "eos_rate": (ended[0] / ended[1].clamp(min=1)).item(),
               "value_mean": self.token_mean(sc["values"], mask),
               "explained_variance": ppo_math.explained_variance(values[None], rets[None], torch.ones(1, len(rets))),
               "advantage_abs": self.token_mean(adv.abs(), mask),
               "policy_update": int(update_policy)}
        for k in ("policy_loss", "value_loss", "clip_frac", "approx_kl"):
            vals = [st[k] for st in stats if k in st]
            log[k] = self.rank_mean(sum(vals) / len(vals) if vals else None)
        return log
