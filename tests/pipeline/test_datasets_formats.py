"""`tokenizer encode` over WebDataset tar shards and Parquet files: samples, metadata, errors, resume, ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tokenizer import Tokenizer, cli
from tokenizer.data.containers import TableColumns
from tokenizer.data.preprocess import ImagePreprocess, load_for_tokenization
from tokenizer.data.sources import collect_inputs, expand_braces
from tokenizer.pipeline import EncodeOptions, encode_dataset
from tokenizer.tokens import TokenDataset

from .conftest import killed_then_rerun, snapshot, tiny_model, write_image, write_tar

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _options(**overrides) -> EncodeOptions:
    fields = {"preprocess": ImagePreprocess(factor=4), "shard_size": 3, "batch_size": 2, "progress": False}
    fields.update(overrides)
    return EncodeOptions(**fields)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _images(folder: Path, count: int, seed: int) -> list[Path]:
    sizes = [(32, 32), (40, 24), (36, 44)]
    return [write_image(folder / f"{seed}-{i}.png", *sizes[i % 3], seed=seed * 100 + i) for i in range(count)]


def write_parquet(path: Path, images: list[bytes | None], huggingface: bool = True, **columns: list) -> Path:
    """A Parquet file like a Hugging Face image dataset's: an ``image`` {bytes, path} struct column (tagged in
    the schema metadata with ``huggingface``; else plain binary) and ``columns``; row groups of two rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if huggingface:
        cells = [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)]
        metadata = {"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}})}
    else:
        cells, metadata = images, None
    table = pa.table({"image": cells, **columns})
    pq.write_table(table.replace_schema_metadata(metadata), path, row_group_size=2)
    return path


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Three tar shards and one Parquet file; shard 1 and the Parquet file hold one bad sample each."""
    folder = tmp_path / "shards"
    for s in range(3):
        members = []
        for i, image in enumerate(_images(tmp_path / "png", 3, seed=s)):
            key = f"{s:05d}{i:04d}"
            members += [(f"{key}.png", image.read_bytes()), (f"{key}.txt", f"caption {s}/{i}".encode())]
            members += [(f"{key}.json", json.dumps({"shard": s, "i": i}).encode()), (f"{key}.cls", str(i).encode())]
        if s == 1:
            members += [("corrupt.png", b"not a png"), ("corrupt.txt", b"x"), ("lonely.json", b"{}")]
        write_tar(folder / f"{s:05d}.tar", members)
    pngs = [p.read_bytes() for p in _images(tmp_path / "png", 4, seed=9)]
    write_parquet(folder / "table.parquet", [*pngs, None], caption=[f"row {i}" for i in range(5)], label=list(range(5)))
    return folder


def test_tar_samples_are_tokenized_with_their_metadata_and_bad_samples_recorded(tmp_path):
    images = _images(tmp_path / "png", 3, seed=1)
    members = [("a.png", images[0].read_bytes()), ("a.txt", b"a cat"), ("a.json", b'{"w": 32}'), ("a.cls", b"7")]
    members += [("sub/b.png", images[1].read_bytes()), ("sub/b.seg.png", images[2].read_bytes())]
    members += [("c.png", images[0].read_bytes()[:100]), ("d.json", b"{}"), ("e.png", b""), ("f.txt", b"x")]
    members += [("._a.png", b"macOS litter"), ("g.png", images[2].read_bytes()), ("g.json", b"{broken")]
    tar = write_tar(tmp_path / "shard.tar", members)
    model = tiny_model()
    summary = encode_dataset([tar], model, tmp_path / "out", _options())
    assert (summary.items, summary.errors) == (2, 5)

    manifest = _rows(tmp_path / "out" / "manifest.jsonl")
    assert [r["source"] for r in manifest] == [f"{tar}#a", f"{tar}#sub/b"]
    assert manifest[0]["meta"] == {"txt": "a cat", "json": {"w": 32}, "cls": 7}
    assert manifest[1]["meta"] == {}  # the image is the first image member: b.png, not b.seg.png
    dataset = TokenDataset(tmp_path / "out")
    for item, image in zip((dataset[0], dataset[1]), images):
        expected = model.encode(load_for_tokenization(image, ImagePreprocess(factor=4)).pixels[None])[0]
        assert torch.equal(item["tokens"], expected)
    assert dataset[0]["meta"]["txt"] == "a cat" and dataset[0]["meta"]["cls"] == 7

    errors = {r["source"].split("#")[1]: r for r in _rows(tmp_path / "out" / "errors.jsonl")}
    assert {key: r["kind"] for key, r in errors.items()} == {
        "c": "unreadable", "d": "missing_media", "e": "unreadable", "f": "missing_media", "g": "unreadable",
    }  # fmt: skip
    assert all(f"{tar}#{key}" in r["error"] for key, r in errors.items())


def test_parquet_rows_with_detected_or_named_columns(tmp_path):
    pngs = [p.read_bytes() for p in _images(tmp_path / "png", 3, seed=2)]
    table = write_parquet(tmp_path / "hf.parquet", [pngs[0], None, b"garbage", pngs[1], pngs[2]],
                          caption=list("abcde"), label=[0, 1, 2, 3, None])  # fmt: skip
    model = tiny_model()
    columns = TableColumns(keep=("caption", "label"))
    encode_dataset([table], model, tmp_path / "out", _options(columns=columns))
    dataset = TokenDataset(tmp_path / "out")
    rows = [dataset[i] for i in range(len(dataset))]
    assert [(r["source"], r["meta"]) for r in rows] == [
        (f"{table}#0", {"caption": "a", "label": 0}),
        (f"{table}#3", {"caption": "d", "label": 3}),
        (f"{table}#4", {"caption": "e", "label": None}),
    ]
    (tmp_path / "p.png").write_bytes(pngs[1])
    expected = model.encode(load_for_tokenization(tmp_path / "p.png", ImagePreprocess(factor=4)).pixels[None])[0]
    assert torch.equal(rows[1]["tokens"], expected)
    errors = _rows(tmp_path / "out" / "errors.jsonl")
    assert [(r["source"], r["kind"]) for r in errors] == [(f"{table}#1", "missing_media"), (f"{table}#2", "unreadable")]

    plain = write_parquet(tmp_path / "plain.parquet", pngs, huggingface=False, jpg=pngs)  # two binary columns
    with pytest.raises(ValueError, match="several columns.*--image-column"):
        encode_dataset([plain], model, tmp_path / "o2", _options())
    with pytest.raises(ValueError, match="no column 'nope'.*--keep-columns"):
        encode_dataset([plain], model, tmp_path / "o3", _options(columns=TableColumns("jpg", ("nope",))))
    summary = encode_dataset([plain], model, tmp_path / "o4", _options(columns=TableColumns("jpg")))
    assert summary.items == 3 and _rows(tmp_path / "o4" / "manifest.jsonl")[0]["meta"] == {}


def test_a_shard_gives_the_same_tokens_as_its_images_as_loose_files(tmp_path):
    images = _images(tmp_path / "png", 5, seed=3)
    tar = write_tar(tmp_path / "s.tar", [(f"{i}.png", p.read_bytes()) for i, p in enumerate(images)])
    encode_dataset(images, tiny_model(), tmp_path / "loose", _options())
    encode_dataset([tar], tiny_model(), tmp_path / "tar", _options())
    loose, packed = snapshot(tmp_path / "loose"), snapshot(tmp_path / "tar")
    shards = [name for name in loose if name.startswith("tokens-")]
    assert shards and all(loose[name] == packed[name] for name in shards)


def test_broken_and_cut_short_containers_are_errors_not_crashes(tmp_path):
    images = _images(tmp_path / "png", 3, seed=4)
    whole = write_tar(tmp_path / "whole.tar", [(f"{i}.png", p.read_bytes()) for i, p in enumerate(images)])
    cut = tmp_path / "cut.tar"
    data = whole.read_bytes()
    cut.write_bytes(data[: 512 + 512 + len(images[0].read_bytes()) + 600])  # one whole sample, then mid-member
    (tmp_path / "junk.tar").write_bytes(bytes(range(256)) * 8)  # no valid tar header
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 but not really")
    inputs = collect_inputs([tmp_path / "cut.tar", tmp_path / "junk.tar", tmp_path / "junk.parquet"])
    summary = encode_dataset(inputs, tiny_model(), tmp_path / "out", _options())
    assert summary.items == 1
    assert [r["source"] for r in _rows(tmp_path / "out" / "manifest.jsonl")] == [f"{cut}#0"]
    errors = {r["source"]: r["kind"] for r in _rows(tmp_path / "out" / "errors.jsonl")}
    assert errors == {f"{cut}#1": "unreadable", str(cut): "unreadable", str(tmp_path / "junk.tar"): "unreadable",
                      str(tmp_path / "junk.parquet"): "unreadable"}  # fmt: skip


def test_a_changed_shard_is_redone_on_rerun(tmp_path, shards):
    inputs = collect_inputs([shards])
    encode_dataset(inputs, tiny_model(), tmp_path / "out", _options())
    before = snapshot(tmp_path / "out")
    os.utime(shards / "00001.tar", ns=(1, 1))  # its two chunks (five samples) are redone
    summary = encode_dataset(inputs, tiny_model(), tmp_path / "out", _options())
    assert (summary.shards_redone, summary.shards_written, summary.shards_skipped) == (2, 2, 4)
    after = snapshot(tmp_path / "out")
    assert {k for k in after if after[k] != before[k]} == {"parts/inputs-00001.jsonl", "parts/inputs-00002.jsonl"}


def test_brace_ranges_expand_in_order_and_name_a_missing_shard(tmp_path, shards):
    assert expand_braces("s/{08..11}.tar") == ["s/08.tar", "s/09.tar", "s/10.tar", "s/11.tar"]
    assert expand_braces("{a,b}{1..2}") == ["a1", "a2", "b1", "b2"]
    assert expand_braces("x{y}.tar") == ["x{y}.tar"]
    assert collect_inputs([f"{shards}/{{00000..00002}}.tar"]) == sorted(shards.glob("*.tar"))
    with pytest.raises(FileNotFoundError, match="00003.tar"):
        collect_inputs([f"{shards}/{{00000..00003}}.tar"])


def test_parquet_without_pyarrow_names_the_extra(tmp_path, shards, monkeypatch, model_dir, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # what `import pyarrow.parquet` meets when absent
    code = cli.main(["encode", str(shards / "table.parquet"), "--model", str(model_dir), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "pip install 'tessera-tokenizers[data]'" in capsys.readouterr().err


def test_sigkill_then_rerun_gives_the_same_output(tmp_path, shards, model_dir):
    args = [sys.executable, "-m", "tokenizer", "encode", f"{shards}/{{00000..00002}}.tar",
            str(shards / "table.parquet"), "--model", str(model_dir), "--workers", "0", "--shard-size", "2", "--batch-size", "1",
            "--keep-columns", "caption,label"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run([*args, "--out", str(reference)], check=True, env=env, capture_output=True)
    assert len(_rows(reference / "manifest.jsonl")) == 13 and len(_rows(reference / "errors.jsonl")) == 3
    killed = killed_then_rerun(args, tmp_path / "killed")
    assert snapshot(killed) == snapshot(reference)


def _rank_worker(rank: int, world: int, init_file: str, model_dir: str, inputs: list[str], out: str) -> None:
    """One torchrun-like rank; its summary is left in ``{out}.rank{rank}.json``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        options = _options(columns=TableColumns(keep=("caption",)))
        summary = encode_dataset(collect_inputs(inputs), Tokenizer.from_pretrained(model_dir), out, options)
        Path(f"{out}.rank{rank}.json").write_text(json.dumps(asdict(summary)))
    finally:
        dist.destroy_process_group()


def test_two_processes_split_by_shard_and_write_the_same_output_as_one(tmp_path, shards, model_dir):
    loose = _images(tmp_path / "loose", 4, seed=7)  # loose files mixed in: chunked as before
    inputs = [str(shards), *map(str, loose)]
    single = tmp_path / "single"
    options = _options(columns=TableColumns(keep=("caption",)))
    encode_dataset(collect_inputs(inputs), Tokenizer.from_pretrained(model_dir), single, options)
    pair = tmp_path / "pair"
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(model_dir), inputs, str(pair)), nprocs=2)
    assert snapshot(pair) == snapshot(single)
    manifest = _rows(single / "manifest.jsonl")
    assert {r["meta"]["txt"] for r in manifest if ".tar#" in r["source"]} == {
        f"caption {s}/{i}" for s in range(3) for i in range(3)
    }
    assert [r["meta"] for r in manifest if ".parquet#" in r["source"]] == [{"caption": f"row {i}"} for i in range(4)]


