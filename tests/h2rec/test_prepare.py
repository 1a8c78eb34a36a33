"""`h2rec prepare`: every layout on tiny generated files (gzipped where the real ones are), the
report's counts, the two outputs' matching ids, what semid and h2rec make of them, and bad input."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import semid
from click.testing import CliRunner
from h2rec.config import DataConfig
from h2rec.data import build_dataset
from h2rec.prepare import PrepareOptions, prepare
from h2rec.prepare.cli import prepare as prepare_command
from h2rec.readers import read_interactions

# -- helpers ------------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    data = "".join(line + "\n" for line in lines).encode(encoding)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def jsonl(path: Path, records: list[dict]) -> Path:
    return write_lines(path, [json.dumps(r) for r in records])


def outputs(out: Path) -> tuple[list[dict], list[dict], dict]:
    items = [json.loads(line) for line in (out / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    with open(out / "interactions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return items, rows, json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))


def check_consistent(out: Path) -> tuple[list[dict], list[dict], dict]:
    """The invariants of every output: ids match both ways, users are contiguous and each user's
    rows are oldest first, and the report's kept counts are the files' counts."""
    items, rows, report = outputs(out)
    assert list(rows[0]) == ["user_id", "item_id", "timestamp"]
    item_ids = [item["id"] for item in items]
    assert len(item_ids) == len(set(item_ids))
    assert set(item_ids) == {row["item_id"] for row in rows}
    users = [row["user_id"] for row in rows]
    assert users == sorted(users, key=users.index)  # each user's rows together
    for user in set(users):
        times = [float(row["timestamp"]) for row in rows if row["user_id"] == user]
        assert times == sorted(times)
    assert report["kept"]["users"] == len(set(users))
    assert report["kept"]["items"] == len(items)
    assert report["kept"]["interactions"] == len(rows)
    return items, rows, report


def sequences(rows: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["user_id"], []).append(row["item_id"])
    return out


# -- Amazon ---------------------------------------------------------------------------------------

# (user, item, time, rating); U2's rows are out of time order and hold one exact duplicate
REVIEWS = [("U1", "A1", 100, 5.0), ("U1", "A2", 200, 4.0), ("U1", "A3", 300, 5.0), ("U1", "AX", 400, 5.0),
           ("U2", "A2", 150, 3.0), ("U2", "A1", 50, 5.0), ("U2", "A3", 250, 4.0), ("U2", "A1", 50, 5.0),
           ("U3", "A1", 10, 5.0), ("U3", "AE", 20, 2.0), ("U3", "A4", 30, 5.0),
           ("U4", "A5", 5, 5.0),
           ("U5", "A2", 1, 4.0), ("U5", "A3", 2, 1.0)]


def amazon2014(root: Path) -> Path:
    root.mkdir(exist_ok=True)
    jsonl(root / "reviews_Beauty_5.json.gz",
          [{"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": r, "reviewText": "ok"}
           for u, i, t, r in REVIEWS])
    write_lines(root / "meta_Beauty.json.gz", [  # Python dict literals, as the 2014 files have them
        "{'asin': 'A1', 'title': 'Rose \"Oud\" Lipstick', 'brand': 'OPI', "
        "'categories': [['Beauty', 'Makeup'], ['Beauty', 'Lips']], 'price': 9.5}",
        "{'asin': 'A6', 'title': 'Nobody bought me', 'related': {'also_bought': ['A1']}}",
        "{'asin': 'A2', 'title': 'Shampoo', 'description': 'For dry hair', 'salesRank': {'Beauty': 3}}",
        "{'asin': 'A3', 'categories': [['Beauty', 'Hair Care']]}",  # no title, still text
        "{'asin': 'AE', 'title': '', 'description': '   '}",  # a record without text
        "{'asin': 'A4', 'title': 'Nail polish', 'brand': u'Essie'}",
        "{'asin': 'A5', 'title': 'Mascara', 'imUrl': 'http://x'}",
    ])
    return root


def test_amazon2014_ids_texts_order_and_report(tmp_path):
    report = prepare("amazon2014", [amazon2014(tmp_path / "raw")], tmp_path / "out")
    items, rows, _ = check_consistent(tmp_path / "out")
    assert items[0] == {"id": "A1", "title": 'Rose "Oud" Lipstick', "brand": "OPI",
                        "categories": ["Beauty", "Makeup", "Lips"], "description": "", "price": 9.5}
    assert [item["id"] for item in items] == ["A1", "A2", "A3", "A4", "A5"]
    assert sequences(rows)["U2"] == ["A1", "A2", "A3"]  # sorted by time, the duplicate gone
    assert report["read"] == {"users": 5, "items": 7, "interactions": 14, "metadata_records": 7,
                              "metadata_repeated_records": 0, "metadata_unused_records": 1}
    dropped = report["dropped"]
    assert dropped["duplicates"] == 1
    assert (dropped["unknown_items"], dropped["unknown_item_interactions"]) == (1, 1)  # AX: no metadata
    assert (dropped["items_without_text"], dropped["items_without_text_interactions"]) == (1, 1)  # AE
    assert report["kept"] == {"users": 5, "items": 5, "interactions": 11}
    assert report["options"]["keep_textless"] is False


def test_amazon_k_core_and_keep_textless(tmp_path):
    raw = amazon2014(tmp_path / "raw")
    report = prepare("amazon2014", [raw], tmp_path / "core", PrepareOptions(k_core=2))
    _, rows, _ = check_consistent(tmp_path / "core")
    # U4 (one item) and A4, A5 (one user each) go; then U3 has one item left and goes too
    assert report["dropped"]["k_core"] == {"users": 2, "items": 2, "interactions": 3}
    assert sequences(rows) == {"U1": ["A1", "A2", "A3"], "U2": ["A1", "A2", "A3"], "U5": ["A2", "A3"]}

    report = prepare("amazon2014", [raw], tmp_path / "keep", PrepareOptions(keep_textless=True))
    items, _, _ = check_consistent(tmp_path / "keep")
    assert report["kept"]["items_without_text"] == 2 and report["dropped"]["unknown_items"] == 0
    assert {"id": "AX", "title": "", "brand": "", "categories": "", "description": "", "price": ""} in items


def test_amazon2018_json_metadata_repeated_records_and_min_rating(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    jsonl(raw / "Beauty_5.json.gz", [{"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": r}
                                     for u, i, t, r in REVIEWS if i not in ("AX", "AE")])
    jsonl(raw / "meta_Beauty.json.gz", [
        {"asin": f"A{k}", "title": f"Item {k}", "brand": "B", "category": ["Beauty", "Skin"],
         "feature": ["soft"], "description": ["Line one", "Line two"], "price": "$5.00"} for k in range(1, 6)
    ] + [{"asin": "A1", "title": "A repeated record"}])
    report = prepare("amazon2018", [raw], tmp_path / "out", PrepareOptions(min_rating=4))
    items, rows, _ = check_consistent(tmp_path / "out")
    assert items[0] == {"id": "A1", "title": "Item 1", "brand": "B", "categories": ["Beauty", "Skin"],
                        "features": ["soft"], "description": ["Line one", "Line two"], "price": "$5.00"}
    assert report["read"]["metadata_repeated_records"] == 1
    assert report["dropped"]["below_min_rating"] == 2  # U2's 3.0 and U5's 1.0
    assert report["kept"]["interactions"] == 12 - 2 - 1  # 12 rows, 2 rated low, 1 duplicate
    assert ("U2", "A2") not in {(r["user_id"], r["item_id"]) for r in rows}


def test_amazon2023_parent_asin_and_millisecond_times(tmp_path):
    reviews = jsonl(tmp_path / "All_Beauty.jsonl.gz", [
        {"user_id": "AG1", "parent_asin": "P1", "asin": "C1", "timestamp": 1588687728923, "rating": 5.0},
        {"user_id": "AG1", "parent_asin": "P2", "asin": "C2", "timestamp": 1588687728000, "rating": 4.0}])
    meta = jsonl(tmp_path / "meta_All_Beauty.jsonl.gz", [
        {"parent_asin": "P1", "title": "Serum", "store": "Acme", "features": ["light"], "description": [],
         "categories": [], "details": {"Size": "1 oz"}},
        {"parent_asin": "P2", "title": "Cream", "store": None, "features": [], "description": ["Rich"],
         "categories": ["Beauty"]}])
    prepare("amazon2023", [reviews, meta], tmp_path / "out")
    items, rows, report = check_consistent(tmp_path / "out")
    assert [(r["item_id"], r["timestamp"]) for r in rows] == [("P2", "1588687728"), ("P1", "1588687728.923")]
    assert items[1] == {"id": "P2", "title": "Cream", "store": "", "categories": ["Beauty"], "features": [],
                        "description": ["Rich"]}
    assert report["timestamps"] == "Unix seconds"


# -- Yelp, MovieLens, RecBole -------------------------------------------------------------------


def test_yelp_dates_and_repeats(tmp_path):
    jsonl(tmp_path / "yelp_academic_dataset_business.json", [
        {"business_id": "b1", "name": "Cafe Rose", "categories": "Coffee & Tea, Cafes", "city": "Tempe"},
        {"business_id": "b2", "name": "Pizza Place", "categories": None, "city": "Mesa", "stars": 4.5},
        {"business_id": "b3", "name": "Unvisited", "categories": "Bars", "city": "Mesa"}])
    jsonl(tmp_path / "yelp_academic_dataset_review.json", [
        {"review_id": "r1", "user_id": "u1", "business_id": "b1", "stars": 5, "date": "2016-03-09 00:44:15"},
        {"review_id": "r2", "user_id": "u1", "business_id": "b2", "stars": 2, "date": "2015-01-01 10:00:00"},
        {"review_id": "r3", "user_id": "u1", "business_id": "b1", "stars": 4, "date": "2017-05-05 12:00:00"}])
    report = prepare("yelp", [tmp_path], tmp_path / "out")
    items, rows, _ = check_consistent(tmp_path / "out")
    assert items[0] == {"id": "b1", "title": "Cafe Rose", "categories": "Coffee & Tea, Cafes", "city": "Tempe"}
    assert [r["item_id"] for r in rows] == ["b2", "b1", "b1"]  # a later visit is kept by default
    assert rows[1]["timestamp"] == "1457484255"  # 2016-03-09 00:44:15 UTC
    assert report["read"]["metadata_unused_records"] == 1

    report = prepare("yelp", [tmp_path], tmp_path / "first", PrepareOptions(repeats="first", min_rating=3))
    _, rows, _ = check_consistent(tmp_path / "first")
    assert [r["item_id"] for r in rows] == ["b1"]
    assert report["dropped"]["repeats"] == 1 and report["dropped"]["below_min_rating"] == 1


def test_movielens_dat_latin1_and_csv_with_quoted_titles(tmp_path):
    dat = tmp_path / "ml-1m"
    dat.mkdir()
    write_lines(dat / "ratings.dat", ["1::10::5::978300760", "1::20::3::978300761", "2::10::4::978300700"])
    write_lines(dat / "movies.dat", ["10::Misérables, Les (1995)::Drama|Musical", "20::Heat (1995)::Action"],
                encoding="latin-1")
    write_lines(dat / "users.dat", ["1::F::1::10::48067"])  # ignored: not part of the layout
    report = prepare("movielens", [dat], tmp_path / "out", PrepareOptions(min_rating=4))
    items, rows, _ = check_consistent(tmp_path / "out")
    assert items == [{"id": "10", "title": "Misérables, Les (1995)", "genres": ["Drama", "Musical"]}]
    assert report["dropped"]["below_min_rating"] == 1 and report["kept"]["interactions"] == 2

    latest = tmp_path / "ml-latest-small"
    latest.mkdir()
    write_lines(latest / "ratings.csv", ["userId,movieId,rating,timestamp", "7,11,4.0,964982703",
                                         "7,99,3.5,964981247"])
    write_lines(latest / "movies.csv", ["movieId,title,genres", '11,"American President, The (1995)",Comedy|Romance',
                                        "99,Untitled (2019),(no genres listed)"])
    prepare("movielens", [latest / "ratings.csv", latest / "movies.csv"], tmp_path / "out2")
    items, rows, _ = check_consistent(tmp_path / "out2")
    assert items[0] == {"id": "11", "title": "American President, The (1995)", "genres": ["Comedy", "Romance"]}
    assert items[1]["genres"] == [] and [r["item_id"] for r in rows] == ["99", "11"]


def test_recbole_sequential_and_per_interaction_files(tmp_path):
    seq = tmp_path / "games"
    seq.mkdir()
    write_lines(seq / "Games.test.inter", ["user_id:token\titem_id_list:token_seq\titem_id:token",
                                           "0\t3 1\t2", "1\t2\t0"])
    write_lines(seq / "Games.item", ["item_id:token\ttitle:token_seq\tprice:float", "0\tZelda\t9.5",
                                     "1\tMario &amp; Luigi\t1", "2\tTetris\t3", "3\t\t0"])
    report = prepare("recbole", [seq], tmp_path / "out")
    items, rows, _ = check_consistent(tmp_path / "out")
    assert sequences(rows) == {"0": ["3", "1", "2"], "1": ["2", "0"]}
    assert items[1] == {"id": "1", "title": "Mario &amp; Luigi"}  # price (float) is not text
    assert report["kept"]["items_without_text"] == 1  # item 3 has an empty title: kept for a benchmark split

    flat = tmp_path / "ml"
    flat.mkdir()
    write_lines(flat / "ml.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
                                    "1\t5\t4\t20", "1\t6\t2\t10", "2\t5\t5\t5"])
    write_lines(flat / "ml.item", ["item_id:token\tmovie_title:token_seq\tgenre:token_seq",
                                   "5\tHeat\tAction Crime", "6\tCasino\tDrama"])
    report = prepare("recbole", [flat], tmp_path / "out2", PrepareOptions(min_rating=3))
    items, rows, _ = check_consistent(tmp_path / "out2")
    assert items == [{"id": "5", "title": "Heat", "genre": "Action Crime"}]
    assert report["dropped"]["below_min_rating"] == 1


# -- P5 / S3Rec / LC-Rec --------------------------------------------------------------------------


def p5_beauty(root: Path) -> Path:
    """The amazon-beauty layout: sequences of 1-based ints, datamaps to ASINs, dh-r's lookup table."""
    root.mkdir()
    write_lines(root / "sequential_data.txt", ["1 1 2 3", "2 2 3 4", "3 4 1"])
    (root / "datamaps.json").write_text(json.dumps({
        "user2id": {}, "item2id": {}, "id2user": {"1": "AU1", "2": "AU2", "3": "AU3"},
        "id2item": {"1": "B001", "2": "B002", "3": "B003", "4": "B004"}, "attribute2id": {}}))
    (root / "item_id_to_int.json").write_text(json.dumps({"B001": 0, "B002": 1, "B003": 2, "B004": 3}))
    write_lines(root / "products_lookup.csv", [",global_product_id,name", "0,2,", "1,0,First",
                                               '2,1,"Second, with a comma"', "3,3,Fourth"])
    return root


