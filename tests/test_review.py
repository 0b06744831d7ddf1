"""Human review: sheets, the review page in a real browser, and the loop back into mining.

The browser test drives Debian's chromium (installed by .ci/run) with Playwright on a mining
run of the shipped models (a tiny budget): review a class, reject two samples (a click and a
key), export the manifest, rerun the mining loop with it. It also takes the README's
screenshot: LTG_REVIEW_SCREENSHOT=docs/review_page.png pytest tests/test_review.py.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_synthetic import make_dataset
from test_vlm import FakeServer, ok_body

from ltg_jax import cli, descriptors, io, mining, review, sheets
from ltg_jax.data import fashion_mnist, synthetic

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LTG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The flags a closed, headless machine needs (no sandbox as root, no background traffic).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def page_data(html_path: Path) -> dict:
    """The JSON a review page embeds."""
    html = html_path.read_text()
    found = re.search(r'<script id="ltg-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


# ---------------------------------------------------------------- sheets


def test_sheet_tiles_are_upscaled_captioned_and_mismatches_red():
    tiles = [np.full((32, 32, 1), v, np.float32) for v in (-1.0, 0.0, 1.0)]
    rows = [
        {"index": 7, "class_id": 1, "signals": {"guidance": 0.5}, "predicted_class": 1,
         "predicted_name": "Trouser", "predicted_prob": 0.9},
        {"index": 2, "class_id": 1, "signals": {"guidance": 0.9}, "predicted_class": 4,
         "predicted_name": "Coat", "predicted_prob": 0.6},
        {"index": 3, "class_id": 1, "signals": {}},
    ]  # fmt: skip
    ordered = sheets.hardest_first(rows)
    assert [r["index"] for r in ordered] == [2, 7, 3]  # highest signal first, unscored last
    caps = [sheets.caption(r) for r in rows]
    assert caps[0] == (["#7  0.5", "Trouser 0.90"], False)
    assert caps[1] == (["#2  0.9", "Coat 0.60"], True)
    sheet = sheets.render(tiles, caps, columns=2, row_labels=["Trouser", ""], title="t")
    at = sheets.layout((32, 32, 1), 2, 2, ["Trouser", ""], "t")
    assert at.scale == 3 and at.left > 0
    for i, value in enumerate((0, 128, 255)):
        x, y = at.origin(i)
        assert (sheet[y : y + 96, x : x + 96] == value).all()
    red = (sheet[..., 0] > 150) & (sheet[..., 1] < 80)

    def caption_box(i):
        x, y = at.origin(i)
        return red[y + 96 : y + at.cell[0], x : x + 96]

    assert caption_box(1).any() and not caption_box(0).any()  # only the mismatch is red


# ---------------------------------------------------------------- the page, without a browser


def test_page_links_images_relatively_and_escapes_the_data(tmp_path):
    make_dataset(tmp_path / "run" / "data", classes=((0, "T-shirt</script>"), (3, "Dress")))
    rows = synthetic.read_rows(tmp_path / "run" / "data")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"file_name,decision,note\n{rows[1]['file_name']},flag,why\n")
    config = cli.load_config_file(ROOT / "configs" / "review.py")
    config.data, config.manifest = str(tmp_path / "run"), str(manifest)
    out = review.run_review(config, tmp_path / "pages")
    page = Path(out["page"])
    assert page.name == "run.html" and out["samples"] == 6
    data = page_data(page)  # the class name's "</script>" did not end the script element
    assert data["classes"][0] == "T-shirt</script>" and data["manifest"] == "manifest_run.csv"
    for item in data["items"]:
        assert (page.parent / item["src"]).resolve() == (
            tmp_path / "run" / "data" / item["file"]
        ).resolve()
    assert data["decisions"] == {rows[1]["file_name"]: {"decision": "flag", "note": "why"}}
    bad = cli.load_config_file(ROOT / "configs" / "review.py")
    bad.data = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="--config.data=.*no metadata.jsonl"):
        review.run_review(bad, tmp_path / "other")


# ---------------------------------------------------------------- the page, in a browser


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """A mining run of the shipped LDM, predictor and oracle with a tiny budget."""
    config = cli.load_config_file(ROOT / "configs" / "mine.py", "test")
    shipped = cli.load_config_file(ROOT / "configs" / "mine.py")
    config.predictor, config.oracle, config.pipeline = (
        shipped.predictor, shipped.oracle, shipped.pipeline,
    )  # fmt: skip
    config.ltg.signal = "epistemic"
    config.ltg.sampler.num_steps = 25  # the shipped model's sampling (legible samples)
    config.ltg.batch_size = 4
    config.budget.few = 4  # 12 samples per synthetic arm
    config.seeds = (0,)
    config.review.oracle_filter = True
    workdir = tmp_path_factory.mktemp("mined")
    out = mining.run_mining(config, workdir)
    return config, workdir, out


def browser():
    """A Playwright chromium launcher, or a skip that says what to install."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is a dev dependency: make install"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    return sync_api.sync_playwright()


