"""The typed batch manifest: old manifests load and dump back as they were, the card is the same."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from batch import store as batch_store
from batch.card import build_card, render_markdown, role_models
from batch.export import export
from batch.filters import FilterConfig, apply_filters
from batch.jobs import SeedSet
from cli.batch import check_resumable, manifest_for
from cli.errors import UsageError
from dialogues.models import BatchManifest, SettingsDump
from runtime.settings import Settings
from tests.batch_docs import MANIFEST, SETTINGS, make_doc, make_run_dir


def old_manifest() -> dict:
    """A manifest with what later writers added left out: no `fingerprint`, no `agents` (top
    level or in the settings), no `roles`, no seed `order` or `skipped`, no library version."""
    manifest = copy.deepcopy(MANIFEST)
    del manifest["agents"]
    manifest["settings"] = {k: v for k, v in SETTINGS.items() if k != "agents"}
    manifest["library"] = {"name": "default"}
    return manifest


def written_manifest() -> dict:
    """A manifest as `ideas batch` writes it today (library metadata in the store's key order)."""
    settings = Settings()
    seeds = SeedSet(Path("seeds.jsonl"), "cd" * 32, "sharegpt", [], order="shuffled (seed 3)")
    library = {"name": "default", "counts": {"high": 12}, "origin": "bundled", "version": "2"}
    return manifest_for(seeds, 4, settings, library).dump()


def _text(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def _card(manifest: BatchManifest | dict, tmp_path: Path) -> tuple[str, str]:
    """Return the card's JSON and Markdown built from `manifest` (its time fixed)."""
    docs = [make_doc("0.0", ["q1", "q2"]), make_doc("1.0", ["q1", "q2", "q3"])]
    kept, report = apply_filters(docs, FilterConfig(dedup=False))
    result = export(kept, "openai", tmp_path / "data.jsonl")
    card = build_card(
        manifest, run_dir="runs/x", stored=2, failed=0, report=report, result=result, documents=kept
    )
    card.created_at = "2025-01-01T00:00:00+00:00"
    return _text(card.dump()), render_markdown(card)


@pytest.mark.parametrize(
    "manifest",
    [MANIFEST, old_manifest(), {"n": 1}, written_manifest()],
    ids=["test-helper", "fields-missing", "bare", "written-now"],
)
def test_a_manifest_loads_and_dumps_back_to_the_same_json(manifest, tmp_path):
    make_run_dir(tmp_path, [])
    path = tmp_path / batch_store.MANIFEST
    path.write_text(_text({"format": batch_store.FORMAT, **manifest}), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    loaded = batch_store.load_manifest(tmp_path)
    assert isinstance(loaded, BatchManifest)
    assert _text(loaded.dump()) == text  # the same keys, in the same order
    batch_store.BatchStore.open(tmp_path).write_manifest(loaded)
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text)
    assert _text(batch_store.load_manifest(tmp_path).dump()) == text


def test_the_test_helpers_run_directory_round_trips_byte_for_byte(tmp_path):
    make_run_dir(tmp_path, [make_doc("0.0", ["q1"])])
    path = tmp_path / batch_store.MANIFEST
    before = path.read_bytes()
    batch_store.BatchStore.open(tmp_path).write_manifest(batch_store.load_manifest(tmp_path))
    assert path.read_bytes() == before


def test_fields_missing_read_as_their_defaults():
    manifest = BatchManifest.model_validate(old_manifest())
    assert manifest.seeds.order == "file" and manifest.fingerprint == {}
    assert manifest.agents.critic is None and manifest.settings.agents.critic is None
    assert manifest.settings.roles == {} and manifest.settings.resolved("simulator").dump() == {}
    assert manifest.library.size() is None
    bare = BatchManifest.model_validate({})
    assert bare.n is None and bare.seeds.path is None and bare.dump() == {}


def test_typed_access_to_what_the_card_reads():
    manifest = BatchManifest.model_validate(written_manifest())
    settings = manifest.settings
    assert settings.model.model == Settings().model.model
    assert settings.resolved("simulator").temperature == 0.8
    assert settings.override("assistant").values() == {}
    assert settings.agents.notice is not None and manifest.agents.critic == "novelty"
    assert manifest.library.size() == 12 and manifest.seeds.order == "shuffled (seed 3)"
    assert settings.values(("top_k", "nope")) == {"top_k": Settings().top_k}


def test_unknown_keys_survive_a_round_trip():
    manifest = copy.deepcopy(MANIFEST) | {"future": {"b": 1, "a": 2}}
    manifest["seeds"] = manifest["seeds"] | {"origin": "hub"}
    manifest["settings"] = SETTINGS | {"roles": {"critic": {"model": "m", "adapter": "x"}}}
    assert _text(BatchManifest.model_validate(manifest).dump()) == _text(manifest)


@pytest.mark.parametrize("manifest", [MANIFEST, old_manifest(), {}, written_manifest()], ids=str)
def test_the_card_of_a_typed_manifest_is_the_card_of_its_json(manifest, tmp_path):
    typed = BatchManifest.model_validate(copy.deepcopy(manifest))
    assert _card(typed, tmp_path) == _card(manifest, tmp_path)


def test_the_card_of_an_old_manifest(tmp_path):
    card = json.loads(_card(old_manifest(), tmp_path)[0])
    assert card["models"]["assistant"] == {
        "agent": None,
        "model": "big-model",
        "endpoint": "http://gpu:8000/v1",
        "temperature": 0.7,
        "max_tokens": 512,
    }
    assert card["library"] == {"name": "default"}
    assert card["seeds"] == MANIFEST["seeds"]
    assert card["batch"] == {"created_at": MANIFEST["created_at"], "n": 2, "turns": 3}
    assert card["settings"] == {"top_k": 8}
    assert card["models"] == role_models(SettingsDump.of(old_manifest()["settings"]))


def test_the_card_keeps_the_library_in_the_manifests_order(tmp_path):
    card = json.loads(_card(written_manifest(), tmp_path)[0])
    assert list(card["library"]) == ["name", "counts", "origin", "version"]


def test_a_manifest_of_the_wrong_shape_is_a_store_error(tmp_path):
    make_run_dir(tmp_path, [])
    path = tmp_path / batch_store.MANIFEST
    path.write_text(json.dumps({"format": batch_store.FORMAT, "n": "many"}), encoding="utf-8")
    with pytest.raises(batch_store.BatchStoreError, match="not a valid ideas-batch/1 manifest"):
        batch_store.load_manifest(tmp_path)


def test_an_old_manifest_without_a_seed_order_resumes_in_file_order():
    settings = Settings()
    manifest = BatchManifest.model_validate(MANIFEST | {"fingerprint": settings.fingerprint()})
    seeds = SeedSet(Path("seeds.jsonl"), "ab" * 32, "openai", [])
    check_resumable(manifest, seeds, settings)
    with pytest.raises(UsageError, match="order file, sha256 abababababab"):
        check_resumable(manifest, seeds.shuffled(1), settings)
