"""Trace readers on small generated files: parsing, time conversion, filters, bad rows,
format detection and file-level errors."""
import gzip
import json

import numpy as np
import pytest

from llmsim.errors import InputError
from llmsim.workload.readers import detect_format, reader_for_file
from llmsim.workload.readers import jsonio

AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def rows(path, fmt=None, on_bad_row="error", **extra):
    r = reader_for_file(path, fmt, on_bad_row, extra or None)
    out = list(r)
    return out, r


def one_problem(excinfo):
    assert len(excinfo.value.problems) == 1
    return excinfo.value.problems[0]


# ---------------------------------------------------------------------------------------- azure
def test_azure2023_times_are_seconds_from_first(tmp_path):
    p = write(tmp_path, "a.csv", AZ + "2023-11-16 18:15:46.6805900,374,44\n"
              "2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:16:46.6805900,5,1\n")
    assert detect_format(p) == "azure2023"
    out, r = rows(p)
    assert [it[0] for it in out] == pytest.approx([0.0, 4.314579, 60.0], abs=1e-6)
    assert [(it[1], it[2]) for it in out] == [(374, 44), (396, 109), (5, 1)]
    assert r.counts["rows_read"] == 3


def test_azure2024_offset_timestamps(tmp_path):
    p = write(tmp_path, "b.csv", AZ + "2024-05-10 00:00:00.009930+00:00,10,2\n"
              "2024-05-10 00:00:01.509930+00:00,20,3\n")
    assert detect_format(p) == "azure2024"
    out, r = rows(p)
    assert r.format == "azure2024"
    assert out[1][0] == pytest.approx(1.5)


def test_gzip_csv(tmp_path):
    p = tmp_path / "a.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write(AZ + "2023-11-16 18:15:46.0,10,2\n2023-11-16 18:15:48.0,11,3\n")
    out, _ = rows(p)
    assert [it[0] for it in out] == [0.0, 2.0]


@pytest.mark.parametrize("line,key,msg", [
    ("2023-11-16 18:15:47.0,12\n", "GeneratedTokens", "fields"),
    ("2023-11-16 18:15:47.0,-3,5\n", "ContextTokens", ">= 1"),
    ("2023-11-16 18:15:47.0,12.5,5\n", "ContextTokens", "not an integer"),
    ("2023-11-16 18:15:47.0,12,abc\n", "GeneratedTokens", "not an integer"),
    ("yesterday,12,5\n", "TIMESTAMP", "ISO 8601"),
    ("2023-11-16 18:15:45.0,12,5\n", "TIMESTAMP", "backwards"),
])
def test_bad_rows_name_file_line_column(tmp_path, line, key, msg):
    p = write(tmp_path, "bad.csv", AZ + "2023-11-16 18:15:46.0,10,2\n" + line +
              "2023-11-16 18:15:49.0,10,2\n")
    with pytest.raises(InputError) as ei:
        rows(p)
    pr = one_problem(ei)
    assert pr.where == str(p) and pr.line == 3 and pr.key == key
    assert msg in pr.message and "on_bad_row: skip" in pr.message
    out, r = rows(p, on_bad_row="skip")
    assert len(out) == 2 and r.counts["skipped_bad_rows"] == 1 and r.counts["rows_read"] == 3
    assert f"{p}:3" in r.counts["bad_row_examples"][0]


def test_integer_valued_floats_are_accepted(tmp_path):
    p = write(tmp_path, "f.csv", AZ + "2023-11-16 18:15:46.0,10.0,2\n")
    assert rows(p)[0][0][1] == 10