def test_p5_lookup_join_original_and_sequence_ids(tmp_path):
    raw = p5_beauty(tmp_path / "beauty")
    report = prepare("p5", [raw], tmp_path / "out")
    items, rows, _ = check_consistent(tmp_path / "out")
    assert items == [{"id": "B001", "title": "First"}, {"id": "B002", "title": "Second, with a comma"},
                     {"id": "B003", "title": ""}, {"id": "B004", "title": "Fourth"}]
    assert sequences(rows) == {"AU1": ["B001", "B002", "B003"], "AU2": ["B002", "B003", "B004"],
                               "AU3": ["B004", "B001"]}
    assert [r["timestamp"] for r in rows[:3]] == ["0", "1", "2"]  # order only: positions
    assert report["kept"] == {"users": 3, "items": 4, "interactions": 8, "items_without_text": 1}

    prepare("p5", [raw], tmp_path / "seq", PrepareOptions(ids="sequence"))
    items, rows, _ = check_consistent(tmp_path / "seq")
    assert [item["id"] for item in items] == ["1", "2", "3", "4"]
    assert read_interactions(DataConfig(interactions=str(tmp_path / "seq" / "interactions.csv"))) == \
        read_interactions(DataConfig(interactions=str(raw / "sequential_data.txt")))

    report = prepare("p5", [raw], tmp_path / "drop", PrepareOptions(keep_textless=False))
    check_consistent(tmp_path / "drop")
    assert report["dropped"]["items_without_text"] == 1
    assert report["dropped"]["items_without_text_interactions"] == 2
    assert report["kept"] == {"users": 3, "items": 3, "interactions": 6}


