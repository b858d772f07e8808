"""The reader study (issue 19): a blinded study is created from the real test split and a synthetic
set, served to readers through personal links (answers final, surviving reloads and restarts, no way
to another reader's images or to the key), and analyzed with the paper's TR/FR/TS/FS, accuracy and
the Wilcoxon test; and each bad input the issue names is refused with its message."""

import json
import stat
import threading

import numpy as np
import pandas as pd
import pytest
import requests

from synthgate.data.canonical import write_dataset
from synthgate.errors import ConfigError, DataError
from synthgate.evaluation.readers.analyze import analyze_study
from synthgate.evaluation.readers.app import serve
from synthgate.evaluation.readers.store import AnswerRefused, Answers
from synthgate.evaluation.readers.study import KEY, create_study, load_study
from synthgate.registry.server import free_port
from tests.unit.generators_helpers import smooth_images

CLASSES = ["lung", "bone"]


def _dataset(root, per_split: dict[str, int], res=16, seed=0, stage="test"):
    """``per_split[split]`` images per class in each split."""
    split = [s for s, k in per_split.items() for _ in range(k * len(CLASSES))]
    labels = np.concatenate([np.repeat(np.arange(len(CLASSES)), k) for k in per_split.values()])
    meta = pd.DataFrame({"split": split, "label": labels, "label_name": [CLASSES[k] for k in labels]})
    return write_dataset(root, smooth_images(len(labels), res, 1, seed), meta, CLASSES, stage=stage, config={},
                         inputs=[])


@pytest.fixture
def sets(tmp_path):
    real = _dataset(tmp_path / "real", {"train": 6, "test": 8})
    syn = _dataset(tmp_path / "syn", {"train": 10}, seed=7, stage="sample")
    return real, syn


def test_a_study_is_blinded_balanced_and_keeps_its_key_apart(sets, tmp_path):
    real, syn = sets
    s = create_study(real.root, syn.root, tmp_path / "study", n=12, seed=3)
    key = s.key()
    assert len(s.ids) == 12 == len(set(s.ids)) and set(key) == set(s.ids)
    assert sum(v["real"] for v in key.values()) == 6
    for origin in (True, False):  # balanced per class within real and within synthetic
        assert sorted(v["class"] for v in key.values() if v["real"] is origin) == ["bone"] * 3 + ["lung"] * 3
    test = set(real.split_indices("test").tolist())
    assert all(v["index"] in test for v in key.values() if v["real"])  # real images are unseen (test split)
    for i, v in key.items():  # the image shown under an id is the image the key says
        ds = real if v["real"] else syn
        from PIL import Image

        assert np.array_equal(np.asarray(Image.open(s.root / "images" / f"{i}.png")), np.asarray(ds.images[v["index"]])[..., 0])
    assert sorted(p.stem for p in (s.root / "images").iterdir()) == sorted(s.ids)  # nothing else readers reach
    assert stat.S_IMODE((s.root / KEY).stat().st_mode) == 0o600
    assert "REAL PATIENT IMAGES" in (s.root / "README.txt").read_text()
    manifest = json.loads((s.root / "study.json").read_text())
    assert "real" not in json.dumps(manifest["images"]) and manifest["contains_patient_images"] is True
    # the draw is the seed and the key's secret salt: reproducible by whoever holds the key, not from the seed
    salt = json.loads((s.root / KEY).read_text())["draw_salt"]
    same = create_study(real.root, syn.root, tmp_path / "study2", n=12, seed=3, salt=salt)
    assert sorted(v["index"] for v in same.key().values()) == sorted(v["index"] for v in key.values())
    assert [same.key()[i]["real"] for i in same.ids] == [key[i]["real"] for i in s.ids]
    other = create_study(real.root, syn.root, tmp_path / "study3", n=12, seed=3, salt=salt + 1)
    assert [other.key()[i]["index"] for i in other.ids] != [key[i]["index"] for i in s.ids]
    sizes = {p.stat().st_size for p in (s.root / "images").iterdir()}
    assert len(sizes) == 1  # uncompressed: a file's size says nothing of its content


