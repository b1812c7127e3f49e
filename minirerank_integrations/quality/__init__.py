"""The quality tooling: what trains a model and measures what a configuration keeps.

Synthetic tasks and the JSONL task format (:mod:`.data`), supervised point-wise training from labels
(:mod:`.training`), label-free adaptation of a checkpoint by self-distillation from its dense run
(:mod:`.adapt`, the one adaptation path; its settings in :mod:`.settings`, LoRA and the schedule in
:mod:`.lora`), the measured choice of a configuration (:mod:`.calibrate`), ranking metrics and retention
(:mod:`.evaluation`), the layer-wise analysis (:mod:`.analysis`) and linear probes of vision features
(:mod:`.vision_probe`). It stands on the engine
(:mod:`minirerank_integrations.engine`), which never imports it; nothing here runs in a rerank call.
"""