def test_two_processes_share_the_row_groups_of_one_parquet_file_and_resume(tmp_path, model_dir):
    pngs = [p.read_bytes() for p in _images(tmp_path / "png", 7, seed=5)]
    table = write_parquet(tmp_path / "one.parquet", pngs, caption=[f"row {i}" for i in range(7)])  # groups 2,2,2,1
    options = _options(columns=TableColumns(keep=("caption",)))  # chunks of 3 rows: rank 0, rank 1, rank 0
    single = tmp_path / "single"
    encode_dataset([table], Tokenizer.from_pretrained(model_dir), single, options)
    pair = tmp_path / "pair"

    def run_pair(attempt: int) -> list[dict]:
        init = str(tmp_path / f"init{attempt}")
        mp.spawn(_rank_worker, args=(2, init, str(model_dir), [str(table)], str(pair)), nprocs=2)
        return [json.loads(Path(f"{pair}.rank{rank}.json").read_text()) for rank in range(2)]

    ranks = run_pair(0)
    assert snapshot(pair) == snapshot(single)
    assert [(r["items"], r["shards_written"]) for r in ranks] == [(4, 2), (3, 1)]  # both ranks read the file

    (pair / "tokens-00001.safetensors").unlink()  # as if rank 1 was killed before it committed its chunk
    (pair / "manifest.jsonl").unlink()
    ranks = run_pair(1)
    assert [(r["shards_written"], r["shards_skipped"]) for r in ranks] == [(0, 2), (1, 0)]
    assert snapshot(pair) == snapshot(single)