def test_p5_item_json_offsets(tmp_path):
    yelp = tmp_path / "yelp"  # LC-Rec's 0-based keys beside P5's 1-based sequences: key k is item k + 1
    yelp.mkdir()
    write_lines(yelp / "sequential_data.txt", ["1 1 2", "2 2 1 2"])
    (yelp / "datamaps.json").write_text(json.dumps({"id2user": {"1": "ua", "2": "ub"},
                                                     "id2item": {"1": "biz1", "2": "biz2"}}))
    (yelp / "Yelp.item.json").write_text(json.dumps({"0": {"title": "Cafe", "description": "Coffee"},
                                                      "1": {"title": "Bar", "description": "Beer"}}))
    report = prepare("p5", [yelp], tmp_path / "out")
    items, rows, _ = check_consistent(tmp_path / "out")
    assert items == [{"id": "biz1", "title": "Cafe", "description": "Coffee"},
                     {"id": "biz2", "title": "Bar", "description": "Beer"}]
    assert report["kept"]["interactions"] == 5  # a repeated visit stays

    lcrec = tmp_path / "sci"
    lcrec.mkdir()
    (lcrec / "Sci.inter.json").write_text(json.dumps({"0": [0, 1], "1": [1, 0, 2]}))
    (lcrec / "Sci.item.json").write_text(json.dumps({str(k): {"title": f"T{k}", "brand": "b"} for k in range(3)}))
    prepare("p5", [lcrec], tmp_path / "out2")
    items, rows, _ = check_consistent(tmp_path / "out2")
    assert items[0] == {"id": "0", "title": "T0", "brand": "b"} and sequences(rows)["1"] == ["1", "0", "2"]


