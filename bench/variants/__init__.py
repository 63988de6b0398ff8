"""LoRA variants that need more than a peft option: LoftQ, QA-LoRA and LongLoRA."""
