import json

from bench.results import append_rows, read_rows, to_jsonable


def test_append_is_cumulative_and_readable(tmp_path):
    path = tmp_path / "r.jsonl"
    append_rows(path, [{"a": 1}])
    append_rows(path, [{"a": 2}, {"a": float("nan")}])
    rows, problems = read_rows(path)
    assert rows == [{"a": 1}, {"a": 2}, {"a": None}] and not problems
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind


def test_corrupt_lines_are_reported_with_line_numbers_and_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n[1, 2]\n\n{"a": 3}')
    rows, problems = read_rows(path)
    assert rows == [{"a": 1}, {"a": 3}]
    assert problems[0].endswith(":2: skipped, not valid JSON (Expecting ',' delimiter)")
    assert ":3: skipped, not a JSON object" in problems[1]
    append_rows(path, [{"a": 4}])  # a file without a final newline is appended to cleanly
    assert read_rows(path)[0][-2:] == [{"a": 3}, {"a": 4}]


def test_to_jsonable_handles_tensors_and_arrays():
    import numpy as np
    import torch

    value = to_jsonable({"t": torch.tensor([1.0, float("inf")]), "n": np.float32(0.5), "p": (1, 2)})
    assert json.dumps(value, allow_nan=False) == '{"t": [1.0, null], "n": 0.5, "p": [1, 2]}'