# -- semid and h2rec read the outputs --------------------------------------------------------------


def test_semid_encode_and_h2rec_read_the_outputs(tmp_path):
    rng = np.random.default_rng(0)
    words = ["rose", "oud", "matte", "gloss", "serum", "cream", "mask", "oil", "gel", "spray"]
    reviews, meta = [], []
    for k in range(40):
        meta.append({"parent_asin": f"P{k:02d}", "title": f"{words[k % 10]} {words[(k * 3) % 10]} {k}",
                     "store": f"S{k % 4}", "features": [words[k % 7]], "description": [], "categories": []})
    for u in range(60):
        for t, k in enumerate(rng.choice(40, size=6, replace=False)):
            reviews.append({"user_id": f"U{u}", "parent_asin": f"P{k:02d}", "timestamp": 1_600_000_000_000 + t,
                            "rating": 5.0})
    jsonl(tmp_path / "Beauty.jsonl.gz", reviews)
    jsonl(tmp_path / "meta_Beauty.jsonl.gz", meta)
    out = tmp_path / "out"
    prepare("amazon2023", [tmp_path], out, PrepareOptions(k_core=5))
    items, rows, report = check_consistent(out)

    # embeddings: a random projection of each item's words (no text encoder in a unit test)
    vocab: dict[str, int] = {}
    bags = [[vocab.setdefault(w, len(vocab)) for w in f"{i['title']} {i['store']} {i['features']}".split()]
            for i in items]
    projection = rng.normal(size=(len(vocab), 16))
    np.save(tmp_path / "emb.npy", np.stack([projection[b].mean(0) for b in bags]).astype(np.float32))
    (tmp_path / "ids.txt").write_text("".join(i["id"] + "\n" for i in items))
    sids = semid.encode_catalogue(out / "items.jsonl", out / "semid", embeddings=tmp_path / "emb.npy",
                                  ids=tmp_path / "ids.txt", cache_dir=None,
                                  quantizer=semid.QuantizerConfig(kind="rq", levels=2, codebook_size=4))
    assert sorted(sids.ids) == sorted(i["id"] for i in items)
    dataset = build_dataset(DataConfig(interactions=str(out / "interactions.csv"), semid=str(out / "semid")),
                            sids.ids)
    assert dataset.stats["users"] == report["kept"]["users"] == 60
    assert dataset.stats["interactions"] == report["kept"]["interactions"] == len(rows)


