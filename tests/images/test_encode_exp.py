"""Encoding and decoding (app. F.4) and interpolation (app. F.5) on the committed digits model."""
from __future__ import annotations

import json

import pytest
import torch

from images import DEFAULT_DIGITS_CHECKPOINT
from images.checkpoint import load_model
from images.cli import main
from images.encode_exp import _held_out, encode_target, interpolate_codes, round_trip, run_encode
from images.errors import UnknownNameError
from images.evaluate import per_image_rmse


@pytest.fixture(scope="module")
def model():
    return load_model(DEFAULT_DIGITS_CHECKPOINT)


def _ladder(model, x, method, steps, **opts):
    return [float(per_image_rmse(round_trip(model, x, method, n, **opts).x, x).mean()) for n in steps]


def test_round_trip_error_shrinks_with_the_steps(model):
    """decode(encode(x)) -> x as the steps grow (state protocol, float64 state): DDIM as a first-order
    method (error about halves per doubling), GENIE with the exact derivative much faster."""
    x, _, _ = _held_out(4, 0)
    assert x.dtype == torch.float64
    steps = (8, 16, 32)
    d = _ladder(model, x, "ddim", steps)
    g = _ladder(model, x, "genie", steps, derivative="autodiff")
    # measured here: DDIM 0.36 / 0.15 / 0.067 (ratios 2.4, 2.2), GENIE-AD 0.065 / 0.019 / 0.0031 (3.4, 6.1)
    for e in (d, g):
        assert e[0] > e[1] > e[2]
    for a, b in zip(d, d[1:]):
        assert 1.5 < a / b < 4.5, d                      # first order: 2 per doubling
    assert d[0] / d[2] < 10
    assert g[0] / g[2] > 12, g                           # second order: 16 over two doublings
    assert g[0] / g[2] > 2 * d[0] / d[2], (g, d)
    assert all(eg < ed for eg, ed in zip(g, d))


def test_interpolation_endpoints_decode_to_the_decoded_endpoints(model):
    """slerp (eq. (82)) at alpha = 0 and 1 gives back the latents, so the first and last decoded points are
    the round trips of the two inputs; the middle points are neither."""
    x, _, _ = _held_out(4, 1)
    xa, xb = x[:2], x[2:]
    dec, lat = interpolate_codes(model, xa, xb, "ddim", 6, 3)
    assert dec.shape == (2, 3, *x.shape[1:]) and lat.shape == (2, 2, *x.shape[1:])
    ra, rb = round_trip(model, xa, "ddim", 6), round_trip(model, xb, "ddim", 6)
    torch.testing.assert_close(lat[0], ra.z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dec[:, 0], ra.x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dec[:, -1], rb.x, rtol=1e-5, atol=1e-5)
    mid = dec[:, 1]
    assert float(per_image_rmse(mid, ra.x).min()) > 0.05 and float(per_image_rmse(mid, rb.x).min()) > 0.05


def test_run_encode_writes_its_files_and_keeps_the_budget(tmp_path):
    res = run_encode(tmp_path, num=4, nfes=(4,), methods=("ddim", "genie-head", "dpm-solver++2m"), quiet=True,
                     head_overhead=0.05, equal_steps=(4,))
    for f in ("results.json", "errors.csv", "encode.md", "encode_error.png", "reconstructions_nfe4.png",
              "reconstructions_nfe4_f4.png"):
        assert (tmp_path / f).is_file(), f
    assert not list(tmp_path.glob(".tmp-*"))
    saved = json.loads((tmp_path / "results.json").read_text())
    rows = saved["rows"]
    assert len(rows) == 3 * 2 and all(r["status"] == "ok" for r in rows)
    for r in rows:   # the same budget each way; F.4's decoder spends one of its evaluations on denoising
        assert r["nfe_encode"] <= 4 and r["nfe_decode"] <= 4 and r["cost_encode"] <= 4.5 and r["cost_decode"] <= 4.5
        assert r["steps_decode"] == r["steps_encode"] - (r["protocol"] == "f4")
    eq = {r["method"]: r["rmse"] for r in saved["equal_steps"]}
    assert set(eq) == {"DDIM", "GENIE (head)"}                # DPM-Solver++ is not an equal-steps row
    ddim4 = next(r for r in rows if r["method"] == "DDIM" and r["protocol"] == "state")
    assert ddim4["steps_encode"] == 4 and eq["DDIM"] == pytest.approx(ddim4["rmse"], rel=1e-9)
    assert saved["target"]["equal_steps_ratio_to_ddim"]["GENIE (head) at 4 steps"] == pytest.approx(eq["GENIE (head)"] / eq["DDIM"])
    assert res["f4_floor"]["rmse"] < min(r["rmse"] for r in rows if r["protocol"] == "f4")
    from PIL import Image

    img = Image.open(tmp_path / "reconstructions_nfe4.png")
    assert saved["grid_rows"]["state"] == ["input", "DDIM", "GENIE (head)", "DPM-Solver++(2M)"]
    assert img.height > 3.5 * img.width / 4                  # four rows of four images
    # the round trip of the inputs the json names
    x, _, idx = _held_out(4, 0)
    assert saved["held_out_indices"] == idx.tolist()


def _row(protocol, method, nfe, rmse, feat=1.0, status="ok"):
    return {"protocol": protocol, "method": method, "nfe_budget": nfe, "rmse": rmse, "feat_l2": feat, "status": status}


def test_encode_target_compares_genie_head_with_ddim_at_nfe10_state_protocol():
    rows = [_row("state", "DDIM", 10, 0.30, 8.0), _row("state", "GENIE (head)", 10, 0.12, 6.0),
            # decoys: other NFE, other protocol, other method
            _row("state", "DDIM", 5, 0.01), _row("state", "GENIE (head)", 5, 0.9),
            _row("f4", "DDIM", 10, 0.2), _row("f4", "GENIE (head)", 10, 0.3),
            _row("state", "GENIE-AD", 10, 0.03), _row("state", "DPM-Solver++(2M)", 10, 0.01)]
    t = encode_target(rows, 10)
    assert t["met"] is True and t["ratio"] == pytest.approx(0.4)
    assert t["ddim_rmse"] == 0.30 and t["genie_head_rmse"] == 0.12
    assert t["ratio_features"] == pytest.approx(0.75) and t["ratio_f4"] == pytest.approx(1.5)
    assert t["ratio_genie_ad"] == pytest.approx(0.1)
    rows[1] = _row("state", "GENIE (head)", 10, 0.16)
    assert encode_target(rows, 10)["met"] is False                      # 0.53 > 0.5
    rows[1] = _row("state", "GENIE (head)", 10, 0.15)
    assert encode_target(rows, 10)["met"] is True                       # exactly half
    rows[0] = _row("state", "DDIM", 10, None, status="n/a: budget")
    assert encode_target(rows, 10)["met"] is None


def test_unknown_method_is_a_named_error(tmp_path, capsys):
    with pytest.raises(UnknownNameError, match="rk4"):
        run_encode(tmp_path / "x", methods=("ddim", "rk4"), num=2, nfes=(4,), quiet=True)
    assert not (tmp_path / "x").exists()
    with pytest.raises(UnknownNameError, match="protocol"):
        round_trip(None, torch.zeros(1, 1, 16, 16, dtype=torch.float64), "ddim", 2, protocol="diffused")
    assert main(["encode", "--methods", "ddim,bogus", "--out", str(tmp_path / "y"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus" in err[0] and err[0].startswith("error:")
