"""What a benchmark names about its machine (CPU kind, read bandwidth) and the decode floor:
the weights one decode forward reads, over that bandwidth, next to the measured forward."""

from __future__ import annotations

import math

import torch
from torch import nn

from medrl.bench.environment import cpu_kind, matmul_rate, read_bandwidth
from medrl.bench.instrument import decode_flops_per_row, decode_weight_bytes
from medrl.bench.report import GIB, floor_table, render_report
from medrl.bench.stats import compute_floor_ms, decode_floor_ms, system_summary

AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: SomethingElse
"""
INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""


def test_the_cpu_kind_names_vendor_family_model_and_kernel_flags(tmp_path):
    (tmp_path / "amd").write_text(AMD)
    (tmp_path / "intel").write_text(INTEL)
    amd, intel = cpu_kind(tmp_path / "amd"), cpu_kind(tmp_path / "intel")
    assert (amd.vendor, amd.family, amd.model) == ("AuthenticAMD", 25, 17)  # first block only
    assert amd.flags == ("avx2", "avx512f", "avx512_bf16", "avx512_vnni")
    assert amd.slug == "amd-epyc-f25-m17"
    assert intel.slug == "intel-xeon-platinum-8481c-f6-m143-amx"
    assert "amx_bf16 yes" in intel.describe() and "amx_bf16 no" in amd.describe()
    assert amd.describe().startswith("AMD EPYC (AuthenticAMD family 25 model 17; avx2 yes")


def test_read_bandwidth_is_a_finite_positive_rate_and_leaves_the_thread_count():
    before = torch.get_num_threads()
    rate = read_bandwidth(threads=1, size_mib=8, repeats=2)
    assert math.isfinite(rate) and rate > 0
    assert torch.get_num_threads() == before


def test_matmul_rate_is_a_finite_positive_rate_and_leaves_the_thread_count():
    before = torch.get_num_threads()
    for dtype in ("float32", "bfloat16"):
        rate = matmul_rate(threads=1, dtype=dtype, size=64, repeats=2)
        assert math.isfinite(rate) and rate > 0
    assert torch.get_num_threads() == before


class Tied(nn.Module):
    """An embedding [10, 4] tied to the output head, one bias-carrying Linear [3, 4], a norm."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def test_decode_weight_bytes_counts_linear_weights_once_at_the_compute_width():
    model = Tied()
    # Linear weights: proj 3 x 4 and the tied head 10 x 4 (once); no bias, norm or lookup.
    assert decode_weight_bytes(model, "32-true") == (12 + 40) * 4
    assert decode_weight_bytes(model, "bf16-mixed") == (12 + 40) * 2
    assert decode_weight_bytes(model.to(torch.bfloat16), "32-true") == (12 + 40) * 2


def test_decode_flops_per_row_are_two_per_linear_weight_counted_once():
    # proj 3 x 4 and the tied head 10 x 4 (once): a multiply and an add per weight
    assert decode_flops_per_row(Tied()) == 2 * (12 + 40)


def decode_step(decode_s, width):
    return {
        "seconds": decode_s + 1.0,
        "measured": True,
        "phases": {"decode": decode_s},
        "counters": {"decode_width": width},
        "reported": {},
    }


def test_ms_per_decode_forward_divides_decode_time_by_the_forwards_after_prefill():
    runs = [
        {
            "steps": [decode_step(0.3, 4), decode_step(0.5, 6)],
            "peak_rss_bytes": GIB,
            "decode_weight_bytes": 2 * 10**8,
        },
    ]
    figures = system_summary(runs)
    # 0.3 s over 3 forwards = 100 ms; 0.5 s over 5 = 100 ms
    assert figures["decode_ms_per_forward"].median == 100.0
    assert figures["decode_weight_bytes"] == 2 * 10**8
    # 2e8 bytes at 1e10 bytes/s = 20 ms: the forward takes 5 floors
    assert decode_floor_ms(2 * 10**8, 1e10) == 20.0 and decode_floor_ms(None, 1e10) is None
    table = floor_table({"medrl": figures}, bandwidth=1e10)
    assert "| medrl | 100.0 | 0.19 GiB | 20.0 | 5.00x |" in table


def test_the_compute_floor_is_the_products_of_every_row_at_the_measured_rate():
    # 1e8 FLOPs per row x 16 rows at 1e11 FLOP/s = 16 ms
    assert compute_floor_ms(1e8, 16, 1e11) == 16.0
    assert compute_floor_ms(None, 16, 1e11) is None and compute_floor_ms(1e8, 16, None) is None
    steps = [decode_step(0.3, 4), decode_step(0.5, 6)]
    for step in steps:
        step["counters"]["rows"] = 16.0
    runs = [
        {
            "steps": steps,
            "peak_rss_bytes": GIB,
            "decode_weight_bytes": 2 * 10**8,
            "decode_flops_per_row": 10**8,
        }
    ]
    figures = system_summary(runs)
    assert figures["decode_flops_per_row"] == 10**8
    table = floor_table({"medrl": figures}, bandwidth=1e10, matmul_rate=1e11)
    # 100 ms per forward: 5 memory floors of 20 ms, 6.25 compute floors of 16 ms
    assert "| medrl | 100.0 | 0.19 GiB | 20.0 | 5.00x | 16.0 (16 rows) | 6.25x |" in table


def test_the_report_header_names_the_cpu_and_the_bandwidth():
    environment = {
        "device": "cpu",
        "device_name": "AMD EPYC (2 logical cores)",
        "threads": 2,
        "versions": {},
        "cpu": {"description": "AMD EPYC (AuthenticAMD family 25 model 17; ...)", "slug": "amd-x"},
        "read_bandwidth_bytes_per_s": 2.5e10,
        "matmul_flops_per_s": 1.5e11,
        "matmul_dtype": "float32",
    }
    text = render_report({"environment": environment, "settings": {}, "sections": {}})
    assert "- dense matrix product rate: 150 GFLOP/s (float32, 2 threads" in text
    assert "- cpu: AMD EPYC (AuthenticAMD family 25 model 17; ...); kind `amd-x`" in text
    assert "- memory read bandwidth: 25.0 GB/s (2 threads" in text


def test_the_report_lists_what_the_engine_chose_by_measurement_once():
    linear = "cpu_linear=auto, sampling (16 rows): onednn (torch/MKL 70.00 ms, oneDNN 34.00 ms ...)"
    compiled = "decode=compiled: 16 rows x 320 positions, 63 steps, compiled in 41.0 s"
    runs = [
        {"steps": [decode_step(0.3, 4)], "peak_rss_bytes": GIB, "engine_decisions": [linear]},
        {
            "steps": [decode_step(0.3, 4)],
            "peak_rss_bytes": GIB,
            "engine_decisions": [linear, compiled],
        },
    ]
    figures = system_summary(runs)
    assert figures["engine_decisions"] == [linear, compiled]
    environment = {"device": "cpu", "device_name": "cpu", "threads": 2, "versions": {}}
    section = {"systems": {"medrl": {"summary": figures}}}
    text = render_report(
        {"environment": environment, "settings": {}, "sections": {"grpo": section}}
    )
    assert f"medrl's engine, chosen by measurement:\n\n- {linear}\n- {compiled}\n" in text