# ------------------------------------------------------------------------------------ burstgpt
BG = "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def test_burstgpt_filters_and_failed(tmp_path):
    p = write(tmp_path, "bg.csv", BG +
              "5,s1,1.0,ChatGPT,100,20,120,Conversation log\n"
              "6,s1,1.0,GPT-4,200,0,200,API log\n"          # failed
              "8,s2,1.0,GPT-4,300,30,330,Conversation log\n"
              "9,s3,1.0,ChatGPT,400,0,400,Conversation log\n"  # failed
              "12,s4,1.0,ChatGPT,500,50,550,API log\n")
    assert detect_format(p) == "burstgpt"
    out, r = rows(p)
    assert [(it[0], it[1], it[2], it[4]) for it in out] == [(0.0, 100, 20, "s1"), (3.0, 300, 30, "s2"),
                                                           (7.0, 500, 50, "s4")]
    assert r.counts["failed_rows"] == 2
    out, r = rows(p, "burstgpt", models=["ChatGPT"], failed="keep")
    assert [(it[1], it[2], it[5]) for it in out] == [(100, 20, None), (400, 1, {"failed": True}),
                                                     (500, 50, None)]
    assert r.counts["filtered_rows"] == 2 and r.counts["failed_rows"] == 0
    out, r = rows(p, "burstgpt", log_types=["Conversation log"], models=["ChatGPT", "GPT-4"])
    assert [it[1] for it in out] == [100, 300]
    assert r.counts["filtered_rows"] == 2 and r.counts["failed_rows"] == 1


def test_burstgpt_without_session_columns(tmp_path):
    p = write(tmp_path, "bg.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
              "0,ChatGPT,10,5,15,API log\n1.5,ChatGPT,11,6,17,API log\n")
    out, _ = rows(p)
    assert [(it[0], it[4]) for it in out] == [(0.0, None), (1.5, None)]


