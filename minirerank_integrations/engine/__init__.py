"""The serving engine: everything a rerank call runs.

Configuration (:mod:`.config`), queries, candidates and results (:mod:`.inputs`), image decoding and the
resize rule (:mod:`.images`), images keyed by their source (:mod:`.image_keys`), the official and vision-first prompts (:mod:`.prompts`), the Qwen3-VL model
family (:mod:`.modeling`) and its fingerprint (:mod:`.fingerprint`), the layer loop with its naive reference (:mod:`.layers`), visual token pruning
(:mod:`.pruning`), preparing a call's sides (:mod:`.sides`), segment states (:mod:`.encoder`), prefix keys
(:mod:`.keys`), the plan of a call (:mod:`.plan`) and its execution (:mod:`.execution`), loading
(:mod:`.loading`) and the public :class:`MiniReranker` (:mod:`.reranker`). It imports the prefix store (:mod:`minirerank_integrations.store`)
and the shared errors, and nothing from the quality tooling, the CLI or the adapters. The public names are
re-exported by the top-level package.
"""
