"""Pure rendering: formatting, columns, sorting, filtering, widths and the table model."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tui_data import HOSTS, fail, fill, gpus_for, target_of

from sovereign_tui.clock import FakeClock
from sovereign_tui.model import Gpu, Snapshot, SourceHealth
from sovereign_tui.render import (
    NA,
    SOURCE_TABLE,
    down_banner,
    fmt_age,
    fmt_bytes,
    fmt_duration,
    fmt_interval,
    fmt_mem_pair,
    fmt_mib,
    fmt_pct,
    fmt_power_pair,
    fmt_temp,
    one_line,
    source_detail,
    source_state,
    status_text,
)
from sovereign_tui.render_gpus import GPU_TABLE, gpu_busy, gpu_detail, gpu_erroring, gpu_model
from sovereign_tui.render_overview import overview
from sovereign_tui.store import Store
from sovereign_tui.table import (
    Column,
    RowState,
    TableModel,
    TableSpec,
    carry_over,
    filter_rows,
    fit_widths,
    natural_key,
    natural_widths,
    sample_rows,
    search_text,
    sort_rows,
)


def all_gpus(tick: int = 0) -> tuple[Gpu, ...]:
    return tuple(g for spec in HOSTS for g in gpus_for(spec, 0.0, tick, anomalies=True))


# --- formatting -------------------------------------------------------------------------------


def test_unknown_values_show_as_na() -> None:
    blank = Gpu(source="s", observed_at=0.0, host="h", index=0, uuid="u")
    cells = {c.id: c.cell(blank, 0.0) for c in GPU_TABLE.columns}
    for column in ("name", "util", "memory", "temp", "power", "ecc"):
        assert cells[column] == NA, column
    assert cells["mig"] == "-"
    assert cells["holder"] == "-"
    assert cells["xid"] == "-"
    assert cells["idle"] == ""
    for fmt in (fmt_pct, fmt_temp, fmt_mib, fmt_bytes, fmt_age, fmt_duration):
        assert fmt(None) == NA


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (90061, "1d01h"),
    ],
)
def test_age(seconds: float, text: str) -> None:
    assert fmt_age(seconds) == text


def test_sizes_and_pairs() -> None:
    assert fmt_mib(512) == "512M"
    assert fmt_mib(81559) == f"{81559 / 1024:.1f}G"
    assert fmt_mem_pair(40960, 81920) == "40.0/80.0G"
    assert fmt_mem_pair(300, 512) == "300/512M"
    assert fmt_mem_pair(None, 81920) == f"{NA}/80.0G"
    assert fmt_mem_pair(None, None) == NA
    assert fmt_power_pair(350.4, 700) == "350/700W"
    assert fmt_power_pair(None, 700) == f"{NA}/700W"
    assert fmt_power_pair(70.2, None) == "70W"  # dcgm-exporter gives no limit
    assert fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(3 * 1024**4) == "3.0 TiB"
    assert fmt_bytes(12) == "12 B"


def test_durations_and_intervals() -> None:
    assert fmt_duration(0.25) == "250ms"
    assert fmt_duration(1.5) == "1.5s"
    assert fmt_duration(125) == "2m05s"
    assert fmt_interval(10) == "10s"
    assert fmt_interval(2.5) == "2.5s"
    assert fmt_interval(120) == "2m"
    assert fmt_interval(90) == "1m30s"


def test_free_text_is_one_line() -> None:
    assert one_line("refused\r\n  at line 2\tthen\x1b[31m") == "refused at line 2 then [31m"
    assert gpu_model("NVIDIA H100 80GB HBM3") == "H100 80GB HBM3"
    assert gpu_model("NVIDIA") == "NVIDIA"


def test_gpu_predicates_follow_the_data() -> None:
    gpus = all_gpus()
    for g in gpus:
        assert gpu_busy(g) == bool(g.processes or g.util_gpu_pct or g.holder)
        assert gpu_erroring(g) == bool(g.ecc_uncorrected or g.xid_last)
        assert GPU_TABLE.row_state(g) is (RowState.ALERT if gpu_erroring(g) else RowState.NORMAL)
    assert any(g.xid_last for g in gpus) and any(g.ecc_uncorrected for g in gpus)
    stale = msgspec.structs.replace(gpus[0], stale=True, ecc_uncorrected=3)
    assert GPU_TABLE.row_state(stale) is RowState.STALE
    clean = msgspec.structs.replace(gpus[0], xid_last=None, ecc_uncorrected=0)
    assert not gpu_erroring(clean)
    assert gpu_erroring(msgspec.structs.replace(clean, xid_last=79))
    assert gpu_erroring(msgspec.structs.replace(clean, remapped_rows_uncorrectable=2))
    xid = next(c for c in GPU_TABLE.columns if c.id == "xid")
    assert xid.cell(msgspec.structs.replace(clean, xid_last=79), 0.0) == "79"


def test_gpu_detail_names_what_the_cells_cut() -> None:
    g = next(g for g in all_gpus() if g.holder and g.processes)
    text = gpu_detail(g)
    assert g.name is not None
    assert g.name in text
    assert g.uuid in text
    assert g.holder is not None
    assert g.holder in text
    assert str(g.processes[0].pid) in text
    assert "STALE" in gpu_detail(msgspec.structs.replace(g, stale=True))


def test_source_state_and_detail() -> None:
    h = SourceHealth(
        target="t:1", source="t", endpoint="e:1", interval_s=10, up=False, last_error="no\nroute"
    )
    assert source_state(h) == "DOWN"
    assert source_state(msgspec.structs.replace(h, up=None)) == "pending"
    assert source_state(msgspec.structs.replace(h, up=True)) == "up"
    assert source_detail(h, 0.0).startswith("t:1 DOWN: no route\n")
    assert "last ok never" in source_detail(h, 0.0)
    assert SOURCE_TABLE.row_state(h) is RowState.ALERT


# --- overview, status, banners ------------------------------------------------------------------


async def test_overview_counts_match_the_data() -> None:
    clock = FakeClock()
    store = Store(clock)
    fill(store, clock, anomalies=True)
    fail(store, clock, HOSTS[0].name, "refused")
    snap = store.snapshot()
    o = overview(snap)
    gpus = all_gpus()
    assert o.gpus == sum(h.gpus for h in HOSTS) == len(gpus)
    assert o.gpus_busy == sum(1 for g in gpus if gpu_busy(g))
    assert o.gpus_erroring == sum(1 for g in gpus if gpu_erroring(g))
    assert o.gpus_stale == HOSTS[0].gpus
    assert (o.sources, o.sources_up, o.sources_down, o.sources_pending) == (len(HOSTS), len(HOSTS) - 1, 1, 0)
    assert o.hosts == len({h.name for h in HOSTS})


async def test_status_text_shows_generation_and_age() -> None:
    clock = FakeClock()
    store = Store(clock)
    assert "waiting" in status_text(store.snapshot(), clock.time())
    fill(store, clock)
    snap = store.snapshot()
    await clock.advance(75)
    assert status_text(snap, clock.time()) == f"gen {snap.generation} · updated {fmt_age(75)} ago"


def test_down_banner_names_targets_and_errors() -> None:
    sources = (
        *tuple(
            SourceHealth(
                target=f"nvml:h{i}",
                source="nvml",
                endpoint="local",
                interval_s=5,
                up=False,
                last_error=f"e{i}",
            )
            for i in range(5)
        ),
        SourceHealth(target="host:x", source="host", endpoint="local", interval_s=5, up=False),
    )
    snap = Snapshot(generation=1, taken_at=0.0, sources=sources)
    assert down_banner(snap, {"nvml"}, limit=10) == [f"nvml:h{i} down: e{i}" for i in range(5)]
    assert down_banner(snap, (), feeding={"host:x"}) == ["host:x down: no answer"]
    short = down_banner(snap, {"nvml"}, limit=3)
    assert short[:2] == ["nvml:h0 down: e0", "nvml:h1 down: e1"]
    assert "3 more" in short[2]
    assert down_banner(snap, {"dcgm"}) == []


# --- sorting, filtering, widths ------------------------------------------------------------------


def test_natural_key_orders_numbers_as_numbers() -> None:
    names = [f"gpu-{n}" for n in (10, 2, 1, 33, 3)]
    assert sorted(names, key=natural_key) == [f"gpu-{n}" for n in sorted((10, 2, 1, 33, 3))]
    assert natural_key("Node-A") == natural_key("node-a")


SPEC: TableSpec[tuple[str, float | None]] = TableSpec(
    name="Things",
    columns=(
        Column("name", "Name", lambda r, _: r[0], 10, 4),
        Column(
            "value", "Value", lambda r, _: NA if r[1] is None else f"{r[1]:g}", 6, sort_key=lambda r: r[1]
        ),
    ),
    row_key=lambda r: r[0],
)


@given(st.lists(st.tuples(st.text(max_size=5), st.none() | st.floats(allow_nan=False)), max_size=40))
def test_sort_puts_unknown_last_in_both_directions(rows: list[tuple[str, float | None]]) -> None:
    column = SPEC.columns[1]
    for reverse in (False, True):
        out = sort_rows(rows, column, reverse)
        known = [r[1] for r in out if r[1] is not None]
        assert known == sorted(known, reverse=reverse)
        assert [r for r in out if r[1] is None] == [r for r in rows if r[1] is None]  # last, stable
        assert out[len(known) :] == [r for r in rows if r[1] is None]


def test_filter_matches_any_cell_case_insensitively_not_across_cells() -> None:
    rows = [("Alpha", 1.0), ("beta", 22.0), ("gamma", None)]
    text = lambda r: search_text(SPEC, r)  # noqa: E731
    assert filter_rows(rows, "ALP", text) == [rows[0]]
    assert filter_rows(rows, "22", text) == [rows[1]]
    assert filter_rows(rows, "n/a", text) == [rows[2]]
    assert filter_rows(rows, "a1", text) == []  # "Alpha" + "1" are two cells
    assert filter_rows(rows, "  ", text) == rows


def test_fit_widths() -> None:
    cols = GPU_TABLE.columns
    preferred = [c.width for c in cols]
    roomy = sum(preferred) + len(cols) + 10
    assert fit_widths(cols, preferred, roomy) == preferred
    narrow = fit_widths(cols, preferred, 76, gap=1, fixed=3)
    shown = [w for w in narrow if w]
    assert 3 + sum(shown) + len(shown) - 1 <= 76
    for c, w in zip(cols, narrow, strict=True):
        assert w >= (c.min_width or c.width) or (w == 0 and c.optional)
    # when even the floors do not fit, nothing goes below its floor (the table scrolls sideways)
    tiny = fit_widths(cols, preferred, 20)
    assert tiny == [0 if c.optional else c.min_width or c.width for c in cols]


def test_fit_widths_hides_optional_columns_first() -> None:
    cols = SOURCE_TABLE.columns
    preferred = [min(c.width, 20) for c in cols]
    widths = fit_widths(cols, preferred, 76, fixed=3)
    hidden = {c.id for c, w in zip(cols, widths, strict=True) if w == 0}
    assert hidden
    assert all(c.optional for c in cols if c.id in hidden)
    full = sum(preferred) + len(cols) + 3
    assert 0 not in fit_widths(cols, preferred, full)


def test_natural_widths_fit_the_content() -> None:
    gpus = all_gpus()
    widths = natural_widths(GPU_TABLE, gpus)
    for c, w in zip(GPU_TABLE.columns, widths, strict=True):
        if c.min_width:
            widest = max(len(c.cell(g, 0.0)) for g in gpus)
            assert w == min(c.width, max(widest, len(c.label) + 1))
        else:
            assert w == max(c.width, len(c.label) + 1)  # the sort arrow fits beside the label
    big = list(range(10_000))
    sample = sample_rows(big, 100)
    assert len(sample) <= 100
    assert sample[0] == 0
    assert sample[-1] >= 9_900


# --- carrying work over between snapshots ---------------------------------------------------------


@given(st.lists(st.sampled_from(["keep", "replace", "insert", "delete"]), max_size=60), st.integers(0, 2**32))
def test_carry_over_equals_recomputing(edits: list[str], seed: int) -> None:
    rng = random.Random(seed)
    old = [object() for _ in range(50)]
    new = list(old)
    for edit in edits:
        i = rng.randrange(len(new) + 1)
        if edit == "replace" and i < len(new):
            new[i] = object()
        elif edit == "insert":
            new.insert(i, object())
        elif edit == "delete" and i < len(new):
            del new[i]
    computed: list[object] = []

    def compute(row: object) -> int:
        computed.append(row)
        return id(row)

    assert carry_over(old, [id(r) for r in old], new, compute) == [id(r) for r in new]
    old_ids = {id(r) for r in old}
    assert {id(r) for r in new if id(r) not in old_ids} <= {id(r) for r in computed}


def test_carry_over_computes_only_what_changed() -> None:
    old = [object() for _ in range(10_000)]
    calls: list[object] = []

    def compute(row: object) -> int:
        calls.append(row)
        return id(row)

    values = [id(r) for r in old]
    replaced = list(old)
    replaced[10:18] = [object() for _ in range(8)]
    carry_over(old, values, replaced, compute)
    assert calls == replaced[10:18]
    calls.clear()
    shifted = [object(), *old]  # one row inserted at the top moves every other row
    assert carry_over(old, values, shifted, compute) == [id(r) for r in shifted]
    assert len(calls) < 100  # found again by identity, not recomputed


# --- the table model ------------------------------------------------------------------------------


def test_model_counts_sorts_filters_and_keeps_the_cursor() -> None:
    gpus = all_gpus()
    model = TableModel(GPU_TABLE)
    model.set_rows(gpus)
    assert model.title() == f"GPUs {len(gpus)} of {len(gpus)}"
    host = HOSTS[2].name
    model.set_filter(host)
    assert [g.host for g in model.view] == [host] * HOSTS[2].gpus
    assert model.title() == f"GPUs {HOSTS[2].gpus} of {len(gpus)}"
    model.set_filter("")
    model.sort_by(GPU_TABLE.index_of("util"), reverse=True)
    utils = [g.util_gpu_pct or 0.0 for g in model.view]
    assert all(g.util_gpu_pct is not None for g in gpus)
    assert utils == sorted(utils, reverse=True)
    assert "sort: Util ▼" in model.subtitle()

    model.cursor_to(5)
    key = model.cursor_key
    # the next poll changes every value: the cursor follows the row, wherever it sorts now
    model.set_rows(all_gpus(tick=1))
    assert model.cursor_key == key
    assert model.view[model.cursor] is not gpus[5]


def test_model_counts_stale_rows() -> None:
    gpus = all_gpus()
    stale = tuple(msgspec.structs.replace(g, stale=True) if g.host == HOSTS[0].name else g for g in gpus)
    model = TableModel(GPU_TABLE)
    model.set_rows(stale)
    assert model.stale == HOSTS[0].gpus
    assert f"{HOSTS[0].gpus} stale (~)" in model.title()
    assert model.set_rows(stale) is False  # the same rows: nothing to do


def test_model_filter_keeps_working_across_updates() -> None:
    model = TableModel(GPU_TABLE)
    model.set_rows(all_gpus())
    model.set_filter(target_of(HOSTS[1].name).split(":")[1])
    before = list(model.view)
    model.set_rows(all_gpus(tick=2))
    assert [g.key for g in model.view] == [g.key for g in before]


def test_many_rows() -> None:
    from tui_data import HostSpec

    hosts = [HostSpec(f"node-{i:05d}", "NVIDIA H100 80GB HBM3", 81559, 700, 8) for i in range(12_500)]
    gpus = tuple(g for h in hosts for g in gpus_for(h, 0.0))
    model = TableModel(GPU_TABLE)
    model.set_rows(gpus)
    model.sort_by(GPU_TABLE.index_of("temp"))
    temps = [g.temperature_c or 0.0 for g in model.view]
    assert all(g.temperature_c is not None for g in gpus)
    assert temps == sorted(temps)
    model.set_filter("node-01234")
    assert {g.host for g in model.view} == {"node-01234"}
    assert len(model.view) == 8
    # one host's poll changed its GPUs; the rest are the same objects
    changed = gpus_for(hosts[1234], 0.0, tick=1)
    model.cursor_to(3)
    key = model.cursor_key
    model.set_rows(gpus[: 1234 * 8] + changed + gpus[1235 * 8 :])
    assert model.cursor_key == key
    assert len(model.view) == 8
    assert all(g in changed for g in model.view)


def test_fake_clock_is_the_only_time_source() -> None:
    # ages come from the injected clock, never the wall clock
    clock = FakeClock(start=0.0, epoch=1000.0)
    asyncio.run(clock.advance(42))
    h = SourceHealth(target="a", source="a", endpoint="e", interval_s=5, up=True, last_success=1000.0)
    column = next(c for c in SOURCE_TABLE.columns if c.id == "last-ok")
    assert column.cell(h, clock.time()) == "42s"