def test_bad_inputs_are_refused_by_name(sets, tmp_path):
    real, syn = sets
    with pytest.raises(DataError, match="the real test split holds 16 images; the study asks for 20"):
        create_study(real.root, syn.root, tmp_path / "a", n=40)
    with pytest.raises(DataError, match="the synthetic set holds 20 images; the study asks for 24"):
        create_study(real.root, syn.root, tmp_path / "b", n=30, real_fraction=0.2)
    lopsided = _dataset(tmp_path / "lop", {"train": 1}, seed=2, stage="sample")
    with pytest.raises(DataError, match=r"the synthetic set holds 2 images; the study asks for 4"):
        create_study(real.root, lopsided.root, tmp_path / "c", n=8)
    labels = np.array([0] * 10 + [1])
    few_bone = write_dataset(tmp_path / "few", smooth_images(11, 16, 1, 4), pd.DataFrame(
        {"split": "train", "label": labels, "label_name": [CLASSES[k] for k in labels]}), CLASSES, stage="sample",
        config={}, inputs=[])
    with pytest.raises(DataError, match=r"the synthetic set has too few images of class bone \(1 of 2\) for a study "
                                        r"balanced per class"):
        create_study(real.root, few_bone.root, tmp_path / "g", n=8)
    with pytest.raises(DataError, match=r"too few images of class bone \(1 of 2\) for a study in the real test "
                                        r"split's class proportions"):
        create_study(real.root, few_bone.root, tmp_path / "g", n=8, balanced=False)
    with pytest.raises(DataError, match="the real and the synthetic dataset are the same dataset"):
        create_study(real.root, real.root, tmp_path / "h", n=8)
    with pytest.raises(ConfigError, match="gives 0 real images: a study needs both"):
        create_study(real.root, syn.root, tmp_path / "i", n=2, real_fraction=0.2)
    big = _dataset(tmp_path / "big", {"train": 10}, res=32, stage="sample")
    with pytest.raises(DataError, match="the real images are 16x16x1 and the synthetic ones 32x32x1"):
        create_study(real.root, big.root, tmp_path / "d", n=8)
    with pytest.raises(ConfigError, match="0 < real_fraction < 1"):
        create_study(real.root, syn.root, tmp_path / "e", n=8, real_fraction=1.0)
    create_study(real.root, syn.root, tmp_path / "f", n=8)
    with pytest.raises(DataError, match="already holds a study"):
        create_study(real.root, syn.root, tmp_path / "f", n=8)


def test_answers_are_final_and_only_for_the_readers_own_images(sets, tmp_path):
    real, syn = sets
    s = create_study(real.root, syn.root, tmp_path / "study", n=8)
    store = Answers(s)
    a = store.add_reader("ann")
    with pytest.raises(DataError, match="a reader named 'ann' already exists"):
        store.add_reader("ann")
    assert sorted(a.order) == sorted(s.ids) and a.order != store.add_reader("bob").order  # own orders
    store.answer(a.token, a.order[0], "real", 4)
    with pytest.raises(AnswerRefused, match="is already answered; answers are final"):
        store.answer(a.token, a.order[0], "synthetic")
    with pytest.raises(AnswerRefused, match="image 'nope' is not in ann's list"):
        store.answer(a.token, "nope", "real")
    with pytest.raises(AnswerRefused, match="answer 'maybe': expected 'real' or 'synthetic'"):
        store.answer(a.token, a.order[1], "maybe")
    with pytest.raises(AnswerRefused, match="unknown reader link"):
        store.answer("made-up", a.order[1], "real")
    with pytest.raises(DataError, match=r"no reader has finished the study \(0 of 2; ann 1/8, bob 0/8\)"):
        analyze_study(s)
    store.close()


def test_a_tampered_key_is_refused(sets, tmp_path):
    real, syn = sets
    s = create_study(real.root, syn.root, tmp_path / "study", n=8)
    path = s.root / KEY
    key = json.loads(path.read_text())
    first = next(iter(key["images"]))
    key["images"][first]["real"] = not key["images"][first]["real"]
    path.write_text(json.dumps(key, indent=1))
    with pytest.raises(DataError, match="the key's sha256 does not match study.json's key_sha256"):
        analyze_study(load_study(s.root))


