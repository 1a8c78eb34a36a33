"""Reading catalogues: every input format, the text rules, and every bad input (file:line: field '...')."""

from __future__ import annotations

import json

import pytest
from semid import ReadConfig, SemidError, read_items


def test_jsonl_default_text_is_key_value_lines_of_non_id_fields(write_jsonl, item_records):
    items = read_items(write_jsonl(item_records))
    assert len(items) == 240
    assert items.ids[:2] == ["B00000", "B00001"]
    first = item_records[0]
    expected_title = " ".join(first["title"].replace("&amp;", "&").split())
    assert items.texts[0] == (
        f"title: {expected_title}\ncategories: Beauty, {first['categories'][1]}\nbrand: {first['brand']}"
    )
    assert items.lines[:3] == [1, 2, 3]
    assert items.warnings == []


def test_text_normalisation_html_whitespace_lists_and_scalars(write_jsonl):
    record = {"id": 5, "title": "  Rose &amp;   Oud\t&lt;b&gt; ", "tags": ["a", ["b", "c"], None, ""],
              "in_stock": True, "price": 9.5, "empty": None, "meta": {"size": "1 oz"}}
    items = read_items(write_jsonl([record]))
    assert items.ids == ["5"]  # numeric ids become strings
    assert items.texts[0] == "title: Rose & Oud <b>\ntags: a, b, c\nin_stock: true\nprice: 9.5\nmeta: size: 1 oz"


def test_text_fields_and_template(write_jsonl, item_records):
    path = write_jsonl(item_records[:3])
    chosen = read_items(path, ReadConfig(text_fields=("brand",)))
    assert chosen.texts[0] == f"brand: {item_records[0]['brand']}"
    templated = read_items(path, ReadConfig(template="Title: {title}. Category: {categories}"))
    title = " ".join(item_records[0]["title"].replace("&amp;", "&").split())
    assert templated.texts[0] == f"Title: {title}. Category: Beauty, {item_records[0]['categories'][1]}"


