"""Tests of the accelerator catalog (hardware/*.yaml and llmsim.hardware.catalog).

Figures are checked against the vendor datasheets by hand (dense = sparse / 2), so an edit that
puts a sparse figure, a wrong unit or a bidirectional bandwidth into a card fails here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from llmsim.errors import InputError
from llmsim.hardware.catalog import LINK_KINDS, hardware_dir, list_hardware, load_hardware
from llmsim.hardware.spec import Efficiency, HardwareSpec

REPO = Path(__file__).resolve().parents[1]

REQUIRED = ["a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "gh200", "b200", "l4",
            "l40s", "a10g", "a40", "mi300x", "gaudi2", "tpu-v5e", "rtx-4090"]

# Published capacity range in GB (1e9 bytes) per card: marketed figure, or the span between the
# usable and the announced capacity where they differ (B200: 180 usable on HGX, 192 announced).
PUBLISHED_MEMORY_GB = {
    "a100-40gb": (40, 40), "a100-80gb": (80, 80), "h100-sxm": (80, 80), "h100-pcie": (80, 80),
    "h200": (141, 141), "gh200": (96, 144), "b200": (180, 192), "l4": (24, 24),
    "l40s": (48, 48), "a10g": (24, 24), "a40": (48, 48), "mi300x": (192, 192),
    "gaudi2": (96, 96), "tpu-v5e": (16, 16), "rtx-4090": (24, 24),
}

# Hand table from the datasheets: (dense bf16 TFLOP/s, memory bandwidth GB/s).
# Datasheet sparse figures halved by hand: H100 SXM 1979/2, H100 PCIe 1513/2, L4 242/2,
# H200/GH200 as H100 SXM, B200 36 PF per 8 GPUs sparse -> 36/8/2 = 2.25 PF.
DENSE_BF16_TFLOPS_AND_BW_GBPS = {
    "a100-40gb": (312.0, 1555), "a100-80gb": (312.0, 2039), "h100-sxm": (989.4, 3350),
    "h100-pcie": (756.5, 2000), "h200": (989.4, 4800), "gh200": (989.4, 4000),
    "b200": (2250.0, 8000), "l4": (121.0, 300), "l40s": (362.05, 864), "a10g": (125.0, 600),
    "a40": (149.7, 696), "mi300x": (1307.4, 5300), "gaudi2": (432.0, 2450),
    "tpu-v5e": (197.0, 819), "rtx-4090": (165.2, 1008),
}


def numeric_paths(spec: HardwareSpec) -> dict[str, float]:
    """Every numeric figure of a spec (outside efficiency) by its field path."""
    out = {f"peak_flops_per_s.{d}": v for d, v in spec.peak_flops_per_s.items()}
    for k in ("memory_bytes", "memory_bandwidth_bytes_per_s", "gpus_per_node", "power_w",
              "price_on_demand_usd_per_h", "price_spot_usd_per_h"):
        out[k] = getattr(spec, k)
    for link in ("intra_node", "host_link", "inter_node"):
        ls = getattr(spec, link)
        out[f"{link}.bandwidth_bytes_per_s"] = ls.bandwidth_bytes_per_s
        out[f"{link}.latency_s"] = ls.latency_s
    return out


@pytest.fixture(scope="module")
def cards() -> dict[str, HardwareSpec]:
    return {n: load_hardware(n) for n in list_hardware()}


# ----------------------------------------------------------------------------- the catalog

def test_catalog_has_every_required_card(cards):
    assert set(REQUIRED) <= set(cards), sorted(set(REQUIRED) - set(cards))


def test_card_names_match_file_names(cards):
    for name, spec in cards.items():
        assert spec.name == name
        assert (hardware_dir() / f"{name}.yaml").is_file()


def test_every_numeric_field_has_provenance(cards):
    for name, spec in cards.items():
        for path in numeric_paths(spec):
            assert spec.provenance.get(path, "").strip(), f"{name}: {path} has no provenance"


def test_peak_provenance_says_dense(cards):
    for name, spec in cards.items():
        for dtype in spec.peak_flops_per_s:
            text = spec.provenance[f"peak_flops_per_s.{dtype}"]
            assert "dense" in text, f"{name}: peak_flops_per_s.{dtype} must say 'dense'"


def test_units_are_plausible(cards):
    """Catches unit slips (TFLOP/s written as FLOP/s, Gb/s for GB/s, ms for s)."""
    for name, s in cards.items():
        for d, v in s.peak_flops_per_s.items():
            assert 1e13 <= v <= 2e16, (name, d, v)
        assert 1e10 <= s.memory_bytes <= 1e12, name
        assert 1e11 <= s.memory_bandwidth_bytes_per_s <= 2e13, name
        for link in (s.intra_node, s.host_link, s.inter_node):
            assert link.kind in LINK_KINDS
            assert 1e8 <= link.bandwidth_bytes_per_s <= 2e12, (name, link)
            assert 1e-7 <= link.latency_s <= 1e-4, (name, link)
        assert 50 <= s.power_w <= 1500, name
        assert 0.1 <= s.price_spot_usd_per_h <= s.price_on_demand_usd_per_h <= 50, name
        assert s.price_note.strip()
        assert 1 <= s.gpus_per_node <= 8


def test_efficiency_says_where_it_comes_from(cards):
    """Only the A100-80GB card is fitted (llmsim calibrate on ../shared/calibration); every
    other card says what it carried or assumed."""
    for name, s in cards.items():
        assert isinstance(s.efficiency, Efficiency)
        src = s.efficiency.source.lower()
        if name == "a100-80gb":
            assert "fitted" in src and "calibrat" in src, name
        else:
            assert "assumed" in src or "carried" in src, name


@pytest.mark.parametrize("name", REQUIRED)
def test_memory_within_published(cards, name):
    lo, hi = PUBLISHED_MEMORY_GB[name]
    assert lo * 1e9 <= cards[name].memory_bytes <= hi * 1e9


@pytest.mark.parametrize("name", REQUIRED)
def test_dense_bf16_and_bandwidth_match_datasheet(cards, name):
    tflops, gbps = DENSE_BF16_TFLOPS_AND_BW_GBPS[name]
    s = cards[name]
    assert s.peak_for("bf16") == pytest.approx(tflops * 1e12, rel=1e-3)
    assert s.memory_bandwidth_bytes_per_s == pytest.approx(gbps * 1e9, rel=1e-9)


# ----------------------------------------------------------------------------- sanity by hand

def test_h100_sxm_figures(cards):
    h = cards["h100-sxm"]
    assert h.peak_flops_per_s["bf16"] == pytest.approx(989e12, rel=1e-3)   # not 1979 (sparse)
    assert h.peak_flops_per_s["fp8"] == pytest.approx(2 * h.peak_flops_per_s["bf16"], rel=1e-3)
    assert h.memory_bandwidth_bytes_per_s == pytest.approx(3.35e12)
    assert h.intra_node.kind == "nvlink"
    assert h.intra_node.bandwidth_bytes_per_s == pytest.approx(900e9 / 2)  # bidirectional / 2
    assert h.host_link.bandwidth_bytes_per_s == pytest.approx(128e9 / 2)   # PCIe Gen5 x16
    assert h.inter_node.bandwidth_bytes_per_s == pytest.approx(400e9 / 8)  # 400 Gb/s per GPU
    assert h.memory_bytes == 80e9
    assert "int4" not in h.peak_flops_per_s                                 # Hopper has none
    assert h.peak_for("int4") == h.peak_flops_per_s["int8"]


def test_a100_80gb_figures(cards):
    a = cards["a100-80gb"]
    assert a.memory_bandwidth_bytes_per_s == pytest.approx(2.039e12)
    assert a.peak_flops_per_s["bf16"] == pytest.approx(312e12)
    assert a.peak_flops_per_s["int8"] == pytest.approx(2 * 312e12)
    assert "fp8" not in a.peak_flops_per_s                                  # Ampere has none
    assert a.peak_for("fp8") == a.peak_flops_per_s["int8"]
    assert a.intra_node.bandwidth_bytes_per_s == pytest.approx(600e9 / 2)
    assert a.host_link.bandwidth_bytes_per_s == pytest.approx(64e9 / 2)     # PCIe Gen4 x16


@pytest.mark.parametrize("name", ["h100-sxm", "h100-pcie", "h200", "gh200", "b200", "l4",
                                  "mi300x", "gaudi2"])
def test_fp8_is_twice_bf16(cards, name):
    p = cards[name].peak_flops_per_s
    # rel 5e-3: datasheets round (L4: bf16 242 sparse -> 121, fp8 485 sparse -> 242.5)
    assert p["fp8"] == pytest.approx(2 * p["bf16"], rel=5e-3)


def test_b200_fp4_is_twice_fp8(cards):
    p = cards["b200"].peak_flops_per_s
    assert p["fp4"] == pytest.approx(2 * p["fp8"]) == pytest.approx(9e15)


def test_h200_and_gh200_share_the_h100_sxm_compute(cards):
    for name in ("h200", "gh200"):
        assert cards[name].peak_flops_per_s == cards["h100-sxm"].peak_flops_per_s


def test_rtx_4090_uses_fp32_accumulate_rate(cards):
    p = cards["rtx-4090"].peak_flops_per_s
    assert p["fp16"] == pytest.approx(165.2e12)   # not the 330.3 FP16-accumulate rate
    assert p["int8"] == pytest.approx(4 * p["fp16"], rel=1e-3)


def test_shared_nic_divided_by_gpus(cards):
    assert cards["l4"].inter_node.bandwidth_bytes_per_s == pytest.approx(100e9 / 8 / 8)
    assert cards["l40s"].inter_node.bandwidth_bytes_per_s == pytest.approx(400e9 / 8 / 8)


def test_peak_for_falls_back_to_wider_dtype(cards):
    g = cards["gaudi2"]
    assert g.peak_for("fp16") == g.peak_flops_per_s["bf16"]
    assert g.peak_for("int8") == g.peak_flops_per_s["fp8"]


# ----------------------------------------------------------------------------- names

@pytest.mark.parametrize("alias,name", [
    ("H100", "h100-sxm"), ("h100-SXM5", "h100-sxm"), ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("A100", "a100-80gb"), ("A100-80GB", "a100-80gb"), ("a100_40gb", "a100-40gb"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("rtx 4090", "rtx-4090"), ("4090", "rtx-4090"),
    ("TPU v5e", "tpu-v5e"), ("MI300X", "mi300x"), ("Gaudi2", "gaudi2"), ("  L40S ", "l40s"),
])
def test_aliases_case_insensitive(alias, name):
    assert load_hardware(alias).name == name


def test_aliases_unique_across_cards(cards):
    seen: dict[str, str] = {}
    norm = lambda s: re.sub(r"[\s_]+", "-", s.strip().lower())  # noqa: E731
    for name, s in cards.items():
        for a in (name, *s.aliases):
            owner = seen.setdefault(norm(a), name)
            assert owner == name, f"alias {a!r} names both {owner} and {name}"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(InputError) as ei:
        load_hardware("h100-sxm4")
    msg = str(ei.value)
    assert "Did you mean" in msg and "'h100-sxm'" in msg
    assert str(hardware_dir()) in msg            # says where the catalog is
    assert "a100-80gb" in msg                    # lists what exists


def test_unknown_name_without_close_match():
    with pytest.raises(InputError) as ei:
        load_hardware("quantum-abacus")
    assert "Did you mean" not in str(ei.value)
    assert "Known:" in str(ei.value)


def test_missing_path_is_input_error(tmp_path):
    with pytest.raises(InputError) as ei:
        load_hardware(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(ei.value)


def test_repeated_lookups_are_cached():
    assert load_hardware("h100") is load_hardware("H100-SXM") is load_hardware("h100-sxm")


# ----------------------------------------------------------------------------- user cards

def card_text() -> str:
    return (hardware_dir() / "h100-sxm.yaml").read_text(encoding="utf-8")


def write_card(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def problems_of(path) -> list:
    with pytest.raises(InputError) as ei:
        load_hardware(path)
    return ei.value.problems


def test_card_by_path_equals_catalog_card(tmp_path):
    p = write_card(tmp_path, card_text())
    mine = load_hardware(str(p))
    assert mine == load_hardware("h100-sxm")
    assert load_hardware(p) is mine               # a Path works too, and is cached


def test_edited_card_is_reloaded(tmp_path):
    p = write_card(tmp_path, card_text())
    assert load_hardware(p).power_w == 700.0
    p.write_text(card_text().replace("power_w: 700.0", "power_w: 650.0"), encoding="utf-8")
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert load_hardware(p).power_w == 650.0


def test_yaml12_exponent_floats_are_numbers(tmp_path):
    text = card_text().replace("memory_bytes: 80.0e9", "memory_bytes: 80e9")
    assert load_hardware(write_card(tmp_path, text)).memory_bytes == 80e9


def test_typo_key_is_rejected_naming_the_key(tmp_path):
    text = card_text().replace("memory_bandwidth_bytes_per_s: 3.35e12",
                               "memory_bandwith_bytes_per_s: 3.35e12")
    p = write_card(tmp_path, text)
    probs = problems_of(p)
    assert len(probs) == 1                        # no extra "missing" noise for the typo
    (prob,) = probs
    assert prob.key == "memory_bandwith_bytes_per_s"
    assert prob.where == str(p)
    lines = text.splitlines()
    assert lines[prob.line - 1].startswith("memory_bandwith_bytes_per_s:")
    assert "memory_bandwidth_bytes_per_s" in prob.message          # the suggestion


def test_typo_in_nested_key(tmp_path):
    text = card_text().replace("  latency_s: 1.0e-6", "  latncy_s: 1.0e-6", 1)
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "intra_node.latncy_s" and "latency_s" in prob.message


def test_unknown_dtype_rejected(tmp_path):
    text = card_text().replace("  fp8: 1978.9e12", "  fp9: 1978.9e12")
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "peak_flops_per_s.fp9" and "fp8" in prob.message


def test_missing_field_rejected(tmp_path):
    text = card_text().replace("gpus_per_node: 8\n", "")
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "gpus_per_node" and "missing" in prob.message


@pytest.mark.parametrize("old,new,key", [
    ("power_w: 700.0", "power_w: -700.0", "power_w"),
    ("memory_bytes: 80.0e9", "memory_bytes: 0", "memory_bytes"),
    ("price_spot_usd_per_h: 3.00", "price_spot_usd_per_h: -1", "price_spot_usd_per_h"),
    ("  gemm_eff_max: 0.7428", "  gemm_eff_max: 1.5", "efficiency.gemm_eff_max"),
    ("power_w: 700.0", "power_w: .nan", "power_w"),
])
def test_out_of_range_numbers_rejected(tmp_path, old, new, key):
    (prob,) = problems_of(write_card(tmp_path, card_text().replace(old, new)))
    assert prob.key == key


def test_number_with_unit_text_rejected(tmp_path):
    text = card_text().replace("memory_bandwidth_bytes_per_s: 3.35e12",
                               "memory_bandwidth_bytes_per_s: 3.35 TB/s")
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "memory_bandwidth_bytes_per_s" and "number" in prob.message


def test_unknown_link_kind_rejected(tmp_path):
    text = card_text().replace("kind: nvlink", "kind: nvlnk")
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "intra_node.kind" and "nvlink" in prob.message


def test_numeric_field_without_provenance_rejected(tmp_path):
    text = re.sub(r"\n  power_w: [^\n]*", "", card_text())
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "power_w" and "provenance" in prob.message


def test_provenance_for_unknown_field_rejected(tmp_path):
    text = card_text().replace("\n  power_w: ", "\n  power_w: x\n  powr_w: ")
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "provenance.powr_w" and "power_w" in prob.message


def test_duplicate_key_rejected(tmp_path):
    text = card_text().replace("gpus_per_node: 8\n", "gpus_per_node: 8\ngpus_per_node: 4\n")
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "gpus_per_node" and "duplicate" in prob.message


def test_efficiency_source_required_and_defaults_fill_in(tmp_path):
    text = re.sub(r"efficiency:\n(  .*\n|    .*\n)+", "efficiency:\n  mem_eff: 0.7\n",
                  card_text())
    (prob,) = problems_of(write_card(tmp_path, text))
    assert prob.key == "efficiency.source"
    text = text.replace("  mem_eff: 0.7\n", "  mem_eff: 0.7\n  source: my fit\n")
    spec = load_hardware(write_card(tmp_path, text, "ok.yaml"))
    assert spec.efficiency.mem_eff == 0.7 and spec.efficiency.source == "my fit"
    assert spec.efficiency.gemm_eff_max == Efficiency().gemm_eff_max


def test_not_a_mapping_and_bad_yaml(tmp_path):
    (prob,) = problems_of(write_card(tmp_path, "- a\n- b\n"))
    assert "mapping" in prob.message
    (prob,) = problems_of(write_card(tmp_path, "name: [a\n", "bad.yaml"))
    assert prob.line is not None and "YAML" in prob.message


# ----------------------------------------------------------------------------- packaging

def test_cards_dir_is_the_top_level_hardware_dir():
    top = REPO / "hardware"
    if not top.is_dir() or not (REPO / "llmsim" / "hardware" / "cards").exists():
        pytest.skip("not a source checkout")
    assert hardware_dir().resolve() == top.resolve()


def test_readme_lists_every_card_with_its_bf16_peak(cards):
    readme = REPO / "hardware" / "README.md"
    if not readme.is_file():
        pytest.skip("not a source checkout")
    text = readme.read_text(encoding="utf-8")
    for name, s in cards.items():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert row is not None, f"hardware/README.md has no row for {name}"
        assert f"{s.peak_flops_per_s['bf16'] / 1e12:,.1f}" in row, name


def test_package_data_ships_the_cards():
    pyproject = REPO / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout")
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    assert "hardware/cards/*.yaml" in data["tool"]["setuptools"]["package-data"]["llmsim"]


@pytest.mark.slow
def test_wheel_contains_the_cards(tmp_path):
    """The symlink llmsim/hardware/cards -> hardware/ must be followed when building a wheel."""
    if not (REPO / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                          str(tmp_path), str(REPO)], capture_output=True, text=True)
    if run.returncode != 0:
        out = run.stdout + run.stderr
        if re.search(r"No matching distribution|Could not find a version|connection|"
                     r"Temporary failure in name resolution", out, re.I):
            pytest.skip("cannot fetch the build backend (offline): " + out[-300:])
        pytest.fail("pip wheel failed:\n" + out[-2000:])
    (whl,) = tmp_path.glob("llmsim-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for card in REQUIRED:
        assert f"llmsim/hardware/cards/{card}.yaml" in names