def test_five_readers_get_the_wilcoxon_test_and_fewer_get_accuracy_and_spread(sets, tmp_path):
    from scipy.stats import wilcoxon

    real, syn = sets
    s = create_study(real.root, syn.root, tmp_path / "study", n=8)
    key = s.key()
    store = Answers(s)
    wrong_counts = [0, 1, 2, 3, 1]  # accuracies 1, 7/8, 6/8, 5/8, 7/8
    for k, wrong in enumerate(wrong_counts):
        r = store.add_reader(f"r{k}")
        for j, i in enumerate(r.order):
            truth = "real" if key[i]["real"] else "synthetic"
            other = "synthetic" if truth == "real" else "real"
            store.answer(r.token, i, other if j < wrong else truth)
        if k == 2:
            few = analyze_study(s)
            assert few["accuracy"]["wilcoxon"] is None and "fewer than 5" in few["accuracy"]["note"]
            assert few["accuracy"]["mean"] == pytest.approx((1 + 7 / 8 + 6 / 8) / 3)
    store.add_reader("late")  # added, not finished: not counted
    store.close()
    res = analyze_study(s)
    acc = np.array([1, 7 / 8, 6 / 8, 5 / 8, 7 / 8])
    assert [v["accuracy"] for v in res["per_reader"].values()] == pytest.approx(acc.tolist())
    assert res["accuracy"]["std"] == pytest.approx(acc.std(ddof=1))
    assert res["accuracy"]["wilcoxon"]["p"] == pytest.approx(wilcoxon(acc - 0.5, alternative="greater").pvalue)
    assert res["readers_finished"] == 5 and res["unfinished"] == {"late": "0/8"}
    for v in res["per_reader"].values():
        assert v["TR"] + v["FS"] == 4 and v["TS"] + v["FR"] == 4 and v["n"] == 8
    assert json.loads((s.root / "reader_study.json").read_text())["accuracy"]["readers"] == 5
    assert set(res["per_class"]) == set(CLASSES)
    for k in ("TR", "FR", "TS", "FS", "n"):  # per class, pooled over the readers: adds up to the readers' sums
        assert sum(c[k] for c in res["per_class"].values()) == sum(v[k] for v in res["per_reader"].values())


def _start(study):
    port = free_port()
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, args=(study, "127.0.0.1", port, ready, stop), daemon=True)
    t.start()
    assert ready.wait(30)
    return f"http://127.0.0.1:{port}", stop, t


def test_readers_complete_a_study_through_the_web_app_across_a_reload_and_a_restart(sets, tmp_path):
    real, syn = sets
    s = create_study(real.root, syn.root, tmp_path / "study", n=8)
    key = s.key()
    store = Answers(s)
    ann, bob, eve = store.add_reader("ann"), store.add_reader("bob"), store.add_reader("eve")
    store.close()
    base, stop, t = _start(s)

    def shown(token):
        page = requests.get(f"{base}/r/{token}", timeout=10)
        assert page.status_code == 200
        return page.text.split(f"/r/{token}/image/")[1].split("'")[0] if "/image/" in page.text else None

    def read(token, right: bool, count: int):
        for _ in range(count):
            i = shown(token)
            truth = "real" if key[i]["real"] else "synthetic"
            ans = truth if right else "real"
            assert requests.get(f"{base}/r/{token}/image/{i}", timeout=10).headers["content-type"] == "image/png"
            r = requests.post(f"{base}/r/{token}/answer", data={"image_id": i, "answer": ans, "confidence": "3"},
                              timeout=10, allow_redirects=False)
            assert r.status_code == 303

    read(ann.token, True, 3)
    assert shown(ann.token) == shown(ann.token)  # a reload shows the same image: nothing skipped, nothing lost
    first = ann.order[0]
    again = requests.post(f"{base}/r/{ann.token}/answer", data={"image_id": first, "answer": "synthetic"}, timeout=10)
    assert again.status_code == 409 and "answers are final" in again.text
    # eve tries bob's image through her link, and a made-up link
    assert requests.get(f"{base}/r/{eve.token}/image/nope", timeout=10).status_code == 404
    assert requests.get(f"{base}/r/made-up-token", timeout=10).status_code == 404
    assert requests.post(f"{base}/r/made-up-token/answer", data={"image_id": first, "answer": "real"},
                         timeout=10).status_code == 404
    assert requests.get(f"{base}/key/key.json", timeout=10).status_code == 404
    assert requests.get(f"{base}/images/{first}.png", timeout=10).status_code == 404
    stop.set()
    t.join(10)
    base, stop, t = _start(load_study(s.root))  # a restart loses no answer
    assert "image 4 of 8" in requests.get(f"{base}/r/{ann.token}", timeout=10).text
    read(ann.token, True, 5)
    read(bob.token, False, 8)
    assert "All 8 images are answered" in requests.get(f"{base}/r/{ann.token}", timeout=10).text
    admin = requests.get(f"{base}/admin/{s.admin_token()}", timeout=10).text
    assert "ann" in admin and "8 / 8" in admin and "eve" in admin and "0 / 8" in admin and "2 reader(s) finished" in admin
    assert requests.get(f"{base}/admin/guess", timeout=10).status_code == 404
    stop.set()
    t.join(10)
    res = analyze_study(s)
    assert res["per_reader"]["ann"] == {"TR": 4, "FR": 0, "TS": 4, "FS": 0, "n": 8, "accuracy": 1.0}
    assert res["per_reader"]["bob"] == {"TR": 4, "FR": 4, "TS": 0, "FS": 0, "n": 8, "accuracy": 0.5}
    assert res["unfinished"] == {"eve": "0/8"}


