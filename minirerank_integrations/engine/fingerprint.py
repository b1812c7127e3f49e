"""A loaded model's identity for cache keys: a digest of its weights (every parameter and buffer), its config and
its image processor's settings, kept up to date on its own (``docs/design.md``, "What a prefix key covers").

Each tensor is digested where it lives: on the CPU with xxh3-128 over its bytes (no copy); on an accelerator
with an exact modular digest computed there (16 bytes come back, not the weights). The digests are cached
per tensor and recomputed only for tensors that changed since: a tensor's autograd version counter moves
with every in-place write (``load_state_dict``, ``add_``, ``copy_``, an optimizer step), its data pointer
with ``.data = ...``, and a parameter, buffer or submodule assigned anywhere bumps a structure counter
(torch's global registration hooks), so the model is walked again. Writes through ``.data`` (which bypass
autograd, by torch's design) are the one thing the counters cannot see: call :meth:`ModelIdentity.refresh`
after them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import weakref
from collections.abc import Iterator

import torch
import xxhash

__all__ = ["ModelIdentity", "config_identity", "processor_identity", "tensor_digest"]

#: Elements (int32 words) per chunk of the on-device digest: bounds its temporaries to 32 MB per lane.
DEVICE_CHUNK = 1 << 22
# Fields that name where a checkpoint was read from, not what it holds (``docs/design.md``).
_PATH_FIELDS = frozenset({"_name_or_path", "name_or_path", "_commit_hash", "processor_class", "_processor_class"})
_MASK64 = (1 << 64) - 1

# -- structure counter ------------------------------------------------------------------------------------

_structure = 0  # bumped whenever any module anywhere registers a parameter, buffer or submodule
_hooks_lock = threading.Lock()
_hooks_installed = False


def _bump(*_args: object) -> None:
    global _structure
    _structure += 1


def _install_hooks() -> None:
    """torch's global registration hooks, once per process: a counter increment per registration."""
    global _hooks_installed
    with _hooks_lock:
        if not _hooks_installed:
            torch.nn.modules.module.register_module_parameter_registration_hook(_bump)
            torch.nn.modules.module.register_module_buffer_registration_hook(_bump)
            torch.nn.modules.module.register_module_module_registration_hook(_bump)
            _hooks_installed = True


# -- one tensor -------------------------------------------------------------------------------------------


def _signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX_A, _MIX_B, _KEY = _signed(0x632BE59BD9B4E019), _signed(0x8CB92BA72F3D8DD7), _signed(0xD6E8FEB86659FD93)
_tables: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _multipliers(device: torch.device, chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-position odd multipliers (two lanes) and xor keys, int64 on ``device``."""
    key = (str(device), chunk)
    if key not in _tables:
        i = torch.arange(chunk, dtype=torch.int64, device=device)
        odd_a = (i * _GOLDEN + _MIX_A) | 1  # odd: invertible mod 2^64
        odd_b = (i * _MIX_B + _GOLDEN) | 1
        _tables[key] = (odd_a, odd_b, i * _KEY + _MIX_B)
    return _tables[key]


def _words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as int32 words [n] (zero-padded to a multiple of 4 bytes), on its device."""
    raw = tensor.detach().reshape(-1).contiguous().view(torch.uint8)  # [nbytes]
    pad = -raw.numel() % 4
    if pad:
        raw = torch.cat([raw, raw.new_zeros(pad)])
    return raw.view(torch.int32)


def _device_lanes(tensor: torch.Tensor, chunk: int = DEVICE_CHUNK) -> torch.Tensor:
    """Two int64 lanes [2] on the tensor's device, exact for single changes.

    Lane a is sum_i x_i * m_i (mod 2^64) over the int32 words x_i, each chunk scaled by its own odd factor.
    Every m_i is odd, hence invertible mod 2^64; changing one word by d != 0 (|d| < 2^32) changes lane a by
    d * m_i != 0: any single changed element changes the digest. Lane b, sum_i (x_i xor k_i) * n_i, is not
    linear in x, so changes that happen to cancel in lane a are caught there (with probability 1 - 2^-64).
    Integer sums wrap the same in any order, so the result does not depend on the kernel's reduction order.
    """
    words = _words(tensor)
    odd_a, odd_b, keys = _multipliers(words.device, chunk)
    lanes = torch.zeros(2, dtype=torch.int64, device=words.device)
    for number, start in enumerate(range(0, words.numel(), chunk)):
        x = words[start : start + chunk].to(torch.int64)  # [<= chunk]
        n = x.numel()
        lanes[0] += (x * odd_a[:n]).sum() * (2 * number + 1)
        lanes[1] += ((x ^ keys[:n]) * odd_b[:n]).sum() * (4 * number + 3)
    return lanes


def _header(tensor: torch.Tensor) -> bytes:
    return f"{tuple(tensor.shape)}:{tensor.dtype}:".encode()


def tensor_digest(tensor: torch.Tensor, *, on_device: bool | None = None, chunk: int = DEVICE_CHUNK) -> str:
    """An exact digest of ``tensor``'s shape, dtype and contents, computed where it lives.

    ``on_device`` None: xxh3-128 over the bytes for a CPU tensor (read in place, no copy), the modular
    digest of :func:`_device_lanes` elsewhere (only 16 bytes are copied to the host). True forces the
    modular digest (tests run it on the CPU). Any single changed element gives another digest either way.
    """
    if tensor.device.type == "meta":
        return "meta:" + _header(tensor).decode()
    if on_device is None:
        on_device = tensor.device.type != "cpu"
    if not on_device:
        hasher = xxhash.xxh3_128(_header(tensor))
        if tensor.numel():
            hasher.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).numpy().data)
        return "x" + hasher.hexdigest()
    lanes = _device_lanes(tensor, chunk).tolist()
    return "m" + xxhash.xxh3_128(_header(tensor) + f"{lanes[0]}:{lanes[1]}".encode()).hexdigest()


