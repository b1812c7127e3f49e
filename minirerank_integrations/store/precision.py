"""The precisions a prefix store can keep keys and values in, named once (no torch here, so the command
line's options and the store's settings can list them cheaply); the codec implements them."""

from typing import Literal

__all__ = ["Storage"]

Storage = Literal["float32", "float16", "bfloat16", "int8"]
