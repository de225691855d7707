"""`--out`: a folder we did not make is refused untouched, one run at a time holds it, and a resumed run redoes
the shards whose inputs changed."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
import torch

from tokenizer import cli
from tokenizer._output import LOCK_FILE
from tokenizer.data.preprocess import ImagePreprocess, load_for_tokenization
from tokenizer.data.sources import collect_inputs
from tokenizer.pipeline import EncodeOptions, OutputBusyError, OutputMismatchError, encode_dataset
from tokenizer.tokens import TokenDataset

from .conftest import snapshot, tiny_model, write_image


def _options(**overrides) -> EncodeOptions:
    fields = {"preprocess": ImagePreprocess(factor=4), "shard_size": 5, "batch_size": 3, "progress": False}
    fields.update(overrides)
    return EncodeOptions(**fields)


@pytest.fixture
def small_folder(tmp_path: Path, one_thread: None) -> Path:
    """Eleven small generated images: three shards of five inputs."""
    for i in range(11):
        write_image(tmp_path / "small" / f"img{i:02d}.png", 12 + 4 * (i % 2), 12, seed=i)
    return tmp_path / "small"


def _row(out: Path, source: Path) -> dict:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return next(row for row in rows if row["source"] == str(source))


def test_a_non_empty_folder_we_did_not_make_is_refused_and_left_untouched(tmp_path, small_folder, model_dir, capsys):
    out = tmp_path / "theirs"
    (out / "parts").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "errors.jsonl").write_text("their log\n")
    (out / ".draft.tmp").write_text("a temporary file of theirs")
    (out / "parts" / "manifest-00000.jsonl").write_text("theirs\n")
    before = snapshot(out)
    code = cli.main(["encode", str(small_folder), "--model", str(model_dir), "--out", str(out), "--workers", "0"])
    assert code == 2
    message = capsys.readouterr().err
    assert str(out) in message and "run.json" in message and "not empty" in message
    with pytest.raises(OutputMismatchError, match="not empty"):
        encode_dataset(collect_inputs([small_folder]), tiny_model(), out, _options())
    assert snapshot(out) == before  # nothing deleted, overwritten or added (not even the lock file)


def test_only_our_own_temporary_files_are_removed(tmp_path, small_folder):
    inputs = collect_inputs([small_folder])[:3]
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).touch()  # a run killed before it wrote run.json leaves these two
    (out / ".run.json.4242.0123abcd.tmp").write_text("{")
    encode_dataset(inputs, tiny_model(), out, _options())
    ours = [out / ".tokens-00000.safetensors.77.89abcdef.tmp", out / "parts" / ".inputs-00000.jsonl.77.89abcdef.tmp"]
    theirs = [out / ".notes.tmp", out / "parts" / ".tokens-00000.safetensors.77.89abcdef.tmp", out / "x.tmp"]
    for path in ours + theirs:
        path.write_text("left over")
    encode_dataset(inputs, tiny_model(), out, _options())
    assert not any(p.exists() for p in ours) and not (out / ".run.json.4242.0123abcd.tmp").exists()
    assert all(p.read_text() == "left over" for p in theirs)


def test_a_second_encoder_on_the_same_folder_is_refused_while_the_first_runs(tmp_path, small_folder, model_dir, capsys):
    inputs = collect_inputs([small_folder])[:2]
    out = tmp_path / "out"
    model = tiny_model()
    seen: list[str] = []
    encode = model.encode

    def encode_and_try_a_second_run(pixels: torch.Tensor) -> torch.Tensor:
        if not seen:  # the first run holds the folder: a second one must not start
            with pytest.raises(OutputBusyError) as caught:
                encode_dataset(inputs, tiny_model(), out, _options())
            seen.append(str(caught.value))
        return encode(pixels)

    model.encode = encode_and_try_a_second_run
    encode_dataset(inputs, model, out, _options())
    assert seen and str(out) in seen[0] and "another `tokenizer encode`" in seen[0]

    with open(out / LOCK_FILE) as held:  # as if another encoder ran now
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        args = ["encode", *map(str, inputs), "--model", str(model_dir), "--out", str(out), "--workers", "0"]
        assert cli.main(args) == 2
        assert "being written by another" in capsys.readouterr().err
    encode_dataset(inputs, tiny_model(), out, _options())  # the lock went with its holder


def test_resume_redoes_the_shards_whose_inputs_changed(tmp_path, small_folder):
    inputs = collect_inputs([small_folder])
    out = tmp_path / "out"
    encode_dataset(inputs, tiny_model(), out, _options())
    shards = sorted(out.glob("tokens-*.safetensors"))
    written = {p.name: p.stat().st_mtime_ns for p in shards}
    changed = inputs[6]  # in shard 1 of 3 (5 inputs per shard)
    old_sha = _row(out, changed)["sha256"]
    write_image(changed, 24, 20, seed=99)
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))  # a modification time unlike the recorded one

    summary = encode_dataset(inputs, tiny_model(), out, _options())
    assert (summary.shards_written, summary.shards_redone, summary.shards_skipped) == (1, 1, 2)
    after = {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("tokens-*.safetensors"))}
    assert {n for n in after if after[n] != written[n]} == {"tokens-00001.safetensors"}  # the others untouched
    row = _row(out, changed)
    assert row["sha256"] != old_sha and row["shape"] == [5, 6]
    fresh = tmp_path / "fresh"  # the resumed folder equals a run from scratch over today's inputs
    encode_dataset(inputs, tiny_model(), fresh, _options())
    assert snapshot(out) == snapshot(fresh)
    expected = tiny_model().encode(load_for_tokenization(changed, ImagePreprocess(factor=4)).pixels[None])[0]
    dataset = TokenDataset(out)
    item = next(dataset[i] for i in range(len(dataset)) if dataset[i]["source"] == str(changed))
    assert torch.equal(item["tokens"], expected)

    (out / "parts" / "inputs-00002.jsonl").unlink()  # a shard without a record of its inputs (older version)
    summary = encode_dataset(inputs, tiny_model(), out, _options())
    assert (summary.shards_redone, summary.shards_skipped) == (1, 2)
    assert snapshot(out) == snapshot(fresh)


def test_the_inputs_part_records_size_and_mtime_of_each_input(tmp_path, small_folder):
    inputs = collect_inputs([small_folder])[:3] + [tmp_path / "missing.png"]
    encode_dataset(inputs, tiny_model(), tmp_path / "out", _options(shard_size=10))
    rows = [json.loads(line) for line in (tmp_path / "out" / "parts" / "inputs-00000.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == [str(p) for p in inputs]
    for row, path in zip(rows[:3], inputs):
        assert row["stat"] == [path.stat().st_size, path.stat().st_mtime_ns]
    assert rows[3]["stat"] is None
