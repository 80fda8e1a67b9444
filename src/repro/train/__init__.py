"""Training stages: sft (TRL SFTTrainer), and later grpo, ppo (our own), dpo (weighted multimodal)."""