# ------------------------------------------------------------------------------------ mooncake
def test_mooncake_hash_ids_and_ms(tmp_path):
    recs = [{"timestamp": 1000, "input_length": 1025, "output_length": 7, "hash_ids": [0, 1, 2]},
            {"timestamp": 1500, "input_length": 600, "output_length": 3, "hash_ids": [0, 9]}]
    p = write(tmp_path, "m.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    assert detect_format(p) == "mooncake"
    out, r = rows(p)
    assert r.hash_block_tokens == 512
    assert out[0] == (0.0, 1025, 7, [0, 1, 2], None, None, 0)
    assert out[1][0] == pytest.approx(0.5) and out[1][3] == [0, 9]


def test_mooncake_bad_rows(tmp_path):
    p = write(tmp_path, "m.jsonl",
              '{"timestamp": 4, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n'
              '{"timestamp": 5, "input_length": 1100, "output_length": 2, "hash_ids": [1]}\n'
              '{"timestamp": 6, "input_length": 10}\n'
              'not json\n'
              '{"timestamp": 3, "input_length": 10, "output_length": 2}\n'
              '{"timestamp": 7, "input_length": 10, "output_length": 2}\n')
    with pytest.raises(InputError) as ei:
        rows(p)
    pr = one_problem(ei)
    assert (pr.line, pr.key) == (2, "hash_ids") and "ceil" in pr.message
    out, r = rows(p, on_bad_row="skip")
    assert [it[0] for it in out] == pytest.approx([0.0, 0.003])
    assert r.counts["skipped_bad_rows"] == 4
    ex = r.counts["bad_row_examples"]
    assert ":3: key 'output_length'" in ex[1] and ":4:" in ex[2] and "backwards" in ex[3]


@pytest.mark.parametrize("bad", ['"7"', "7.5", "true", "[7]", "null"])
def test_mooncake_hash_ids_must_be_integers(tmp_path, bad):
    # int() in the prefix cache used to take "7" and 7.5 as 7 (and crash on "a"); now the
    # row is bad, with its line and key
    p = write(tmp_path, "m.jsonl",
              '{"timestamp": 0, "input_length": 600, "output_length": 2, "hash_ids": [1, 2]}\n'
              '{"timestamp": 5, "input_length": 600, "output_length": 2, "hash_ids": [1, %s]}\n'
              % bad)
    with pytest.raises(InputError) as ei:
        rows(p)
    pr = one_problem(ei)
    assert (pr.line, pr.key) == (2, "hash_ids") and "integers" in pr.message
    out, r = rows(p, on_bad_row="skip")
    assert [it[3] for it in out] == [[1, 2]] and r.counts["skipped_bad_rows"] == 1


def test_csv_and_parquet_hash_ids_must_be_integers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    cols = {"arrival": "t", "prompt_tokens": "i", "output_tokens": "o", "hash_ids": "h"}
    g = write(tmp_path, "g.csv", 't,i,o,h\n1,5,1,"[1, 2]"\n2,5,1,"[1, 2.5]"\n')
    with pytest.raises(InputError) as ei:
        rows(g, "csv", columns=cols)
    pr = one_problem(ei)
    assert (pr.line, pr.key) == (3, "h") and "integers" in pr.message
    f = tmp_path / "h.parquet"
    pq.write_table(pa.table({"t": [1.0, 2.0], "i": [5, 5], "o": [1, 1],
                             "h": pa.array([[1.0, 2.0], [1.0, 2.5]])}), f)
    with pytest.raises(InputError) as ei:
        rows(f, "parquet", columns=cols)
    pr = one_problem(ei)
    assert pr.key == "h" and "integers" in pr.message
    pq.write_table(pa.table({"t": [1.0, 2.0], "i": [5, 5], "o": [1, 1],
                             "h": pa.array([[1, 2], [1, 3]])}), f)
    out, _ = rows(f, "parquet", columns=cols)
    assert [it[3] for it in out] == [[1, 2], [1, 3]]


# ------------------------------------------------------------------------------------ sharegpt
def conv(cid, *counts, role_key="from"):
    msgs = []
    for i, n in enumerate(counts):
        user = i % 2 == 0
        role = ("human" if user else "gpt") if role_key == "from" else ("user" if user else "assistant")
        msgs.append({role_key: role, "num_tokens": n})
    return {"id": cid, "conversations" if role_key == "from" else "messages": msgs}


def test_sharegpt_turns_and_prefix_hash_ids(tmp_path):
    recs = [conv("a", 20, 30, 10, 5, 7), {"input_len": 50, "output_len": 4},
            conv("c", 40, 8, role_key="role")]
    p = write(tmp_path, "s.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    assert detect_format(p) == "sharegpt"
    r = reader_for_file(p)           # trace stats defaults: every turn
    sess = list(r)
    assert [s[0] for s in sess] == ["a", 1, "c"]
    a = sess[0][1]
    # turn 1: prompt 20 → 30 out; turn 2: prompt 20+30+10 = 60 → 5 out; trailing user (7) dropped
    assert [(it[1], it[2]) for it in a] == [(20, 30), (60, 5)]
    B = r.hash_block_tokens
    assert B == 16
    # prefix property: the full blocks of turn 1's prompt (20 → 1 full block) reappear in turn 2
    h1, h2 = a[0][3], a[1][3]
    assert len(h1) == 2 and len(h2) == 4            # ceil(20/16), ceil(60/16)
    assert h2[:1] == h1[:1] and h1[1] not in h2      # partial block of turn 1 is fresh
    assert len(set(h2)) == 4
    assert [(it[1], it[2]) for it in sess[1][1]] == [(50, 4)]
    assert [(it[1], it[2]) for it in sess[2][1]] == [(40, 8)]
    # different conversations never share ids
    assert not set(h2) & set(sess[2][1][0][3])


def test_sharegpt_json_array_streaming(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonio, "_PIECE", 7)          # force many refills mid-record
    recs = [conv(f"c{i}", 10 + i, 3 + i) for i in range(20)]
    p = write(tmp_path, "s.json", json.dumps(recs, indent=2))
    r = reader_for_file(p, "sharegpt")
    sess = list(r)
    assert len(sess) == 20 and sess[19][1][0][1:3] == (29, 22)


def test_sharegpt_text_needs_counts_or_chars_per_token(tmp_path):
    rec = {"id": 1, "conversations": [{"from": "human", "value": "x" * 40},
                                      {"from": "gpt", "value": "y" * 81}]}
    p = write(tmp_path, "s.jsonl", json.dumps(rec) + "\n")
    with pytest.raises(InputError) as ei:
        rows(p)
    pr = one_problem(ei)
    assert pr.line == 1 and "chars_per_token" in pr.message
    out, _ = rows(p, "sharegpt", chars_per_token=4.0, turns="all", think_time_s=0)
    assert [(it[1], it[2]) for it in out[0][1]] == [(10, 20)]      # round(40/4), round(81/4)


def test_sharegpt_bad_records(tmp_path):
    recs = [conv("a", 10, 0), {"conversations": [{"from": "narrator", "num_tokens": 3}]},
            {"conversations": [{"from": "human", "num_tokens": 3}]}, conv("ok", 3, 4)]
    p = write(tmp_path, "s.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    out, r = rows(p, on_bad_row="skip")
    assert [s[0] for s in out] == ["ok"] and r.counts["skipped_bad_rows"] == 3


# -------------------------------------------------------------------------------- lengths, csv
def test_lengths_and_generic_csv(tmp_path):
    p = write(tmp_path, "l.csv", "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
              "3772,54,3826,69.8\n2015,156,2171,12.9\n")
    assert detect_format(p) == "lengths"
    out, r = rows(p)
    assert not r.has_timestamps
    assert [(it[0], it[1], it[2]) for it in out] == [(None, 3772, 54), (None, 2015, 156)]
    g = write(tmp_path, "g.csv", "ts;in;out;sess;h\n1000;10;2;x;[1,2]\n1250;20;3;;3 4\n")
    out, r = rows(g, "csv", columns={"arrival": "ts", "prompt_tokens": "in", "output_tokens": "out",
                                     "session_id": "sess", "hash_ids": "h"},
                  time_unit="ms", delimiter=";")
    assert out[0] == (0.0, 10, 2, [1, 2], "x", None, 0)
    assert out[1] == (0.25, 20, 3, [3, 4], None, None, 0)
    with pytest.raises(InputError) as ei:
        rows(g, "csv", columns={"arrival": "time", "prompt_tokens": "in", "output_tokens": "out"},
             delimiter=";")
    pr = one_problem(ei)
    assert pr.line == 1 and "['time']" in pr.message


def test_generic_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    ts = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:02.5", "2024-01-01T00:00:01"],
                  dtype="datetime64[ms]")
    tab = pa.table({"t": pa.array(ts), "p": [5, 6, 7], "o": [1, 2, 3]})
    f = tmp_path / "x.parquet"
    pq.write_table(tab, f)
    cols = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}
    with pytest.raises(InputError) as ei:
        rows(f, "parquet", columns=cols)
    pr = one_problem(ei)
    assert pr.line == 3 and pr.key == "t" and "backwards" in pr.message
    out, r = rows(f, "parquet", on_bad_row="skip", columns=cols)
    assert [(it[0], it[1]) for it in out] == [(0.0, 5), (2.5, 6)]
    with pytest.raises(InputError, match="columns"):
        detect_format(f)


# -------------------------------------------------------------------------------- file errors
def test_missing_empty_and_wrong_format_files(tmp_path):
    with pytest.raises(InputError) as ei:
        rows(tmp_path / "nope.csv")
    assert one_problem(ei).where == str(tmp_path / "nope.csv") and "not found" in str(ei.value)
    e = write(tmp_path, "empty.csv", "")
    with pytest.raises(InputError, match="empty"):
        rows(e)
    with pytest.raises(InputError, match="empty"):
        rows(e, "azure2023")
    h = write(tmp_path, "hdr.csv", AZ)
    with pytest.raises(InputError, match="no data rows"):
        reader_for_file(h).check()
    w = write(tmp_path, "other.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(InputError) as ei:
        rows(w)
    pr = one_problem(ei)
    assert pr.where == str(w) and "cannot detect" in pr.message and "azure2023" in pr.message
    # explicit format, wrong header
    with pytest.raises(InputError) as ei:
        rows(w, "azure2023")
    assert "TIMESTAMP" in one_problem(ei).message
    j = write(tmp_path, "m.jsonl", '{"a": 1}\n')
    with pytest.raises(InputError, match="cannot detect"):
        detect_format(j)
    with pytest.raises(InputError, match="input_length"):
        reader_for_file(j, "mooncake").check()


def test_header_only_file_is_an_error_when_read(tmp_path):
    h = write(tmp_path, "hdr.csv", AZ)
    with pytest.raises(InputError, match="no data rows") as ei:
        rows(h)
    assert one_problem(ei).where == str(h)
    j = write(tmp_path, "blank.jsonl", "\n\n")
    with pytest.raises(InputError, match="no data rows"):
        rows(j, "mooncake")


def test_skipped_first_row_does_not_set_the_time_origin(tmp_path):
    p = write(tmp_path, "m.jsonl",
              '{"timestamp": 100, "input_length": 10, "output_length": 2, "hash_ids": [1, 2, 3]}\n'
              '{"timestamp": 400, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n')
    out, r = rows(p, on_bad_row="skip")
    assert [it[0] for it in out] == [0.0] and r.counts["skipped_bad_rows"] == 1
    g = write(tmp_path, "g.csv", "t,i,o,h\n1,5,1,[1\n3,5,1,[2]\n")
    out, r = rows(g, "csv", on_bad_row="skip", columns={"arrival": "t", "prompt_tokens": "i",
                                                       "output_tokens": "o", "hash_ids": "h"})
    assert [(it[0], it[3]) for it in out] == [(0.0, [2])]


# ------------------------------------------------------------------- odd values (bad-input fuzz)
MC = '{"timestamp": 0, "input_length": 10, "output_length": 2}\n'


@pytest.mark.parametrize("name, text, fmt, key", [
    ("m.jsonl", MC + '{"timestamp": 1, "input_length": %d, "output_length": 2}\n' % 10 ** 30,
     "mooncake", "input_length"),
    ("m.jsonl", MC + '{"timestamp": 1, "input_length": 10, "output_length": %d}\n' % 2 ** 62,
     "mooncake", "output_length"),
    ("a.csv", AZ + "2023-11-16 18:15:46.0,10,2\n2023-11-16 18:15:47.0,1e30,2\n", "azure2023",
     "ContextTokens"),
    ("s.jsonl", '{"prompt_tokens": 5, "output_tokens": 2}\n'
                '{"prompt_tokens": 100000001, "output_tokens": 2}\n', "sharegpt", "prompt_tokens"),
])
def test_token_counts_above_the_cap_are_bad_rows(tmp_path, name, text, fmt, key):
    """A count that no model could hold (and that would overflow int64 further on) is a bad row
    naming file, line and column, not an OverflowError traceback."""
    p = write(tmp_path, name, text)
    with pytest.raises(InputError) as ei:
        rows(p, fmt)
    pr = one_problem(ei)
    assert (pr.line, pr.key) == (text.count("\n"), key)      # the last line
    assert "must be <= 100,000,000" in pr.message


def test_parquet_fractional_decimal_and_huge_counts_are_bad_rows(tmp_path):
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq
    cols = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"t": [0.0, 1.0], "o": [1, 1], "p": pa.array(
        [decimal.Decimal("10"), decimal.Decimal("10.5")], pa.decimal128(5, 1))}), f)
    with pytest.raises(InputError) as ei:          # was cut to 10 without a word
        rows(f, "parquet", columns=cols)
    pr = one_problem(ei)
    assert (pr.line, pr.key) == (2, "p") and "not an integer" in pr.message
    pq.write_table(pa.table({"t": [0.0, 1.0], "o": [1, 1],
                             "p": pa.array([10, 2 ** 64 - 1], pa.uint64())}), f)
    with pytest.raises(InputError, match="must be <= 100,000,000"):
        rows(f, "parquet", columns=cols)


