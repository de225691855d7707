"""Reading other projects' checkpoint files into tensors, without running anything from them.

``read_checkpoint(path)`` accepts a file or a folder and returns a ``Checkpoint``: the named state dicts it
holds (flat ``name -> tensor`` maps) and, for folders, the JSON config beside the weights.

Containers, recognised by content (the suffix only picks ``.safetensors`` and a folder's weight files):
- ``.safetensors``: read as is.
- ``torch.save`` files (zip or legacy stream) and plain pickles: ``torch.load(weights_only=True)`` first; when
  the pickle names classes or functions beyond tensors (Lightning's hyper-parameters as ``argparse.Namespace``
  or ``DictConfig``, callbacks, classes of packages not installed, a whole pickled ``nn.Module``), the restricted
  unpickler of ``_unpickler``, which rebuilds tensors and keeps every other object as an inert ``StandIn``:
  nothing from the file is imported or called.
- TorchScript archives (``torch.jit.save``: a zip with ``code/`` or ``constants.pkl`` whose ``data.pkl`` holds
  ``__torch__`` modules), read with the same unpickler, never with ``torch.jit.load``: the parameters and
  buffers of the module tree, named as ``torch.jit.load(path).state_dict()`` names them.
"""

from __future__ import annotations

import ast
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from ..tokenizer import read_config_json
from ._unpickler import StandIn, archive_prefix, load_pickle_stream, load_torch_zip

# keys under which checkpoints of the field keep a state dict (Lightning, LlamaGen, EMA copies)
STATE_DICT_KEYS = ("state_dict", "model", "ema", "model_ema", "module", "params")


@dataclass
class Checkpoint:
    """What a checkpoint file or folder holds, read safely.

    ``state_dicts`` maps where a state dict was found to it: ``""`` for a file that is one (or for a folder's
    single weights file), a top-level key such as ``"state_dict"``/``"model"``/``"ema"`` for a dict of them, or
    a file name (``"encoder.jit"``) for folders of several weight files. ``config`` is a JSON config found
    beside the weights (a diffusers folder's ``config.json``), else None.
    """

    source: Path
    state_dicts: dict[str, dict[str, torch.Tensor]]
    config: dict | None = None
    files: list[Path] = field(default_factory=list)

    def keys(self) -> set[str]:
        """Every tensor name in every state dict (for format detection)."""
        return {k for sd in self.state_dicts.values() for k in sd}

    def first(self, *where: str) -> dict[str, torch.Tensor]:
        """The first state dict found under one of ``where`` (in that order); ``KeyError`` when none is."""
        for key in where:
            if key in self.state_dicts:
                return self.state_dicts[key]
        raise KeyError(f"{self.source}: no state dict under {list(where)}; found {sorted(self.state_dicts)}")


WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".jit")


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint file, or a folder of weight files (+ ``config.json``), without unpickling code."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{str(path)!r} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
        config_path = path / "config.json"
        config = read_config_json(config_path) if config_path.is_file() else None
        state_dicts: dict[str, dict[str, torch.Tensor]] = {}
        for file in files:
            for key, sd in _read_file(file).items():
                state_dicts[file.name if not key else f"{file.name}:{key}"] = sd
        if len(files) == 1:  # a single weights file: its state dicts under their own keys
            state_dicts = _read_file(files[0])
        return Checkpoint(path, state_dicts, config, files)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    return Checkpoint(path, _read_file(path), None, [path])


# what reading a damaged or hostile file can raise, in torch.load or in the restricted unpickler
_MALFORMED = (
    pickle.UnpicklingError,
    EOFError,
    RuntimeError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    RecursionError,
    zipfile.BadZipFile,
)


