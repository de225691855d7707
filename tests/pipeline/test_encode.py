"""`tokenizer encode`: tokens equal the model's, resume and SIGKILL safety, bad files, two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from tokenizer import Tokenizer, cli
from tokenizer.data.preprocess import ImagePreprocess, load_for_tokenization
from tokenizer.data.sources import collect_inputs
from tokenizer.pipeline import EncodeOptions, OutputMismatchError, StrictModeError, encode_dataset
from tokenizer.tokens import TokenDataset, list_shards

from .conftest import killed_then_rerun, snapshot, tiny_model, write_image


def _options(**overrides) -> EncodeOptions:
    fields = {"preprocess": ImagePreprocess(factor=4), "shard_size": 5, "batch_size": 3, "progress": False}
    fields.update(overrides)
    return EncodeOptions(**fields)


def test_tokens_equal_the_models_and_the_manifest_describes_them(tmp_path, image_folder):
    model = tiny_model()
    inputs = collect_inputs([image_folder])
    summary = encode_dataset(inputs, model, tmp_path / "out", _options())
    assert summary.items == len(inputs) == 17 and summary.errors == 0
    assert [p.name for p in list_shards(tmp_path / "out")] == [f"tokens-0000{k}.safetensors" for k in range(4)]

    dataset = TokenDataset(tmp_path / "out")
    assert [row["source"] for row in (dataset[i] for i in range(len(dataset)))] == [str(p) for p in inputs]
    for i, path in enumerate(inputs):
        item = dataset[i]
        pixels = load_for_tokenization(path, ImagePreprocess(factor=4)).pixels
        expected = model.encode(pixels[None])[0]
        assert torch.equal(item["tokens"], expected), path
        assert item["shape"] == list(expected.shape)
        with Image.open(path) as image:
            assert (item["width"], item["height"]) == image.size
    # 33x47 is cropped to the largest multiple of 4: 32x44 -> an 8x11 grid.
    odd = next(dataset[i] for i in range(len(dataset)) if dataset[i]["source"].endswith("gen2.png"))
    assert odd["shape"] == [11, 8]
    assert summary.tokens == sum(dataset[i]["tokens"].numel() for i in range(len(dataset)))


def test_batch_size_and_workers_do_not_change_the_output(tmp_path, image_folder):
    inputs = collect_inputs([image_folder])
    encode_dataset(inputs, tiny_model(), tmp_path / "a", _options(batch_size=1))
    encode_dataset(inputs, tiny_model(), tmp_path / "b", _options(batch_size=4, workers=2))
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_a_rerun_skips_finished_shards_and_changes_nothing(tmp_path, image_folder):
    inputs = collect_inputs([image_folder])
    encode_dataset(inputs, tiny_model(), tmp_path / "out", _options())
    before = snapshot(tmp_path / "out")
    (tmp_path / "out" / "tokens-00002.safetensors").unlink()  # as if the run died before this shard
    summary = encode_dataset(inputs, tiny_model(), tmp_path / "out", _options())
    assert summary.shards_skipped == 3 and summary.shards_written == 1
    assert snapshot(tmp_path / "out") == before


def test_an_output_folder_of_another_tokenizer_or_settings_is_refused(tmp_path, image_folder):
    inputs = collect_inputs([image_folder])
    encode_dataset(inputs, tiny_model(), tmp_path / "out", _options())
    with pytest.raises(OutputMismatchError, match="different tokenizer"):
        encode_dataset(inputs, tiny_model(seed=1), tmp_path / "out", _options())
    with pytest.raises(OutputMismatchError, match="preprocessing"):
        encode_dataset(inputs, tiny_model(), tmp_path / "out", _options(preprocess=ImagePreprocess(size=16, factor=4)))
    with pytest.raises(OutputMismatchError, match="input list"):
        encode_dataset(inputs[:-1], tiny_model(), tmp_path / "out", _options())
    with pytest.raises(OutputMismatchError, match="max-file-bytes"):  # it decides which files are read at all
        encode_dataset(inputs, tiny_model(), tmp_path / "out", _options(max_file_bytes=1 << 20))


def test_a_folder_from_before_max_file_bytes_was_recorded_still_resumes(tmp_path, image_folder):
    inputs = collect_inputs([image_folder])
    encode_dataset(inputs, tiny_model(), tmp_path / "out", _options(max_file_bytes=1 << 20))
    run_file = tmp_path / "out" / "run.json"
    run = json.loads(run_file.read_text())
    del run["max_file_bytes"]  # as an older version wrote it
    run_file.write_text(json.dumps(run))
    (tmp_path / "out" / "tokens-00001.safetensors").unlink()
    summary = encode_dataset(inputs, tiny_model(), tmp_path / "out", _options(max_file_bytes=1 << 20))
    assert summary.shards_written == 1


def _bad_folder(root: Path) -> dict[str, str | None]:
    """Every kind of awkward file; maps name -> the error kind expected (None: tokenized)."""
    folder = root / "bad"
    expected: dict[str, str | None] = {}
    good = write_image(folder / "good.png", 32, 32, seed=1)
    expected["good.png"] = None
    for mode in ("L", "P", "RGBA", "CMYK", "LA"):
        name = f"mode-{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        write_image(folder / name, 36, 28, seed=2, mode=mode)
        expected[name] = None
    sixteen = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "sixteen-bit.png")  # a uint16 array is mode I;16
    expected["sixteen-bit.png"] = None
    (folder / "truncated.png").write_bytes(good.read_bytes()[:200])
    expected["truncated.png"] = "unreadable"
    (folder / "garbage.jpg").write_bytes(os.urandom(300))
    expected["garbage.jpg"] = "unreadable"
    (folder / "empty.png").write_bytes(b"")
    expected["empty.png"] = "unreadable"
    (folder / "notes.txt").write_text("not an image")
    expected["notes.txt"] = "unsupported"
    (folder / "clip.mp4").write_bytes(b"\x00" * 64)
    expected["clip.mp4"] = "unsupported"
    write_image(folder / "tiny.png", 3, 2, seed=3)
    expected["tiny.png"] = "too_small"
    return expected


def test_bad_files_are_recorded_and_never_end_the_run(tmp_path, model_dir):
    expected = _bad_folder(tmp_path)
    out = tmp_path / "out"
    code = cli.main(["encode", str(tmp_path / "bad"), "--model", str(model_dir), "--out", str(out), "--workers", "0"])
    assert code == 0
    errors = {Path(r["source"]).name: r for r in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {Path(r["source"]).name for r in manifest} == {n for n, kind in expected.items() if kind is None}
    assert {n: r["kind"] for n, r in errors.items()} == {n: k for n, k in expected.items() if k is not None}
    for name, record in errors.items():
        assert name in record["error"]  # the reason names the file


def test_strict_stops_at_the_first_bad_file(tmp_path, model_dir, capsys):
    _bad_folder(tmp_path)
    code = cli.main(["encode", str(tmp_path / "bad"), "--model", str(model_dir), "--out", str(tmp_path / "out"),
                     "--workers", "0", "--strict"])  # fmt: skip
    assert code == 1
    assert "--strict" in capsys.readouterr().err
    with pytest.raises(StrictModeError):
        encode_dataset(collect_inputs([tmp_path / "bad"]), tiny_model(), tmp_path / "o2", _options(strict=True))


def test_cli_prints_a_summary_and_refuses_a_mismatched_folder(tmp_path, image_folder, model_dir, capsys):
    out = tmp_path / "out"
    args = ["encode", str(image_folder), "--model", str(model_dir), "--out", str(out), "--workers", "0"]
    assert cli.main([*args, "--size", "32"]) == 0
    assert "tokenized 17 items" in capsys.readouterr().out
    assert cli.main([*args, "--size", "16"]) == 2
    assert "different preprocessing" in capsys.readouterr().err


def test_sigkill_at_any_moment_then_rerun_gives_the_same_output(tmp_path, image_folder, model_dir):
    args = [sys.executable, "-m", "tokenizer", "encode", str(image_folder), "--model", str(model_dir),
            "--workers", "0", "--shard-size", "2", "--batch-size", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run([*args, "--out", str(reference)], check=True, env=env, capture_output=True)
    killed = killed_then_rerun(args, tmp_path / "killed")
    assert snapshot(killed) == snapshot(reference)  # stale temporary files included: none are left


def _rank_worker(rank: int, world: int, init_file: str, model_dir: str, image_folder: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = Tokenizer.from_pretrained(model_dir)
        encode_dataset(collect_inputs([image_folder]), model, out, _options())
    finally:
        dist.destroy_process_group()


def test_two_processes_write_the_same_output_as_one(tmp_path, image_folder, model_dir):
    single = tmp_path / "single"
    encode_dataset(collect_inputs([image_folder]), Tokenizer.from_pretrained(model_dir), single, _options())
    pair = tmp_path / "pair"
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(model_dir), str(image_folder), str(pair)), nprocs=2)
    assert snapshot(pair) == snapshot(single)


def test_inputs_from_globs_and_lists(tmp_path, image_folder):
    everything = collect_inputs([image_folder])
    pngs = collect_inputs([str(image_folder / "**" / "gen*.png")])
    assert sorted(p.name for p in pngs) == sorted(f"gen{i}.png" for i in range(9))
    listing = tmp_path / "list.txt"
    listing.write_text("# two files\n" + "\n".join(str(p) for p in everything[:2]) + "\n\n")
    assert collect_inputs([listing]) == everything[:2]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"path": str(everything[3])}) + "\n" + json.dumps(str(everything[4])) + "\n")
    assert collect_inputs([jsonl]) == [everything[3], everything[4]]
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_inputs([tmp_path / "nope"])