@pytest.mark.parametrize("ts", ["Infinity", "-Infinity", str(10 ** 400)])
def test_mooncake_timestamp_must_be_finite(tmp_path, ts):
    p = write(tmp_path, "m.jsonl", MC + '{"timestamp": %s, "input_length": 10, '
              '"output_length": 2}\n' % ts)
    with pytest.raises(InputError) as ei:
        rows(p, "mooncake")
    pr = one_problem(ei)
    assert (pr.line, pr.key) == (2, "timestamp") and "finite" in pr.message


@pytest.mark.parametrize("name, head, fmt", [
    ("a.csv", AZ + "2023-11-16 18:15:46.0,10,2\n", "azure2023"),
    ("m.jsonl", MC, "mooncake"),
    ("m.jsonl", MC, None),
])
def test_bytes_that_are_not_utf8_name_the_line(tmp_path, name, head, fmt):
    p = tmp_path / name
    p.write_bytes(head.encode() + b"\n" + head.splitlines()[-1].encode() + b"\xff\n")
    with pytest.raises(InputError) as ei:          # was a UnicodeDecodeError traceback
        rows(p, fmt)
    pr = one_problem(ei)
    assert pr.where == str(p) and "not UTF-8" in pr.message
    assert pr.line == head.count("\n") + 2