def _read_file(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts of one file: ``{"": sd}`` for a bare state dict, else one per ``STATE_DICT_KEYS`` key."""
    if path.suffix == ".safetensors":
        try:
            return {"": safetensors.torch.load_file(str(path), device="cpu")}
        except safetensors.SafetensorError as error:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file: {error}") from error
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise ValueError(f"{str(path)!r} is empty: not a checkpoint")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    if head.startswith(b"PK"):
        raise ValueError(f"{str(path)!r} starts as a zip archive but has no zip directory: truncated or corrupt")
    if head[0] != pickle.PROTO[0]:
        raise ValueError(
            f"{str(path)!r} is neither a zip archive (torch.save, torch.jit.save) nor a pickle (protocol >= 2), "
            "nor safetensors by its suffix: not a checkpoint this reader knows"
        )

    def restricted() -> Any:
        with path.open("rb") as file:
            return load_pickle_stream(file)

    return state_dicts_in(_load(path, restricted), str(path))


def _read_zip(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """A ``torch.save`` zip (``torch.load`` first, then the restricted unpickler) or a TorchScript archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = archive_prefix(archive)
            names = archive.namelist()
            if f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names):
                root = load_torch_zip(archive)
                if _is_script_module(root, {}):
                    return {"": module_tensors(root, _script_classes(archive, prefix))}
                return state_dicts_in(root, str(path))
    except _MALFORMED as error:
        raise ValueError(f"{str(path)!r} could not be read as a checkpoint (truncated or corrupt?): {error}") from error

    def restricted() -> Any:
        with zipfile.ZipFile(path) as archive:
            return load_torch_zip(archive)

    return state_dicts_in(_load(path, restricted), str(path))


def _load(path: Path, restricted: Callable[[], Any]) -> Any:
    """``torch.load(weights_only=True)``, else (objects beyond tensors, a plain pickle) ``restricted()``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _MALFORMED:
        pass  # the restricted unpickler reads what weights_only refuses, and says what is wrong with the rest
    try:
        return restricted()
    except _MALFORMED as error:
        raise ValueError(f"{str(path)!r} could not be read as a checkpoint (truncated or corrupt?): {error}") from error


# --- module trees: TorchScript archives and whole pickled nn.Modules ----------------------------------------


@dataclass(frozen=True)
class _ScriptClass:
    """What a TorchScript class's ``code/`` source declares: its tensors in ``state_dict`` order, and whether
    it is a module (``class X(Module)``) rather than a TorchScript class."""

    tensors: tuple[str, ...]
    is_module: bool


def _script_classes(archive: zipfile.ZipFile, prefix: str) -> dict[str, _ScriptClass]:
    """``"__torch__.a.b.Name" -> _ScriptClass`` from the archive's ``code/**.py``, parsed (never run) with ``ast``."""
    classes: dict[str, _ScriptClass] = {}
    for name in archive.namelist():
        if not (name.startswith(f"{prefix}code/") and name.endswith(".py")):
            continue
        module = name[len(prefix) + len("code/") : -len(".py")].replace("/", ".")
        try:
            tree = ast.parse(archive.read(name).decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
            continue  # its classes fall back to the attribute heuristic of _is_script_module
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            declared = {
                target.id: [
                    e.value for e in stmt.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                ]
                for stmt in node.body
                if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.List)
                for target in stmt.targets
                if isinstance(target, ast.Name)
            }
            tensors = (*declared.get("__parameters__", ()), *declared.get("__buffers__", ()))
            is_module = any(isinstance(base, ast.Name) and base.id == "Module" for base in node.bases)
            classes[f"{module}.{node.name}"] = _ScriptClass(tensors, is_module)
    return classes


def _is_script_module(obj: object, classes: Mapping[str, _ScriptClass]) -> bool:
    """A TorchScript module object: a ``__torch__`` class that its source declares a module, or (source
    unknown) that carries the ``training`` flag every module has."""
    if not isinstance(obj, StandIn) or not obj.module.startswith("__torch__"):
        return False
    known = classes.get(f"{obj.module}.{obj.name}")
    return known.is_module if known is not None else "training" in obj.attributes