@pytest.mark.slow
def test_review_page_in_a_browser_then_the_mining_loop_reads_it(mined, tmp_path):
    config, workdir, out = mined
    assert out["review_pages"] == {"ltg": "review/ltg.html", "unguided": "review/unguided.html"}
    page_path = workdir / "review" / "ltg.html"
    rows = synthetic.read_rows(workdir / "synthetic" / "ltg" / "data")
    boots = sheets.hardest_first([r for r in rows if r["class_name"] == "Ankle boot"])
    with browser() as p:
        chrome = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chrome.new_context(viewport={"width": 1000, "height": 470}, accept_downloads=True)
        page = context.new_page()
        page.goto(page_path.as_uri())
        progress = page.locator("#progress")
        assert progress.inner_text().startswith("0 reviewed of 12")
        page.select_option("#class", label="Ankle boot")  # review one class
        cards = page.locator(".card")
        assert cards.count() == 4
        # Hardest first, as on the contact sheets.
        assert [cards.nth(i).get_attribute("data-file") for i in range(4)] == [
            r["file_name"] for r in boots
        ]
        cards.nth(0).locator("button[data-word=reject]").click()  # by click
        cards.nth(0).locator("textarea").fill("heel too high, reads as a sandal")
        cards.nth(1).locator("img").click()
        page.keyboard.press("r")  # by key; focus moves on to the next sample
        page.keyboard.press("a")
        assert progress.inner_text().startswith("3 reviewed of 12 (1 accepted, 2 rejected")
        assert cards.nth(0).get_attribute("data-decision") == "reject"
        shot = tmp_path / "review_page.png"
        page.screenshot(path=str(shot))
        with page.expect_download() as download:
            page.click("#export")
        manifest = tmp_path / download.value.suggested_filename
        download.value.save_as(str(manifest))
        page.reload()  # reopening restores the decisions (browser storage)
        assert page.locator("#progress").inner_text().startswith("3 reviewed of 12")
        chrome.close()
    if os.environ.get("LTG_REVIEW_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["LTG_REVIEW_SCREENSHOT"])
    assert io.load_png(shot).shape[:2] == (470, 1000)

    assert manifest.name == "manifest_ltg.csv"
    with manifest.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 12 and {r["file_name"] for r in table} == {r["file_name"] for r in rows}
    decided = {
        r["file_name"]: (r["decision"], r["note"]) for r in table if r["decision"] != "unreviewed"
    }
    assert decided == {
        boots[0]["file_name"]: ("reject", "heel too high, reads as a sandal"),
        boots[1]["file_name"]: ("reject", ""),
        boots[2]["file_name"]: ("accept", ""),
    }

    # The mining loop reads it: only review, the LTG arm's fine-tuning and the report rerun.
    config.review.manifest.ltg = str(manifest)
    again = mining.run_mining(config, workdir)
    assert again["synthetic"]["ltg"]["rejected_by_manifest"] == 2
    assert again["synthetic"]["ltg"]["reviewed"] == 3 and again["kpis"]["reviewed"] == 3
    ran = again["stages_run_this_time"]
    assert "finetune/ltg/seed_0" in ran
    assert not [
        s
        for s in ran
        if s.startswith("generate") or s in ("finetune/real/seed_0", "finetune/unguided/seed_0")
    ]
    ev = io.read_json(workdir / "finetune" / "ltg" / "seed_0" / "eval.json")
    assert ev["train"]["num_synthetic"] == again["synthetic"]["ltg"]["kept"]
    # Every sample's review record: the oracle's verdict, the decision, whether it was used.
    record = {r["file_name"]: r for r in io.read_jsonl(workdir / "review" / "ltg.jsonl")}
    assert len(record) == 12 and not record[boots[0]["file_name"]]["used_for_training"]
    assert record[boots[0]["file_name"]]["decision"] == "reject"
    assert sum(r["used_for_training"] for r in record.values()) == ev["train"]["num_synthetic"]
    assert all({"oracle_name", "oracle_prob", "predicted_prob"} <= set(r) for r in record.values())
    assert page_data(page_path)["decisions"][boots[0]["file_name"]] == {
        "decision": "reject", "note": "heel too high, reads as a sandal",
    }  # fmt: skip
    md = (workdir / "report.md").read_text().splitlines()
    assert md[2].startswith("- Few-shot accuracy, LTG vs unguided data:")
    assert any("3 reviewed by a person" in line for line in md[:8])
    # A rerun with the same manifest trains nothing again.
    same = mining.run_mining(config, workdir)
    assert not [s for s in same["stages_run_this_time"] if s.startswith("finetune")]


def test_clusters_are_described_and_explained_by_a_local_vlm(mined):
    config, workdir, _ = mined
    config = copy.deepcopy(config)
    server = FakeServer([(200, ok_body("They are seen from above."), False)] * 40)
    config.report.vlm.endpoint, config.report.vlm.model = server.endpoint, "llava-test"
    out = mining.run_mining(config, workdir)
    assert not [s for s in out["stages_run_this_time"] if s.startswith(("generate", "finetune"))]
    assert out["cluster_reference"] == "unguided"
    for c in out["clusters"]:
        assert set(c["descriptors"]["z"]) == set(descriptors.DESCRIPTORS)
        assert c["description"] and c["vlm"] == "They are seen from above."
    assert set(out["blind_spots"]) == {c["class_name"] for c in out["clusters"]}
    # One request per cluster (its hardest samples, then unguided references), then one
    # text-only summary per class.
    bodies = [json.loads(r["body"]) for r in server.requests]
    assert len(bodies) == len(out["clusters"]) + len(out["blind_spots"])
    first = bodies[0]["messages"][0]["content"]
    assert first[0]["type"] == "text" and "hard" in first[0]["text"]
    images = [part for part in first if part["type"] == "image_url"]
    assert len(images) == out["clusters"][0]["size"] + 4
    assert {b["model"] for b in bodies} == {"llava-test"}
    md = (workdir / "report.md").read_text()
    assert "VLM: They are seen from above." in md and "Blind spots per class" in md

    # A dead endpoint costs the explanations, not the report.
    server.close()
    out = mining.run_mining(config, workdir)
    assert "could not connect" in out["vlm_error"] and not out["blind_spots"]
    assert "No VLM explanations" in (workdir / "report.md").read_text()


def test_review_command_adds_the_oracle_and_exports(mined, tmp_path):
    _, workdir, _ = mined
    data = workdir / "synthetic" / "unguided"
    kinds = "imagefolder,label_studio,fiftyone"
    done = subprocess.run(
        [sys.executable, "-m", "sample.review", f"--workdir={tmp_path}", f"--config.data={data}",
         f"--config.oracle={ROOT / 'ltg_jax/assets/oracle_bundle.msgpack'}",
         f"--config.exports={kinds}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"review page: {tmp_path / 'unguided.html'} (12 samples)" in done.stdout
    items = page_data(tmp_path / "unguided.html")["items"]
    assert {it["oracle"] for it in items} <= set(fashion_mnist.CLASS_NAMES)
    agree = np.mean([it["oracle_agrees"] for it in items])
    assert agree >= 0.75, agree  # the shipped oracle recognises unguided samples (0.96 at scale)
    for kind in kinds.split(","):
        assert (tmp_path / "exports" / kind).is_dir(), kind
    card = (tmp_path / "exports" / "imagefolder" / "README.md").read_text()
    assert "Ankle boot" in card
    bad = subprocess.run(
        [sys.executable, "-m", "sample.review", f"--workdir={tmp_path / 'x'}",
         f"--config.data={data}", "--config.exports=coco"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "--config.exports: unknown ['coco']" in bad.stderr


def test_text_pipelines_get_targeted_prompts_from_the_blind_spots(tmp_path):
    config = cli.load_config_file(ROOT / "configs" / "mine.py", "test")
    config.pipeline = str(ROOT / "tests" / "fixtures" / "tiny_sd")  # a text model
    answers = [
        "Seen from above.",
        "Bags seen from above.",
        "a bag seen from above\na bag, top view",
    ]
    server = FakeServer([(200, ok_body(a), False) for a in answers])
    try:
        config.report.vlm.endpoint, config.report.vlm.model = server.endpoint, "m"
        images = np.zeros((3, 8, 8, 1), np.float32)
        clusters = [{"class_id": 8, "class_name": "Bag", "rows": [0, 1]}]
        spots, error = mining.explain(config, clusters, images, {8: images[2:]})
    finally:
        server.close()
    assert error is None and clusters[0]["vlm"] == "Seen from above."
    assert spots == {
        "Bag": {"summary": "Bags seen from above.",
                "prompts": ["a bag seen from above", "a bag, top view"]},
    }  # fmt: skip