def test_json_byte_order_mark_and_text_after_an_array(tmp_path):
    p = write(tmp_path, "m.jsonl", "\ufeff" + MC)      # allowed, as in the CSV readers
    assert [it[1] for it in rows(p, "mooncake")[0]] == [10]
    assert detect_format(p) == "mooncake"
    s = write(tmp_path, "s.json", '[{"prompt_tokens": 5, "output_tokens": 2}] junk\n')
    with pytest.raises(InputError, match="text after the end of the JSON array"):
        rows(s, "sharegpt")
    m = write(tmp_path, "a.json", '[' + MC.strip() + ', {"timestamp": 1, ')
    with pytest.raises(InputError) as ei:           # was a ValueError traceback
        rows(m, "mooncake")
    assert one_problem(ei).where == str(m)


def test_sharegpt_role_must_be_text(tmp_path):
    p = write(tmp_path, "s.jsonl", json.dumps({"conversations": [
        {"from": ["human"], "num_tokens": 5}, {"from": "gpt", "num_tokens": 2}]}) + "\n")
    with pytest.raises(InputError) as ei:           # was TypeError: unhashable type: 'list'
        rows(p, "sharegpt")
    assert one_problem(ei).key == "conversations[0].from"


def test_csv_extra_fields_and_columns_named_twice(tmp_path):
    p = write(tmp_path, "a.csv", AZ + "2023-11-16 18:15:46.0,10,2\n2023-11-16 18:15:47.0,12,2,99\n")
    with pytest.raises(InputError) as ei:          # the 99 was dropped without a word
        rows(p)
    pr = one_problem(ei)
    assert pr.line == 3 and "row has 4 fields, the header 3" in pr.message and pr.value == ["99"]
    d = write(tmp_path, "d.csv", "TIMESTAMP,ContextTokens,ContextTokens,GeneratedTokens\n"
              "2023-11-16 18:15:46.0,10,20,2\n")
    with pytest.raises(InputError, match=r"\['ContextTokens'\] more than once"):
        rows(d, "azure2023")


