"""The techniques' implementations that need torch, peft, hqq or bitsandbytes: QA-LoRA's HQQ layers and merge,
LongLoRA's S²-Attn, LoftQ's initialisation. Imported only by a technique's hooks (`bench.techniques.<name>`), when
a run or a plan builds that technique, never by the registry."""
