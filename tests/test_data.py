"""Data sources, bad records, mixtures, streaming, packed sampling and pretokenize, on the Shapes world."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from unified_ar.train.data.bad import BadData, BadDataError
from unified_ar.train.data.mixture import Mixture
from unified_ar.train.data.sampler import MapBatches, PackedBatches, StreamBatches
from unified_ar.train.data.sources import (CaptionSource, ConversationSource, ImageCodes, TextSource,
                                           WebDatasetSource, load_code_table)
from unified_helpers import TINY_VQ

SIZE = 16  # pixels; the tiny VQ makes a 4x4 grid


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    from unified_ar.tokenizer.vq import VQ_PRESETS, VQModel, preset_config

    torch.manual_seed(0)
    return VQModel(preset_config(VQ_PRESETS, "VQ-shapes", **TINY_VQ)).save_pretrained(tmp_path_factory.mktemp("vq"))


@pytest.fixture(scope="module")
def encoder(vq_dir):
    from unified_ar.tokenizer.transforms import load_image, to_tensor
    from unified_ar.tokenizer.vq import VQModel

    vq = VQModel.from_pretrained(vq_dir)

    def encode(image) -> np.ndarray:
        pixels = load_image(image, SIZE) if not isinstance(image, Image.Image) else to_tensor(image.resize((SIZE, SIZE)))
        return vq.encode(pixels[None])[0].flatten().numpy()

    return encode


@pytest.fixture(scope="module")
def code_table(shapes_world, vq_dir, tmp_path_factory):
    from unified_ar.train.pretokenize import main

    out = tmp_path_factory.mktemp("codes")
    assert main([str(shapes_world / "captions_train.jsonl"), str(shapes_world / "conversations_train.json"),
                 "--vq", str(vq_dir), "--out", str(out), "--image-size", str(SIZE), "--shard-size", "40"]) == 0
    return out


def test_pretokenize_writes_sharded_codes_equal_to_encoding(shapes_world, code_table, encoder):
    summary = json.loads((code_table / "pretokenize.json").read_text())
    assert summary["images"] == 64 and summary["failed"] == 0 and len(summary["shards"]) == 2
    table = load_code_table(code_table)
    name = json.loads((shapes_world / "captions_train.jsonl").read_text().splitlines()[0])["image"]
    np.testing.assert_array_equal(table[name], encoder(shapes_world / name))


def test_sources_read_the_world_formats(shapes_world, code_table):
    codes = ImageCodes(shapes_world, load_code_table(code_table))
    captions = CaptionSource(shapes_world / "captions_train.jsonl", codes)
    conversations = ConversationSource(shapes_world / "conversations_train.json", codes)
    assert len(captions) == 64 and len(conversations) >= 64
    sample = captions[3]
    assert sample.kind == "generation" and sample.caption and sample.images[0].shape == (16,)
    chat = conversations[0]
    assert chat.kind == "comprehension" and chat.num_images == 1 and chat.images[0].shape == (16,)
    assert captions.meta(3).images == []  # metadata does not touch images


def _bad_world(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (SIZE, SIZE), (255, 0, 0)).save(good)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    rows = [{"image": "good.png", "caption": f"a red square {i}"} for i in range(16)]
    rows[2] = {"image": "missing.png", "caption": "gone"}
    rows[5] = {"image": "broken.png", "caption": "broken"}
    rows[9] = {"image": "good.png", "caption": 7}  # malformed: caption is not a string
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_records_are_skipped_counted_and_named(tmp_path, encoder, caplog):
    source = CaptionSource(_bad_world(tmp_path), ImageCodes(tmp_path, encoder=encoder))
    batches = MapBatches(source, lambda records, key: records, micro_batch_size=4, seed=0,
                         bad=BadData(max_fraction=0.5, min_records=4))
    got = [batch for _, (_, batch) in zip(range(4), batches.iter_from(0, 0, 1))]
    assert sum(len(b) for b in got) == 13
    assert batches.counters == {"records_seen": 16, "bad_records": 3}
    assert any("missing.png" in r.message for r in caplog.records)

    strict = MapBatches(source, lambda records, key: records, 4, seed=0, bad=BadData(max_fraction=0.1, min_records=4))
    with pytest.raises(BadDataError, match=r"records are bad .* first: .*captions.jsonl:\d+"):
        list(zip(range(4), strict.iter_from(0, 0, 1)))


def test_empty_conversation_and_text_source(tmp_path):
    conv = tmp_path / "conv.json"
    conv.write_text(json.dumps([{"id": "a", "conversations": []},
                                {"id": "b", "conversations": [{"from": "human", "value": "hi"},
                                                              {"from": "gpt", "value": "yes"}]}]))
    source = ConversationSource(conv, codes=None)
    from unified_ar.train.data.bad import BadRecord

    with pytest.raises(BadRecord, match="conv.json:0: empty or missing 'conversations'"):
        source[0]
    assert source[1].num_images == 0
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "a red circle"}) + "\n")
    assert TextSource(text)[0].text == "a red circle"


def test_webdataset_shards(tmp_path, encoder):
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(3):
            buffer = io.BytesIO()
            Image.new("RGB", (SIZE, SIZE), (0, 0, 255)).save(buffer, format="PNG")
            for name, payload in ((f"{i:04d}.png", buffer.getvalue()),
                                  (f"{i:04d}.json", json.dumps({"caption": f"blue {i}"}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    source = WebDatasetSource(str(tmp_path / "shard-*.tar"), encode=encoder)
    assert len(source) == 3
    sample = source[1]
    assert sample.caption == "blue 1" and sample.images[0].shape == (16,)


def test_mixture_follows_weights_and_is_a_pure_function():
    a, b = list(range(10)), list(range(100, 130))

    class Plain(list):
        meta = list.__getitem__

    mix = Mixture([Plain(a), Plain(b)], [0.75, 0.25], seed=3, length=2000)
    drawn = [mix[i] for i in range(2000)]
    assert 0.7 < np.mean([x < 100 for x in drawn]) < 0.8
    assert drawn[:50] == [Mixture([Plain(a), Plain(b)], [0.75, 0.25], seed=3)[i] for i in range(50)]


def test_stream_batches_resume_exactly(shapes_world, code_table):
    codes = ImageCodes(shapes_world, load_code_table(code_table))
    source = CaptionSource(shapes_world / "captions_train.jsonl", codes, streaming=True)
    stream = StreamBatches(source, lambda records, key: [r.record for r in records], 8, seed=0, buffer_size=16)
    first = [batch for _, (_, batch) in zip(range(10), stream.iter_from(0, 0, 1))]
    resumed = [batch for _, (_, batch) in zip(range(7), stream.iter_from(3, 0, 1))]
    assert resumed == first[3:]
    assert first[:8] != first[8:] + first[:6]  # epoch 2 is reshuffled


def test_packed_batches_fill_rows_and_resume_exactly(shapes_world, code_table, tmp_path):
    from unified_ar.train.collate import CollateConfig, Collator
    from unified_helpers import tiny_model

    model = tiny_model(tmp_path)
    codes = ImageCodes(shapes_world, load_code_table(code_table))
    mix = Mixture([CaptionSource(shapes_world / "captions_train.jsonl", codes),
                   ConversationSource(shapes_world / "conversations_train.json", codes)], [0.5, 0.5], seed=0)
    collator = Collator(model.layout, model.tokenizer, 16, CollateConfig(max_length=160), seed=0)
    packed = PackedBatches(mix, collator, rows=2, seed=0)
    run = [(p, b) for _, (p, b) in zip(range(6), packed.iter_from(0, 0, 2))]
    again = [(p, b) for _, (p, b) in zip(range(3), packed.iter_from(3, 0, 2))]
    for (p1, b1), (p2, b2) in zip(run[3:], again):
        assert p1 == p2 and all(torch.equal(b1[k], b2[k]) for k in b1)
    other_rank = next(packed.iter_from(0, 1, 2))[1]
    mine = run[0][1]["input_ids"]
    assert other_rank["input_ids"].shape != mine.shape or not torch.equal(other_rank["input_ids"], mine)
    real = sum(int(b["attention_mask"].sum()) for _, b in run)
    slots = sum(b["attention_mask"].numel() for _, b in run)
    assert real / slots > 0.9
