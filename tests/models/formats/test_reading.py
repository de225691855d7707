"""read_checkpoint: every container read as tensors, and no payload in any of them ever runs.

Each payload test first shows the payload is live (plain ``pickle.loads`` runs it), then that reading the
file leaves no trace of it while the tensors come out equal to what was saved. TorchScript archives are
compared against ``torch.jit.load(...).state_dict()`` on files the tests write themselves.
"""

from __future__ import annotations

import argparse
import builtins
import io
import itertools
import os
import pathlib
import pickle
import pickletools
import sys
import zipfile

import pytest
import torch
from torch import nn

from tokenizer.models.formats.reading import read_checkpoint


class Payload:
    """Unpickles as ``call(*args)``: a stand-in for code a hostile checkpoint runs when loaded."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(folder: pathlib.Path) -> dict[str, tuple[Payload, pathlib.Path]]:
    """Three ways a pickle can write a file: a shell command, exec'd source, a bound pathlib method."""
    markers = {name: folder / f"marker-{name}" for name in ("system", "exec", "pathlib")}
    return {
        "system": (Payload(os.system, f"touch '{markers['system']}'"), markers["system"]),
        "exec": (Payload(builtins.exec, f"open({str(markers['exec'])!r}, 'w').close()"), markers["exec"]),
        "pathlib": (Payload(markers["pathlib"].write_text, "ran"), markers["pathlib"]),
    }


def _tensors() -> dict[str, torch.Tensor]:
    """Awkward tensors: non-contiguous, a view sharing storage, bf16, int64, a scalar, an empty one."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g)
    return {
        "conv.weight": torch.randn(3, 2, 3, 5, generator=g),
        "transposed": base.t(),
        "row": base[2, 1:6],
        "half": torch.randn(11, generator=g).to(torch.bfloat16),
        "index": torch.randint(0, 1000, (13,), generator=g),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def _assert_same(read: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    assert list(read) == list(saved)
    for name, tensor in saved.items():
        assert read[name].dtype == tensor.dtype and read[name].shape == tensor.shape, name
        assert torch.equal(read[name], tensor), name


def _assert_no_marker(payloads) -> None:
    assert [str(m) for _, m in payloads.values() if m.exists()] == []


def test_the_payloads_are_live(tmp_path):
    """The control: without the restricted reader, each payload runs (so the tests below can fail)."""
    for payload, marker in _payloads(tmp_path).values():
        pickle.loads(pickle.dumps({"x": payload}))
        assert marker.exists()


@pytest.mark.parametrize("container", ["zip", "legacy", "plain-pickle", "plain-pickle-2"])
def test_payload_in_a_pickle_never_runs(tmp_path, container):
    payloads = _payloads(tmp_path)
    saved = _tensors()
    obj = {"state_dict": saved, **{name: p for name, (p, _) in payloads.items()}}
    path = tmp_path / "hostile.pt"
    if container == "zip":
        torch.save(obj, path)
    elif container == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2 if container.endswith("2") else 4))
    checkpoint = read_checkpoint(path)
    _assert_no_marker(payloads)
    assert list(checkpoint.state_dicts) == ["state_dict"]
    _assert_same(checkpoint.state_dicts["state_dict"], saved)


def test_lightning_checkpoint_with_foreign_classes(tmp_path, monkeypatch):
    """Hyper-parameters as ``argparse.Namespace`` and an object of a module that is gone by load time."""
    module_dir = tmp_path / "modules"
    module_dir.mkdir()
    (module_dir / "tessera_gone_callbacks.py").write_text(
        "class Callback:\n    def __init__(self, every):\n        self.every = every\n"
    )
    monkeypatch.syspath_prepend(str(module_dir))
    import tessera_gone_callbacks

    payloads = _payloads(tmp_path)
    saved = _tensors()
    checkpoint = {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "1.0.8",
        "state_dict": saved,
        "hyper_parameters": argparse.Namespace(lr=1e-4, payload=payloads["system"][0]),
        "callbacks": {"ModelCheckpoint": tessera_gone_callbacks.Callback(every=5), "hook": payloads["exec"][0]},
        "optimizer_states": [payloads["pathlib"][0]],
    }
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path)
    del sys.modules["tessera_gone_callbacks"]
    (module_dir / "tessera_gone_callbacks.py").unlink()
    with pytest.raises(ModuleNotFoundError):  # a trusting torch.load runs payloads, then misses the module
        torch.load(path, weights_only=False)
    for _, marker in payloads.values():
        marker.unlink(missing_ok=True)

    read = read_checkpoint(path)
    _assert_no_marker(payloads)
    assert "tessera_gone_callbacks" not in sys.modules
    assert list(read.state_dicts) == ["state_dict"]
    _assert_same(read.state_dicts["state_dict"], saved)


def test_pickled_module_gives_its_state_dict(tmp_path):
    """``torch.save(model)`` pickles the classes; its state dict is read from the stand-ins' state."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(4, 2, bias=False)))
    model[1].register_buffer("scratch", torch.ones(2), persistent=False)
    torch.save({"model": model, "epoch": 1}, tmp_path / "module.pt")
    _assert_same(read_checkpoint(tmp_path / "module.pt").state_dicts["model"], model.state_dict())
    torch.save(model, tmp_path / "bare.pt", _use_new_zipfile_serialization=False)
    _assert_same(read_checkpoint(tmp_path / "bare.pt").state_dicts[""], model.state_dict())