def test_burstgpt_filters_that_keep_nothing_are_an_error(tmp_path):
    p = write(tmp_path, "bg.csv", BG + "5,s1,1.0,ChatGPT,100,20,120,Conversation log\n")
    with pytest.raises(InputError, match=r"every row was filtered out by models \['ChatGTP'\]"):
        rows(p, "burstgpt", models=["ChatGTP"])
    with pytest.raises(InputError, match="at least 1 item"):   # [] was read as "no filter"
        rows(p, "burstgpt", models=[])


def test_length_files_bad_json_extra_cells_and_huge_values(tmp_path):
    from llmsim.workload.readers.columns import read_columns
    cases = [("a.json", '[{"n": 10}, {"n": ', "not valid JSON"),
             ("b.csv", "n\n10,99\n", "row has 2 fields, the header 1"),
             ("c.csv", "n,n\n10,20\n", "more than once"),
             ("d.csv", "n\n10\n%d\n" % 10 ** 23, "must be <= 100,000,000"),
             ("e.jsonl", '{"n": 10}\n{"n": \n', "line is not valid JSON")]
    for name, text, msg in cases:
        with pytest.raises(InputError, match=msg) as ei:
            read_columns(write(tmp_path, name, text), ["n"], key="k")
        assert one_problem(ei).where == str(tmp_path / name)
    bad = tmp_path / "f.csv"
    bad.write_bytes(b"n\n10\n2\xff\n")
    with pytest.raises(InputError, match="not UTF-8") as ei:
        read_columns(bad, ["n"])
    assert one_problem(ei).line == 3