# -- the command: summary, and bad input as exit 2 naming file and line ----------------------------


def run(*args: str):
    return CliRunner().invoke(prepare_command, [str(a) for a in args])


def test_command_prints_the_summary(tmp_path):
    result = run("p5", p5_beauty(tmp_path / "beauty"), "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert "kept     3 users, 4 items, 8 interactions" in result.output
    assert "semid encode" in result.output and (tmp_path / "out" / "prepare_report.json").is_file()


def test_registered_in_the_h2rec_command():
    from h2rec.cli import main

    assert main.get_command(None, "prepare") is prepare_command


def bad_reviews(tmp_path: Path, lines: list[str]) -> tuple[Path, object]:
    raw = amazon2014(tmp_path / "raw")
    path = write_lines(raw / "reviews_Beauty_5.json.gz", lines)
    return path, run("amazon2014", raw, "-o", tmp_path / "out")


@pytest.mark.parametrize("lines, line, message", [
    (['{"reviewerID": "U1", "asin": "A1", "unixReviewTime": 1}', '{"reviewerID": "U1", "asin": }'],
     2, "malformed JSON"),
    (['{"reviewerID": "U1", "asin": "A1", "unixReviewTime": 1}', "", '{"asin": "A1", "unixReviewTime": 2}'],
     3, "field 'reviewerID' is missing"),
    (['{"reviewerID": "U1", "asin": "A1", "unixReviewTime": "yesterday"}'], 1,
     "field 'unixReviewTime' is not a number"),
    (['["U1", "A1", 1]'], 1, "expected one object per line"),
])
def test_bad_review_lines_exit_2_naming_file_and_line(tmp_path, lines, line, message):
    path, result = bad_reviews(tmp_path, lines)
    assert result.exit_code == 2
    assert f"{path}:{line}: {message}" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "items.jsonl").exists()