def test_the_commands_create_add_readers_and_refuse_an_unfinished_analysis(sets, tmp_path):
    from tests.helpers import run_cli

    real, syn = sets
    study = tmp_path / "study"
    r = run_cli("reader-study", "create", str(study), "--real", str(real.root), "--synthetic", str(syn.root),
                "--n", "8", "--seed", "5")
    assert r.code == 0, r.output
    assert "8 images (4 real), seed 5" in r.stdout and "real patient images" in r.stdout
    r = run_cli("reader-study", "add-reader", str(study), "ann", "--base-url", "http://host:1")
    token = Answers(load_study(study)).readers()[0].token
    assert r.code == 0 and f"ann: http://host:1/r/{token}" in r.stdout, r.output
    r = run_cli("reader-study", "analyze", str(study))
    assert r.code == 2 and "no reader has finished the study (0 of 1; ann 0/8)" in r.stderr, r.output


def test_the_wilcoxon_test_ranks_exact_ties_and_leaves_readers_at_chance_out():
    """Accuracies in hundredths: 0.56 and 0.44 are equally far from 0.5 (whole-number differences, not
    floats), and readers at exactly 0.5 do not count toward the five a test needs."""
    from scipy.stats import wilcoxon

    from synthgate.evaluation.readers.analyze import _group_stats

    right = np.array([53, 47, 53, 56, 44, 50, 50, 50])
    r = _group_stats(right, np.full(8, 100))
    assert r["readers_at_chance"] == 3 and r["wilcoxon"]["readers_tested"] == 5
    assert r["wilcoxon"]["p"] == pytest.approx(wilcoxon([6, -6, 6, 12, -12], alternative="greater").pvalue)
    assert r["wilcoxon"]["statistic"] == 8.5  # the tied |6|s and |12|s share their ranks
    few = _group_stats(np.array([50, 50, 60, 40, 55, 50]), np.full(6, 100))
    assert few["wilcoxon"] is None and "3 reader(s) away from exactly 0.5 (of 6 finished)" in few["note"]


def test_time_per_image_is_measured_on_the_server(sets, tmp_path):
    real, syn = sets
    s = create_study(real.root, syn.root, tmp_path / "study", n=8)
    store = Answers(s)
    r = store.add_reader("ann")
    store.shown(r.token, r.order[0])
    store.answer(r.token, r.order[0], "real")
    store.answer(r.token, r.order[1], "real")  # never shown (answered through the API): no time
    rows = dict(store._db.execute("SELECT image_id, seconds FROM answers"))
    assert rows[r.order[0]] is not None and rows[r.order[0]] >= 0 and rows[r.order[1]] is None
    store.close()