# --- TorchScript ---------------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(x))


class _Net(nn.Module):
    """Nested submodules, BatchNorm buffers, a ModuleList, a parameter-free layer, a non-persistent buffer
    and a plain tensor attribute (which is not in a state dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2)
        self.blocks = nn.ModuleList([_Block(4), nn.Sequential(nn.SiLU(), _Block(4))])
        self.head = nn.Linear(4, 5)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, 1.5, 1.0]).view(1, 4, 1, 1))
        self.register_buffer("shift", torch.full((4,), 0.25), persistent=False)
        self.offset = torch.tensor(0.125)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x) * self.scale + self.offset
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean((2, 3)) + self.shift)


def _scripted(path: pathlib.Path, how: str) -> pathlib.Path:
    torch.manual_seed(0)
    net = _Net()
    for module in net.modules():  # BatchNorm buffers away from their defaults
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(7)
    net.eval()
    x = torch.randn(2, 3, 11, 17)
    (torch.jit.trace(net, x) if how == "trace" else torch.jit.script(net)).save(str(path))
    return path


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_tensors_equal_jit_load(tmp_path, how):
    path = _scripted(tmp_path / "net.pt", how)  # recognised by content, not by a .jit suffix
    expected = torch.jit.load(str(path)).state_dict()
    checkpoint = read_checkpoint(path)
    assert list(checkpoint.state_dicts) == [""]
    _assert_same(checkpoint.state_dicts[""], dict(expected))
    assert "blocks.1.1.norm.running_var" in expected and "offset" not in expected


def _with_payload(archive_path: pathlib.Path, payload: Payload, out: pathlib.Path) -> bytes:
    """Rewrite the archive's data.pkl with ``payload`` as an extra attribute of the root module; the spliced
    pickle ops (the key, then ``call(*args)``) come back."""
    with zipfile.ZipFile(archive_path) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in records if n.endswith("/data.pkl"))
    data = records[name]
    ops = [(op.name, pos) for op, _, pos in pickletools.genops(data)]
    at = next(pos for (a, _), (b, pos) in itertools.pairwise(ops) if a == "EMPTY_DICT" and b == "MARK") + 1
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.fast = True  # no memo puts, so the ops splice anywhere
    pickler.dump(("payload", payload))
    pair = buffer.getvalue()[2:-2]  # without PROTO, and without the TUPLE2 and STOP that close it
    records[name] = data[:at] + pair + data[at:]
    with zipfile.ZipFile(out, "w") as archive:
        for record, content in records.items():
            archive.writestr(record, content)
    return pair


def test_payload_in_a_torchscript_archive_never_runs(tmp_path):
    source = _scripted(tmp_path / "clean.jit", "trace")
    expected = torch.jit.load(str(source)).state_dict()
    for name, (payload, marker) in _payloads(tmp_path).items():
        patched = tmp_path / f"patched-{name}.jit"
        pair = _with_payload(source, payload, patched)
        pickle.loads(b"\x80\x02" + pair + b"\x86.")  # the control: the spliced ops run the payload
        assert marker.exists()
        marker.unlink()
        _assert_same(read_checkpoint(patched).state_dicts[""], dict(expected))
        assert not marker.exists()


def test_folder_of_torchscript_files(tmp_path):
    _scripted(tmp_path / "encoder.jit", "trace")
    _scripted(tmp_path / "decoder.jit", "script")
    checkpoint = read_checkpoint(tmp_path)
    assert sorted(checkpoint.state_dicts) == ["decoder.jit", "encoder.jit"]
    for name in ("encoder.jit", "decoder.jit"):
        _assert_same(checkpoint.state_dicts[name], dict(torch.jit.load(str(tmp_path / name)).state_dict()))


# --- errors --------------------------------------------------------------------------------------------------


def test_unreadable_files_are_named(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(64)}, good)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(64), "hp": argparse.Namespace(a=1)}, legacy, _use_new_zipfile_serialization=False)
    cases = {
        "empty.pt": (b"", "is empty"),
        "text.ckpt": (b"model weights go here", "neither a zip archive"),
        "cut.pt": (good.read_bytes()[:200], "truncated or corrupt"),
        "cut-legacy.pt": (legacy.read_bytes()[:-9], "truncated"),
        "other.zip.pt": (_zip_bytes({"readme.txt": b"hello"}), "no <folder>/data.pkl"),
        "numbers.pt": (pickle.dumps({"epoch": 3, "hp": argparse.Namespace(a=1)}), "holds no state dict"),
        "list.pt": (pickle.dumps([1, 2]), "holds list"),
        "cut-pickle.pt": (pickle.dumps({"w": torch.ones(3), "hp": argparse.Namespace(a=1)})[:-30], "truncated"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            read_checkpoint(tmp_path / name)
        assert repr(str(tmp_path / name)) in str(info.value), name


def _zip_bytes(records: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in records.items():
            archive.writestr(name, content)
    return buffer.getvalue()