def test_metadata_is_never_evaluated_as_code(tmp_path):
    raw = amazon2014(tmp_path / "raw")
    marker = tmp_path / "pwned"
    meta = write_lines(raw / "meta_Beauty.json.gz", [f"__import__('pathlib').Path({str(marker)!r}).touch()"])
    result = run("amazon2014", raw, "-o", tmp_path / "out")
    assert result.exit_code == 2 and f"{meta}:1: malformed JSON" in result.output
    assert "not a Python dict literal either" in result.output
    assert not marker.exists()


def test_missing_and_damaged_files_exit_2(tmp_path):
    result = run("yelp", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert result.exit_code == 2 and f"{tmp_path / 'nowhere'}: no such file or folder" in result.output

    raw = amazon2014(tmp_path / "raw")
    reviews = raw / "reviews_Beauty_5.json.gz"
    reviews.write_bytes(reviews.read_bytes()[:-20])  # a download cut short
    result = run("amazon2014", raw, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "ends early or is damaged" in result.output and str(reviews) in result.output

    (raw / "meta_Beauty.json.gz").unlink()
    result = run("amazon2014", raw, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no metadata file (meta_<Category>.json(l).gz)" in result.output

    result = run("movielens", reviews, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "not a file of the movielens layout" in result.output

    ml = tmp_path / "ml"
    ml.mkdir()
    ratings = write_lines(ml / "ratings.dat", ["1::10::5::978300760", "1::20::5"])
    write_lines(ml / "movies.dat", ["10::Heat (1995)::Action"])
    result = run("movielens", ml, "-o", tmp_path / "out")
    assert result.exit_code == 2 and f"{ratings}:2: 3 '::'-separated values, expected 4" in result.output

    result = run("p5", p5_beauty(tmp_path / "p5"), "-o", tmp_path / "out", "--min-rating", "4")
    assert result.exit_code == 2 and "has no ratings" in result.output
