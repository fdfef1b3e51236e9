"""The run directory's log: appended as a run grows, identical to a full rewrite; rows packed for checkpoints."""
import torch

from hddgeo.rundir import LogWriter, load_tensors, pack_rows, save_tensors, unpack_rows, write_log


def _rows(n, start=0):
    rows = []
    for i in range(start, start + n):
        row = {"iteration": i + 1, "loss": 1.0 / (i + 1), "sinkhorn_iters": 30 + i, "seconds": 0.1 * i}
        if (i + 1) % 3 == 0:
            row["eval_acc"] = 0.5 + 0.01 * i  # a column that first appears at row 3
        rows.append(row)
    return rows


def test_log_writer_appends_and_matches_a_full_rewrite(tmp_path):
    path, ref = tmp_path / "log.csv", tmp_path / "ref.csv"
    writer, rows = LogWriter(str(path)), []
    sizes = []
    for chunk in (2, 2, 1, 4):  # a new column arrives in the second chunk
        rows += _rows(chunk, len(rows))
        writer.write(rows)
        write_log(str(ref), rows)
        assert path.read_text() == ref.read_text()
        sizes.append(path.stat().st_size)
    assert sizes == sorted(sizes)
    # a new writer (a resumed process) rewrites from the rows it is given, dropping lines written after them
    LogWriter(str(path)).write(rows[:3])
    write_log(str(ref), rows[:3])
    assert path.read_text() == ref.read_text()


def test_packed_rows_round_trip_through_a_checkpoint_file(tmp_path):
    rows = _rows(7)
    rows[4]["loss"] = float("nan")  # a logged NaN stays a NaN; a missing column stays missing
    save_tensors({"rows": pack_rows(rows)}, str(tmp_path / "c.pt"))
    back = unpack_rows(load_tensors(str(tmp_path / "c.pt"))["rows"])
    assert [set(r) for r in back] == [set(r) for r in rows]
    assert all(type(r["iteration"]) is int and type(r["sinkhorn_iters"]) is int for r in back)
    assert all(type(r["loss"]) is float for r in back)
    same = lambda a, b: a == b or (a != a and b != b)
    assert all(same(a[k], b[k]) for a, b in zip(rows, back) for k in a)
    assert unpack_rows(rows) == rows  # checkpoints written before the packing load too
    assert unpack_rows(pack_rows([])) == []
    assert isinstance(pack_rows(rows)["values"], torch.Tensor)


def test_read_json_refuses_what_no_run_wrote_in_one_value_error(tmp_path):
    """JSON nested beyond the parser's recursion limit, a FIFO, an array: each a ValueError naming the file (a
    RecursionError or a blocked read would be a traceback or a hang)."""
    import os

    import pytest

    from hddgeo.rundir import read_json

    cases = {"deep.json": "[" * 100_000 + "]" * 100_000, "deep_object.json": '{"a":' * 50_000 + "1" + "}" * 50_000,
             "array.json": "[1, 2]"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=name):
            read_json(str(tmp_path / name))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.json")
        with pytest.raises(ValueError, match="not a regular file"):
            read_json(str(tmp_path / "fifo.json"))