# -- settings ---------------------------------------------------------------------------------------------


def _without_paths(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k not in _PATH_FIELDS}
    if isinstance(value, (list, tuple)):
        return [_without_paths(v) for v in value]
    return value


def config_identity(config) -> str:
    """The model config as canonical JSON, without the fields that name where it was read from."""
    return json.dumps(_without_paths(config.to_dict()), sort_keys=True, default=str)


def processor_identity(image_processor) -> str:
    """The image processor's settings (mean, std, patch, merge and temporal sizes, rescale factor, resample,
    every ``do_*`` flag: what ``to_dict`` holds) and its class, as canonical JSON; paths left out."""
    settings = image_processor.to_dict() if hasattr(image_processor, "to_dict") else dict(vars(image_processor))
    settings = _without_paths(settings)
    return json.dumps({"class": type(image_processor).__qualname__, "settings": settings}, sort_keys=True, default=str)


# -- a whole model ----------------------------------------------------------------------------------------


class _Slot:
    """One parameter or buffer: where it is registered, and its digest as of its (pointer, version)."""

    __slots__ = ("digest", "kind", "local", "module", "name", "pointer", "ref", "version")

    def __init__(self, name: str, module: torch.nn.Module, kind: str, local: str, tensor: torch.Tensor) -> None:
        # Weak references only: a module or tensor dropped from the model is not kept alive by its digest.
        self.name, self.module, self.kind, self.local = name, weakref.ref(module), kind, local
        self.ref = weakref.ref(tensor)
        self.pointer, self.version = -1, -1
        self.digest = ""

    def registered(self) -> bool:
        """Whether the tensor is still the one its module holds under its name."""
        tensor, module = self.ref(), self.module()
        return tensor is not None and module is not None and getattr(module, self.kind).get(self.local) is tensor

    def current(self) -> bool:
        tensor = self.ref()
        return (
            self.registered()
            and tensor._version == self.version  # type: ignore[union-attr]
            and tensor.data_ptr() == self.pointer  # type: ignore[union-attr]
        )


def _named_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module, str, str, torch.Tensor]]:
    """Every parameter and buffer once (tied weights once), persistent or not, with where it is registered."""
    seen: set[int] = set()
    for prefix, module in model.named_modules(remove_duplicate=True):
        for kind in ("_parameters", "_buffers"):
            for local, tensor in getattr(module, kind).items():
                if tensor is None or id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                yield (f"{prefix}.{local}" if prefix else local), module, kind, local, tensor