def test_csv_with_quoted_multiline_cell_and_custom_id(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text('sku,title,brand\nA1,"Red, matte\nlipstick",OPI\nA2,Shampoo,Dove\n', encoding="utf-8")
    items = read_items(path, ReadConfig(id_field="sku"))
    assert items.ids == ["A1", "A2"]
    assert items.texts[0] == "title: Red, matte lipstick\nbrand: OPI"
    assert items.lines == [2, 4]  # a record's first physical line


def test_tsv_and_byte_order_mark(tmp_path):
    path = tmp_path / "items.tsv"
    path.write_bytes("\ufeffid\ttitle\nx\tNail &amp; polish\ny\tMascara\n".encode())
    items = read_items(path)
    assert items.ids == ["x", "y"]
    assert items.texts == ["title: Nail & polish", "title: Mascara"]


def test_recbole_atomic_item_file(tmp_path):
    path = tmp_path / "beauty.item"
    path.write_text("item_id:token\ttitle:token_seq\tprice:float\n"
                    "101\tRed Lipstick\t9.5\n102\tDove Shampoo\t4\n", encoding="utf-8")
    items = read_items(path)  # id field defaults to item_id for atomic files
    assert items.ids == ["101", "102"]
    assert items.texts[0] == "title: Red Lipstick\nprice: 9.5"


def test_csv_unnamed_first_column_is_a_pandas_index_and_skipped(tmp_path):
    # dh-r's products_lookup.csv, written by pandas' to_csv(): header `,global_product_id,name`
    path = tmp_path / "products_lookup.csv"
    path.write_text(",global_product_id,name\n0,1504,WAWO Eyeshadow Palette\n1,564,Brightening Gel\n",
                    encoding="utf-8")
    items = read_items(path, ReadConfig(id_field="global_product_id"))
    assert items.ids == ["1504", "564"]
    assert items.texts == ["name: WAWO Eyeshadow Palette", "name: Brightening Gel"]  # the index is not text
    assert "has no name" not in _error(path)  # without --id-field: 'id' is missing, not a header error
    unnamed_later = tmp_path / "later.csv"
    unnamed_later.write_text("id,,name\na,x,y\n", encoding="utf-8")
    assert _error(unnamed_later) == f"{unnamed_later}:1: header column 2 has no name"


def test_format_override_and_unknown_extension(tmp_path):
    path = tmp_path / "items.txt"
    path.write_text('{"id": "a", "title": "x"}\n', encoding="utf-8")
    with pytest.raises(SemidError, match=r"items\.txt: field 'format'"):
        read_items(path)
    assert read_items(path, ReadConfig(format="jsonl")).ids == ["a"]


def test_empty_text_is_a_counted_warning_not_an_error(write_jsonl):
    items = read_items(write_jsonl([{"id": "a", "title": "x"}, {"id": "b", "title": ""}, {"id": "c"}]))
    assert items.texts == ["title: x", "", ""]
    assert items.empty_text_lines == [2, 3]
    assert "2 item(s) have empty text (lines 2, 3)" in items.warnings[0]


# -- bad inputs: one clear error naming file, line and field -----------------------------------


def _error(path, config: ReadConfig | None = None) -> str:
    with pytest.raises(SemidError) as info:
        read_items(path, config)
    return str(info.value)


def test_missing_id(write_jsonl):
    path = write_jsonl([{"id": "a", "title": "x"}, {"title": "y"}])
    assert _error(path).startswith(f"{path}:2: field 'id' is missing")


def test_empty_id(write_jsonl):
    path = write_jsonl([{"id": "  ", "title": "x"}])
    assert _error(path).startswith(f"{path}:1: field 'id' is empty")


def test_duplicate_id(write_jsonl):
    path = write_jsonl([{"id": "a"}, {"id": "b"}, {"id": "a"}])
    assert _error(path) == f"{path}:3: field 'id' repeats id 'a' (first on line 1)"


def test_template_field_missing(write_jsonl):
    path = write_jsonl([{"id": "a", "title": "x", "brand": "b"}, {"id": "b", "title": "y"}])
    message = _error(path, ReadConfig(template="{title} by {brand}"))
    assert message == f"{path}:2: field 'brand' named in --template is missing"


def test_text_field_missing(write_jsonl):
    path = write_jsonl([{"id": "a", "title": "x"}])
    assert _error(path, ReadConfig(text_fields=("brand",))).startswith(f"{path}:1: field 'brand'")


BAD_FILES = [
    # (file name, bytes, expected message: exact, or a prefix when it ends with "...")
    ("items.jsonl", b'{"id": "a", "title": "x"}\n{"id": "b", "title": }\n',
     "{path}:2: malformed JSON (Expecting value at column 22)"),
    ("items.jsonl", b'{"id": "a"}\n["b"]\n', "{path}:2: expected a JSON object, got list..."),
    ("items.jsonl", b'{"id": "a", "title": "ok"}\n{"id": "b", "title": "bad \xff byte"}\n',
     "{path}:2: field 'title' holds invalid UTF-8"),
    ("items.csv", b"id,title,brand\na,ok,x\nb,fine,\xc3\x28\n", "{path}:3: field 'brand' holds invalid UTF-8"),
    ("items.jsonl", b'{"id": "a"}\n{"id": "b"\xff}\n', "{path}:2: invalid UTF-8 at column 11"),
    ("items.csv", b"id,title\na,x\nb,y,z\n", "{path}:3: has 3 values but the header has 2 fields"),
    ("x.item", b"item_id:token\ttitle\n1\tx\n", "{path}:1: field 'title' in header column 2 is not `name:type`..."),
    ("items.csv", b"id,title,title\na,x,y\n", "{path}:1: field 'title' appears twice in the header"),
    # an unclosed quote used to swallow the rest of the file into one cell without a word
    ("items.csv", b'id,title\na,"unclosed\n',
     "{path}:2: malformed CSV (unexpected end of data; a quote opened here is never closed)"),
    ("items.csv", b'id,title\na,"x\ny"\nb,"c\nd\n', "{path}:4: malformed CSV (unexpected end of data..."),
    ("items.tsv", b'id\ttitle\na\t"x"y\n', "{path}:2: malformed TSV (..."),
]


@pytest.mark.parametrize("name, content, expected", BAD_FILES)
def test_bad_file_contents_name_file_line_and_field(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    message, expected = _error(path), expected.format(path=path)
    if expected.endswith("..."):
        assert message.startswith(expected[:-3])
    else:
        assert message == expected


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "items.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert _error(empty) == f"{empty}: holds no items"
    assert _error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file"


def test_bad_template_syntax(write_jsonl):
    path = write_jsonl([{"id": "a", "title": "x"}])
    with pytest.raises(SemidError, match="field 'template'"):
        read_items(path, ReadConfig(template="{title"))
    with pytest.raises(SemidError, match="named fields"):
        read_items(path, ReadConfig(template="{0}"))


def test_texts_jsonl_round_trip(tmp_path):
    from semid.items import read_texts, texts_jsonl

    path = tmp_path / "texts.jsonl"
    path.write_bytes(texts_jsonl(["a", "b"], ["x\ny", "é"]))
    assert read_texts(path) == (["a", "b"], ["x\ny", "é"])
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[1]) == {"id": "b", "text": "é"}
