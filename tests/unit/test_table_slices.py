"""Observer.table_slices: fdb/neigh show from the cores' dumps in slices — every row once,
sorted while the table is small, in table order beyond SORT_MAX, the loop given back
between slices (both cores, and a scripted dump that repeats rows)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dataplane import observe
from dataplane.observe import DUMP_SLICE, SORT_MAX, Observer

VNI = 4097


class _Vtep:
    """What Observer.table_slices reads of a Vtep: the core, ports, networks."""

    def __init__(self, switch: Any) -> None:
        self.switch = switch
        self.ports: dict[int, Any] = {}
        self.by_vni: dict[int, Any] = {}


def _mac(i: int) -> str:
    return "02:" + ":".join(f"{b:02x}" for b in (i >> 24 & 255, i >> 16 & 255, i >> 8 & 255,
                                                   i & 255, 7))


def collect(obs: Observer, table: str) -> tuple[list[list[dict[str, Any]]], int]:
    """(the slices, turns of the loop another task got while they were made)."""
    async def main() -> tuple[list[list[dict[str, Any]]], int]:
        turns = 0
        done = False

        async def other() -> None:
            nonlocal turns
            while not done:
                await asyncio.sleep(0)
                turns += 1

        task = asyncio.ensure_future(other())
        slices = [rows async for rows in obs.table_slices(table)]
        done = True
        await task
        return slices, turns
    return asyncio.run(main())


def filled(impl: Any, n: int) -> Any:
    sw = impl.Switch("198.18.0.1")
    sw.add_network(VNI)
    for i in range(n):
        sw.fdb_add(VNI, _mac(i), f"198.18.0.{2 + i % 200}", "permanent", 0.0)
        if i < 300:
            sw.neigh_add(VNI, f"192.168.{55 + i // 250}.{1 + i % 250}", _mac(i))
    sw.fdb_append(VNI, "00:00:00:00:00:00", "198.18.0.9", "permanent", 0.0)
    sw.fdb_append(VNI, "00:00:00:00:00:00", "198.18.0.3", "permanent", 0.0)
    return sw


def test_a_small_table_comes_sorted_like_fdb_dump(impl: Any) -> None:
    sw = filled(impl, 500)
    slices, _ = collect(Observer(_Vtep(sw)), "fdb")
    rows = [r for s in slices for r in s]
    # the same rows, in the order of the cores' sorted dump (a flood list's VTEPs in theirs)
    assert [(r["mac"], r["dst"]) for r in rows] == [(r["mac"], r["dst"])
                                                   for r in sw.fdb_dump()]
    assert all(r["network"] == str(VNI) and r["state"] == "permanent" for r in rows)
    neigh = [r for s in collect(Observer(_Vtep(sw)), "neigh")[0] for r in s]
    assert [r["ip"] for r in neigh] == [r["ip"] for r in sw.neigh_dump()]


def test_a_large_table_comes_whole_in_slices_with_turns_between(impl: Any) -> None:
    n = SORT_MAX + 3 * DUMP_SLICE
    sw = filled(impl, n)
    slices, turns = collect(Observer(_Vtep(sw)), "fdb")
    rows = [r for s in slices for r in s]
    assert len(rows) == n + 2
    assert {(r["mac"], r["dst"]) for r in rows} == {(r["mac"], r["dst"])
                                                     for r in sw.fdb_dump()}
    assert len(slices) > 1 and max(len(s) for s in slices) <= SORT_MAX + DUMP_SLICE
    assert turns >= n // DUMP_SLICE      # the loop was given back between slices


class _Repeating:
    """A core whose dump gives some rows twice (as a resize or a displaced key may)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.slices = [rows[i:i + 5] + rows[i:i + 2] for i in range(0, len(rows), 5)]

    def fdb_dump_chunk(self, cursor: int = 0, limit: int = 1024
                       ) -> tuple[list[dict[str, Any]], int]:
        rows = self.slices[cursor]
        return rows, (cursor + 1 if cursor + 1 < len(self.slices) else -1)


@pytest.mark.parametrize("n", [20, SORT_MAX + 50])
def test_repeated_rows_are_sent_once(n: int) -> None:
    rows = [{"vni": VNI, "mac": _mac(i), "state": "permanent", "updated": 0.0, "port": None,
             "dst": "198.18.0.2"} for i in range(n)]
    slices, _ = collect(Observer(_Vtep(_Repeating(rows))), "fdb")
    got = [r["mac"] for s in slices for r in s]
    assert sorted(got) == sorted(r["mac"] for r in rows)


def test_memory_of_a_dump_is_freed_a_little_at_a_time() -> None:
    seen = [observe.array("q", [1, 2]) for _ in range(observe.FORGET_SLICE * 3)]

    async def main() -> list[int]:
        sizes = []
        asyncio.get_running_loop().call_soon(observe._forget, seen)
        for _ in range(5):
            await asyncio.sleep(0)
            sizes.append(len(seen))
        return sizes
    assert asyncio.run(main())[:3] == [observe.FORGET_SLICE * 2, observe.FORGET_SLICE, 0]