class ModelIdentity:
    """The fingerprint of ``model`` (weights, config) and an image processor, recomputed only where they changed.

    :meth:`digest` costs a pass over the tensors' version counters (0.3 ms for the 2B shape's 629 tensors)
    when nothing changed; a changed tensor is digested again, alone.
    """

    def __init__(self, model: torch.nn.Module, image_processor_of) -> None:
        _install_hooks()
        self._model = model
        self._processor_of = image_processor_of  # the image processor may be swapped on the backbone
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._structure = -1
        self._config_seen: object = None
        self._config_json = ""
        self._processor_seen: tuple[int, object] | None = None
        self._processor_json = ""
        self._digest: str | None = None

    def refresh(self) -> None:
        """Forget every cached digest (after writes through ``.data``, which no counter sees)."""
        with self._lock:
            self._slots, self._structure, self._digest = [], -1, None
            self._config_seen = self._processor_seen = None

    def digest(self) -> str:
        with self._lock:
            changed = self._check_structure()
            changed |= self._check_tensors()
            changed |= self._check_settings()
            if changed or self._digest is None:
                combined = hashlib.blake2b(digest_size=32)
                combined.update(self._config_json.encode() + b"\0" + self._processor_json.encode() + b"\0")
                for slot in self._slots:
                    combined.update(f"{slot.name}={slot.digest};".encode())
                self._digest = combined.hexdigest()
            return self._digest

    def _check_structure(self, force: bool = False) -> bool:
        if self._structure == _structure and self._slots and not force:
            return False
        self._structure = _structure
        known = {(id(s.ref()), s.pointer, s.version): s.digest for s in self._slots if s.ref() is not None}
        slots = []
        for name, module, kind, local, tensor in sorted(_named_tensors(self._model), key=lambda item: item[0]):
            slot = _Slot(name, module, kind, local, tensor)
            cached = known.get((id(tensor), tensor.data_ptr(), tensor._version))
            if cached is not None:
                slot.pointer, slot.version, slot.digest = tensor.data_ptr(), tensor._version, cached
            slots.append(slot)
        self._slots = slots
        return True

    def _check_tensors(self) -> bool:
        stale = [slot for slot in self._slots if not slot.current()]
        if not stale:
            return False
        if not all(slot.registered() for slot in stale):
            # Replaced without a registration hook firing (e.g. a direct write to ``_parameters``): walk again.
            self._check_structure(force=True)
            stale = [slot for slot in self._slots if not slot.current()]
        by_device: dict[torch.device, list[tuple[_Slot, torch.Tensor]]] = {}
        for slot in stale:
            tensor = slot.ref()
            assert tensor is not None  # registered() held for every stale slot
            slot.pointer, slot.version = tensor.data_ptr(), tensor._version
            if tensor.device.type in ("cpu", "meta"):
                slot.digest = tensor_digest(tensor)
            else:
                by_device.setdefault(tensor.device, []).append((slot, tensor))
        for pending in by_device.values():
            # One transfer per device: the lanes stay there until stacked.
            lanes = torch.stack([_device_lanes(tensor) for _, tensor in pending]).tolist()
            for (slot, tensor), (a, b) in zip(pending, lanes):
                slot.digest = "m" + xxhash.xxh3_128(_header(tensor) + f"{a}:{b}".encode()).hexdigest()
        return True

    def _check_settings(self) -> bool:
        changed = False
        config = self._model.config
        if self._config_seen is None or not _same(config, self._config_seen):
            self._config_seen, self._config_json = copy.deepcopy(config), config_identity(config)
            changed = True
        processor = self._processor_of()
        seen = self._processor_seen
        if seen is None or seen[0] != id(processor) or not _same(vars(processor), seen[1]):
            self._processor_seen = (id(processor), copy.deepcopy(vars(processor)))
            self._processor_json = processor_identity(processor)
            changed = True
        return changed


def _same(current: object, snapshot: object) -> bool:
    try:
        return bool(current == snapshot)
    except Exception:  # e.g. a tensor-valued setting: compare as changed, and recompute
        return False
