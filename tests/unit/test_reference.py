"""Reference profiles: binning, file formats, JSON round trip, versioning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.reference_files import read_columns, read_profile
from monitor.binning import CategoricalBins
from monitor.exceptions import ReferenceError
from monitor.reference import BinningOptions, ReferenceProfile, build_profile
from monitor.schema import FeatureKind, FeatureSpec


def frame(n=3000, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "age": rng.integers(18, 90, n).astype(float),
            "country": rng.choice(["FR", "DE", "US", "GB"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "prediction": rng.random(n),
            "label": rng.choice(["fraud", "ok"], n),
        }
    )
    df.loc[::50, "age"] = np.nan
    df.loc[::70, "country"] = None
    return df


def _numpy(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=float)
    return np.array([None if pd.isna(v) else v for v in s], dtype=object)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_file_format_gives_the_same_profile(tmp_path, suffix):
    df = frame()
    path = tmp_path / f"ref{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    profile = build_profile("fraud", read_columns(path))
    expected = build_profile(
        "fraud",
        {c: _numpy(df[c]) for c in df},
    )
    kinds = {f.name: f.kind for f in profile.features}
    assert kinds == {
        "amount": FeatureKind.NUMERICAL,
        "age": FeatureKind.NUMERICAL,
        "country": FeatureKind.CATEGORICAL,
    }
    for got, want in zip(profile.features, expected.features, strict=True):
        assert got.counts.tolist() == want.counts.tolist()
        assert got.missing == want.missing
    assert profile.feature("age").missing == len(df[::50])
    assert profile.feature("country").missing == df["country"].isna().sum()
    assert profile.prediction is not None
    assert profile.prediction.kind is FeatureKind.NUMERICAL


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=500),
    quantiles=st.integers(10, 100),
)
def test_numeric_bins_hold_every_reference_value_inside(values, quantiles):
    x = np.array(values)
    p = build_profile("m", {"x": x}, options=BinningOptions(quantiles, 10, 5))
    f = p.feature("x")
    assert f.counts.sum() == x.size
    assert f.counts[0] == 0
    assert f.counts[-1] == 0
    assert f.bins.coarse_starts[0] == 0
    np.testing.assert_allclose(f.sums.sum(), x.sum(), rtol=1e-9, atol=1e-6)
    assert f.minimum == x.min()
    assert f.maximum == x.max()


def test_top_k_other_and_new():
    values = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"], dtype=object)
    p = build_profile(
        "m",
        {"c": values},
        [FeatureSpec("c", FeatureKind.CATEGORICAL)],
        BinningOptions(max_categories=2),
    )
    f = p.feature("c")
    assert f.bins.categories == ("a", "b")
    # chosen on the even rows (a a a b b c d), counted on the odd ones (a a b b c c)
    assert f.counts.tolist() == [2, 2, 2, 0]  # a, b, other (c, d), new
    assert f.bins.known == {"a", "b", "c", "d"}
    # without a choice to make, every row is counted
    every = build_profile(
        "m", {"c": values}, [FeatureSpec("c", FeatureKind.CATEGORICAL)], BinningOptions()
    ).feature("c")
    assert every.counts.tolist() == [5, 4, 3, 1, 0, 0]


def test_json_round_trip_and_version_check(tmp_path):
    df = frame()
    profile = build_profile("fraud", {c: _numpy(df[c]) for c in df})
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile.to_dict()))
    back = read_profile(path)
    assert back.to_dict() == profile.to_dict()
    data = profile.to_dict()
    data["format"] = "driftline.reference/v0"
    with pytest.raises(ReferenceError, match="unsupported reference profile format"):
        ReferenceProfile.from_dict(data)
    data["format"] = "driftline.reference/v1"
    data["features"][0]["counts"] = [1, 2]
    with pytest.raises(ReferenceError, match="counts"):
        ReferenceProfile.from_dict(data)


def test_bad_reference_inputs(tmp_path):
    with pytest.raises(ReferenceError, match="no finite"):
        build_profile(
            "m", {"x": np.array([np.nan, np.nan])}, [FeatureSpec("x", FeatureKind.NUMERICAL)]
        )
    with pytest.raises(ReferenceError, match="not a column"):
        build_profile("m", {"x": np.arange(3.0)}, [FeatureSpec("y", FeatureKind.NUMERICAL)])
    with pytest.raises(ReferenceError, match="non-numeric"):
        build_profile(
            "m",
            {"x": np.array(["a", "b"], dtype=object)},
            [FeatureSpec("x", FeatureKind.NUMERICAL)],
        )
    with pytest.raises(ReferenceError, match="unsupported reference file type"):
        read_columns(tmp_path / "ref.xlsx")
    with pytest.raises(ReferenceError, match="cannot read"):
        read_columns(tmp_path / "missing.csv")


def test_integer_categories_read_as_floats_match_live_integer_codes():
    bins = CategoricalBins.from_values(np.array([5411.0, 5411.0, 1.0, 7.0], dtype=object), 2)
    assert bins.categories == ("5411", "1")
    live = np.array([5411, "5411", 5411.0, 1, "1", 7, 8], dtype=object)
    assert bins.assign(live).tolist() == [0, 0, 0, 1, 1, 2, 3]  # 7 other, 8 new
