"""A restricted unpickler for PyTorch's pickle containers: tensors come back, nothing from the file is run.

``pickle`` rebuilds objects by calling whatever global a file names (``os.system`` as readily as
``collections.OrderedDict``). Here ``find_class`` resolves only a short allow-list of already-imported,
side-effect-free constructors (tensor and storage rebuilding, ``OrderedDict``, dtypes, a few builtins with
checked arguments); every other global becomes a ``StandIn``: an inert class that records its module, name,
the arguments it was built with and the state it was given, and does nothing else. No module is imported
and no callable from the file is ever called, so a ``__reduce__`` payload is kept as data.

Containers (``load_torch_zip``, ``load_pickle_stream``):
- the zip archive ``torch.save`` (and ``torch.jit.save``) writes: ``<prefix>/data.pkl`` whose persistent ids
  ``("storage", <dtype>Storage, key, location, numel)`` name raw little-endian records ``<prefix>/data/<key>``;
- the legacy non-zip ``torch.save`` stream: magic number, protocol, system info, the object, the storage keys,
  then each storage as an int64 element count and its bytes;
- a plain pickle (``pickle.dump``), whose tensors carry their storages as nested ``torch.save`` bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Callable
from typing import IO, Any, ClassVar

import torch

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy torch.save stream

# every torch dtype by its attribute name (``float32``, ``bfloat16``, ...); read from the imported module
_DTYPES = {name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}
# the typed storage classes torch.save names (``FloatStorage``), by the dtype they hold
_STORAGES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
    "UntypedStorage": torch.uint8,
}


class StandIn:
    """An object of a class or function the pickle named but that is not on the allow-list, kept as data.

    ``module``/``name``: the global the file named; ``args``/``kwargs``: what the pickle passed when building
    it; ``state``: what it passed to ``__setstate__`` (an object's ``__dict__``, usually); ``items``: what it
    appended or assigned by key; calling one returns another stand-in recording the call. It has no other
    behaviour: nothing it names is imported or called.
    """

    module: ClassVar[str] = ""
    name: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:  # noqa: PYI034 (3.10 has no typing.Self)
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: ``__new__`` recorded the arguments (pickle's NEWOBJ calls only ``__new__``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> StandIn:
        """A pickle that calls what it built (a bound method fetched by ``getattr``) gets a record of the call:
        a stand-in of global ``<call>.<module>.<name>`` whose ``args`` are this stand-in and the arguments."""
        return stand_in("<call>", f"{self.module}.{self.name}")(self, *args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: list) -> None:
        self.items.extend(values)

    @property
    def attributes(self) -> dict:
        """The pickled ``__dict__`` (``state`` when it is a dict, or the dict of a ``(dict, slots)`` pair)."""
        state = self.state[0] if isinstance(self.state, tuple) and len(self.state) == 2 else self.state
        return state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<stand-in for {self.module}.{self.name}>"


def stand_in(module: str, name: str, _cache: dict[tuple[str, str], type[StandIn]] = {}) -> type[StandIn]:  # noqa: B006
    """The ``StandIn`` subclass for the global ``module.name`` (one class per global)."""
    if (module, name) not in _cache:
        _cache[module, name] = type(name, (StandIn,), {"module": module, "name": name, "__module__": __name__})
    return _cache[module, name]


class _StorageType:
    """What a ``torch.<X>Storage`` global resolves to: only the dtype its records hold."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int for v in value):
        raise pickle.UnpicklingError(f"malformed tensor record: {what} is {value!r}, not a tuple of ints")
    return value


def _rebuild(storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``storage[offset + sum_i k_i * stride_i]`` over ``k < size``: a strided view of a flat storage."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1 or type(offset) is not int:
        raise pickle.UnpicklingError("malformed tensor record: its storage or offset is not one the file holds")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"malformed tensor record: size {size} and stride {stride} differ in length")
    if dtype is not None and dtype != storage.dtype:
        storage = storage.view(torch.uint8).view(dtype)
    try:
        return storage.as_strided(size, stride, offset)
    except RuntimeError as error:
        raise pickle.UnpicklingError(f"malformed tensor record: {error}") from error


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    return _rebuild(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError(f"malformed tensor record: dtype {dtype!r}")
    return _rebuild(storage, offset, size, stride, dtype)


def _parameter(data: Any, *rest: Any) -> torch.Tensor:
    """A pickled ``nn.Parameter``: its data, as a plain tensor (hooks and extra state are dropped)."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"malformed parameter record: its data is a {type(data).__name__}")
    return data


def _size(*args: Any) -> torch.Size:
    return torch.Size(_ints(args[0] if args else (), "torch.Size"))


def _checked(build: Callable, *types: type) -> Callable:
    """``build(*args)`` when every argument has one of ``types``, else an error: no stand-in reaches a builtin."""

    def call(*args: Any) -> Any:
        if not all(isinstance(a, types) for a in args):
            kinds = [type(a).__name__ for a in args]
            raise pickle.UnpicklingError(f"unexpected arguments to {build.__name__}: {kinds}")
        return build(*args)

    return call


def _encode(text: str = "", encoding: str = "latin1") -> bytes:
    """``_codecs.encode``, which protocol-2 pickles use for ``bytes``; only to latin-1."""
    if not isinstance(text, str) or encoding.replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"unexpected arguments to _codecs.encode: {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _load_from_bytes(data: Any) -> torch.Tensor:
    """``torch.storage._load_from_bytes``: a storage pickled as the bytes of a nested ``torch.save``."""
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("malformed storage record: not bytes")
    is_zip = zipfile.is_zipfile(io.BytesIO(data))
    stream = io.BytesIO(data)
    storage = load_torch_zip(zipfile.ZipFile(stream)) if is_zip else load_pickle_stream(stream)
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("malformed storage record: the nested bytes hold no storage")
    return storage


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "Size"): _size,
    ("_codecs", "encode"): _encode,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGES.items()},
    **{("torch", name): dtype for name, dtype in _DTYPES.items()},
    **{
        (module, name): _checked(build, list, tuple, set, frozenset)
        for module in ("builtins", "__builtin__")
        for name, build in (("set", set), ("frozenset", frozenset))
    },
    **{(module, "bytearray"): _checked(bytearray, bytes) for module in ("builtins", "__builtin__")},
}

# the storage reader of a container: (key, dtype, element count) -> a flat tensor of that dtype and length
StorageReader = Callable[[str, torch.dtype, int], torch.Tensor]


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals resolve to the allow-list or to stand-ins, and whose storages come
    from ``storages`` (PyTorch's persistent ids); without ``storages``, a persistent id is an error."""

    def __init__(self, file: IO[bytes], storages: StorageReader | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._read_storage = storages
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        return allowed if allowed is not None else stand_in(module, name)

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0] if isinstance(pid, tuple) and pid else None
        kind = kind.decode("ascii", "replace") if isinstance(kind, bytes) else kind
        if kind == "module" and len(pid) > 1:  # legacy whole-module pickles name the module's class (a stand-in)
            return pid[1]
        if kind != "storage" or len(pid) < 5 or self._read_storage is None:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage record {pid!r}")
        key = key.decode("ascii", "replace") if isinstance(key, bytes) else str(key)
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
        storage = self._storages[key]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy storage views: (view key, element offset, element count)
            _, start, length = view
            storage = storage[start : start + length]
        return storage


def _from_bytes(raw: bytes, dtype: torch.dtype, numel: int, what: str) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(raw) != numel * itemsize:
        raise pickle.UnpicklingError(f"{what} holds {len(raw)} bytes, not {numel} x {itemsize}: truncated?")
    if not raw:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype)


def archive_prefix(archive: zipfile.ZipFile) -> str:
    """The folder ``torch.save``/``torch.jit.save`` put everything under (``archive/``, ``<stem>/``)."""
    for name in archive.namelist():
        if name.endswith("data.pkl") and name.count("/") == 1:
            return name[: -len("data.pkl")]
    raise pickle.UnpicklingError("the zip archive holds no <folder>/data.pkl: not written by torch.save")


def load_torch_zip(archive: zipfile.ZipFile, record: str = "data.pkl") -> Any:
    """The object of a ``torch.save`` / ``torch.jit.save`` zip archive's pickle ``record``, restricted."""
    prefix = archive_prefix(archive)
    names = set(archive.namelist())
    if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
        raise pickle.UnpicklingError("the archive's storages are big-endian, which this reader does not convert")
    folder = "constants" if record == "constants.pkl" else "data"

    def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        name = f"{prefix}{folder}/{key}"
        if name not in names:
            raise pickle.UnpicklingError(f"the archive lacks the storage record {name!r}")
        return _from_bytes(archive.read(name), dtype, numel, f"storage record {name!r}")

    return RestrictedUnpickler(io.BytesIO(archive.read(prefix + record)), storage).load()


def load_pickle_stream(stream: IO[bytes]) -> Any:
    """The object of a legacy (non-zip) ``torch.save`` stream or of a plain pickle, restricted."""
    first = RestrictedUnpickler(stream).load()
    if first != LEGACY_MAGIC:  # a plain pickle: its one object is the checkpoint
        return first
    RestrictedUnpickler(stream).load()  # protocol version
    system = RestrictedUnpickler(stream).load()
    if isinstance(system, dict) and system.get("little_endian") is False:
        raise pickle.UnpicklingError("the file's storages are big-endian, which this reader does not convert")
    pending: dict[str, torch.Tensor] = {}

    def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        pending[key] = torch.empty(numel, dtype=dtype)  # filled once the storages that follow the object are read
        return pending[key]

    result = RestrictedUnpickler(stream, storage).load()
    keys = RestrictedUnpickler(stream).load()
    if not isinstance(keys, list):
        raise pickle.UnpicklingError("malformed legacy file: the storage keys are not a list")
    for key in map(str, keys):
        if key not in pending:
            raise pickle.UnpicklingError(f"malformed legacy file: storage {key!r} is not used by the object")
        target = pending[key]
        count = int.from_bytes(stream.read(8), "little")
        if count != target.numel():
            raise pickle.UnpicklingError(f"storage {key!r} holds {count} elements, not {target.numel()}: corrupt?")
        target.copy_(_from_bytes(stream.read(count * target.element_size()), target.dtype, count, f"storage {key!r}"))
    return result