def test_sharegpt_aliases_that_disagree_are_bad_rows(tmp_path):
    p = write(tmp_path, "s.jsonl",
              '{"prompt_tokens": 10, "input_len": 10, "output_tokens": 2}\n'       # agree: fine
              '{"prompt_tokens": 10, "input_len": 99, "output_tokens": 2}\n'
              + json.dumps({"conversations": [{"from": "human", "role": "assistant",
                                               "num_tokens": 5},
                                              {"from": "gpt", "num_tokens": 2}]}) + "\n")
    out, r = rows(p, "sharegpt", on_bad_row="skip")
    assert [it[1] for _, turns in out for it in turns] == [10]
    ex = r.counts["bad_row_examples"]
    assert ":2: key 'input_len'" in ex[0] and "different values (10 and 99)" in ex[0]
    assert ":3: key 'conversations[0].role'" in ex[1] and "disagree" in ex[1]


def test_parquet_boolean_or_numeric_times_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    f = tmp_path / "b.parquet"
    cols = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}
    pq.write_table(pa.table({"t": [False, True], "p": [5, 5], "o": [1, 1]}), f)
    with pytest.raises(InputError) as ei:          # read as 0 s and 1 s before
        rows(f, "parquet", columns=cols)
    pr = one_problem(ei)
    assert (pr.line, pr.key, pr.value) == (1, "t", False)
    pq.write_table(pa.table({"t": [0.0, 1.0], "p": [5, 5], "o": [1, 1]}), f)
    with pytest.raises(InputError, match="not an ISO 8601 date-time") as ei:
        rows(f, "parquet", columns=cols, time_unit="datetime")
    assert one_problem(ei).value == 0.0            # the value, not None


@pytest.mark.parametrize("extra, why", [
    ({"window": {"start_s": 1000}}, "3 outside the window"),
    ({"max_prompt_tokens": 1, "cap_mode": "drop"}, "3 dropped over the caps"),
    ({"on_bad_row": "skip", "sample_fraction": 1e-9}, "3 sampled out"),
])
def test_a_trace_that_keeps_no_request_is_an_error(tmp_path, extra, why):
    """It ran an empty simulation and exited 0; the counts were only in summary.json."""
    from llmsim.workload import WorkloadConfig, build_workload
    p = write(tmp_path, "a.csv", AZ + "".join(f"2023-11-16 18:15:4{i}.0,10,2\n" for i in range(3)))
    cfg = WorkloadConfig.model_validate({"trace": {"path": str(p), "format": "azure2023",
                                                   **extra}})
    with pytest.raises(InputError) as ei:
        list(build_workload(cfg, 0, tmp_path))
    pr = one_problem(ei)
    assert pr.where == str(p) and "no request is left of the trace's 3 rows" in pr.message
    assert why in pr.message
