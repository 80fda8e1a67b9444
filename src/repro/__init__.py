"""repro: a Jupyter-first reproducibility suite for four medical VLM alignment papers.

Dr-LLaVA (rule rewards, multi-turn PPO), Zhu et al. 2025 (GRPO for Med-VQA), MMedPO (clinically weighted
multimodal DPO) and UMed-LVLM (abnormal-aware rewards). Notebooks in `notebooks/` are thin; the logic is here.
"""

__version__ = "0.1.0"

from repro import hub as _hub  # noqa: E402  (offline by default, before anything can reach the hub: hub.py)

_hub.default_offline()