def _is_eager_module(obj: object) -> bool:
    """A pickled ``nn.Module`` (by ``torch.save(model)``): a stand-in whose state has ``_parameters``/``_modules``."""
    return isinstance(obj, StandIn) and isinstance(obj.attributes.get("_modules"), Mapping)


def module_tensors(root: StandIn, classes: Mapping[str, _ScriptClass] | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a pickled module tree, named like ``module.state_dict()``: each module's parameters,
    then its buffers, then its submodules' under ``<attribute>.``. A TorchScript module's tensors are those its
    class source declares (``__parameters__``, ``__buffers__``), else every tensor attribute; a pickled eager
    module's come from ``_parameters`` and its persistent ``_buffers``."""
    classes = classes or {}
    out: dict[str, torch.Tensor] = {}

    def walk(obj: StandIn, prefix: str, path: frozenset[int]) -> None:
        attributes = obj.attributes
        if _is_eager_module(obj):
            transient = attributes.get("_non_persistent_buffers_set") or ()
            own = [*(attributes.get("_parameters") or {}).items()]
            own += [(k, v) for k, v in (attributes.get("_buffers") or {}).items() if k not in transient]
            children = attributes["_modules"].items()
        else:
            known = classes.get(f"{obj.module}.{obj.name}")
            tensors = [k for k, v in attributes.items() if isinstance(v, torch.Tensor)]
            names = known.tensors if known is not None else tensors
            own = [(name, attributes.get(name)) for name in names]
            children = [(k, v) for k, v in attributes.items() if _is_script_module(v, classes)]
        out.update({f"{prefix}{k}": v for k, v in own if isinstance(v, torch.Tensor)})
        for key, child in children:
            if isinstance(child, StandIn) and id(child) not in path:  # a cyclic pickle cannot recurse forever
                walk(child, f"{prefix}{key}.", path | {id(child)})

    walk(root, "", frozenset({id(root)}))
    return out


# --- finding the state dicts in an unpickled object ---------------------------------------------------------


def _tensors(value: object) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict-like value: a mapping's tensor values, or a pickled module's state dict."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items() if isinstance(v, torch.Tensor)}
    if _is_eager_module(value) or _is_script_module(value, {}):
        return module_tensors(value)
    return {}


def _outline(obj: object, depth: int = 2) -> str:
    """A short description of an object's structure (keys and value types), for error messages."""
    if isinstance(obj, StandIn):
        return f"<{obj.module}.{obj.name}>"
    if not isinstance(obj, Mapping):
        return type(obj).__name__
    if depth == 0:
        return f"{{{len(obj)} entries}}"
    items = [f"{str(k)!r}: {_outline(v, depth - 1)}" for k, v in list(obj.items())[:12]]
    return "{" + ", ".join(items) + (", ..." if len(obj) > 12 else "") + "}"


def state_dicts_in(obj: object, source: str) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts in an unpickled checkpoint object.

    ``{"": sd}`` when the object is a state dict (every value a tensor, ignoring stand-ins for pickled
    objects) or a pickled module; else one entry per ``STATE_DICT_KEYS`` key whose value is a mapping or a
    pickled module holding tensors (Lightning's ``"state_dict"``; its non-tensor values are dropped).
    """
    if not isinstance(obj, Mapping):
        if sd := _tensors(obj) if isinstance(obj, StandIn) else {}:
            return {"": sd}
        raise ValueError(f"{source!r} holds {_outline(obj)}, not a state dict or a dict of them")
    data = {k: v for k, v in obj.items() if not isinstance(v, StandIn)}
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {"": {str(k): v for k, v in data.items()}}
    found = {key: _tensors(obj.get(key)) for key in STATE_DICT_KEYS if key in obj}
    found = {k: v for k, v in found.items() if v}
    if not found:
        raise ValueError(
            f"{source!r} holds no state dict: neither a name -> tensor map nor one under {list(STATE_DICT_KEYS)}; "
            f"it holds {_outline(obj)}"
        )
    return found
