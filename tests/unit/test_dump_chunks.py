"""Reading live tables without holding the event loop: one-entry lookups (``fdb_get``,
``neigh_get``) and dumps in slices (``fdb_dump_chunk``, ``neigh_dump_chunk``), on both cores.
A dump in slices gives the rows of ``fdb_dump`` (in table order), also across a table resize
between slices, with repeats possible but nothing that was there throughout missing."""

from __future__ import annotations

from typing import Any

import pytest

from dataplane.errors import EntryNotFound, InvalidArgument

VNIS = (4097, 4098)


def table(impl: Any, n: int = 300) -> Any:
    sw = impl.Switch("198.18.0.1")
    for vni in VNIS:
        sw.add_network(vni)
    for i in range(n):
        vni = VNIS[i % 2]
        sw.fdb_add(vni, f"02:42:c0:a8:{i >> 8:02x}:{i & 0xFF:02x}", f"198.18.0.{2 + i % 50}")
        sw.neigh_add(vni, f"192.168.{i >> 8}.{i & 0xFF}", f"02:42:c0:a8:{i >> 8:02x}:{i & 0xFF:02x}")
    sw.fdb_append(VNIS[0], "00:00:00:00:00:00", "198.18.0.2")
    sw.fdb_append(VNIS[0], "00:00:00:00:00:00", "198.18.0.3")
    sw.add_port(1, VNIS[1], "02:42:c0:a8:99:01")
    return sw


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, repr(v)) for k, v in row.items()))


def dump_all(sw: Any, which: str, limit: int, between: Any = None) -> list[dict[str, Any]]:
    fn = getattr(sw, f"{which}_dump_chunk")
    rows, cursor = fn(0, limit)
    while cursor != -1:
        if between is not None:
            between()
        more, cursor = fn(cursor, limit)
        rows += more
    return rows


@pytest.mark.parametrize("which", ["fdb", "neigh"])
@pytest.mark.parametrize("limit", [1, 7, 1024])
def test_a_dump_in_slices_has_the_rows_of_the_whole_dump(impl: Any, which: str,
                                                         limit: int) -> None:
    sw = table(impl)
    rows = dump_all(sw, which, limit)
    whole = getattr(sw, f"{which}_dump")()
    assert sorted(map(key, rows)) == sorted(map(key, whole))


def test_nothing_present_throughout_is_missed_while_the_table_grows(impl: Any) -> None:
    sw = table(impl, 100)
    before = {key(r) for r in sw.fdb_dump()}
    added = iter(range(1000, 60000))

    def grow() -> None:          # forces resizes between slices
        for _ in range(8):
            i = next(added)
            sw.fdb_add(VNIS[0], f"02:43:00:00:{i >> 8:02x}:{i & 0xFF:02x}", "198.18.0.9")

    rows = {key(r) for r in dump_all(sw, "fdb", 16, grow)}
    assert before <= rows


def test_lookups_of_one_entry(impl: Any) -> None:
    sw = table(impl, 10)
    assert sw.fdb_get(VNIS[0], "02:42:c0:a8:00:00") == [
        r for r in sw.fdb_dump() if r["mac"] == "02:42:c0:a8:00:00"]
    assert [r["dst"] for r in sw.fdb_get(VNIS[0], "00:00:00:00:00:00")] == [
        "198.18.0.2", "198.18.0.3"]
    assert sw.fdb_get(VNIS[1], "02:42:c0:a8:99:01")[0]["port"] == 1
    assert sw.fdb_get(VNIS[0], "02:42:c0:a8:ee:ee") == []
    assert sw.neigh_get(VNIS[1], "192.168.0.1") == {
        "vni": VNIS[1], "ip": "192.168.0.1", "lladdr": "02:42:c0:a8:00:01", "state": "permanent"}
    assert sw.neigh_get(VNIS[0], "192.168.0.1") is None
    with pytest.raises(EntryNotFound):
        sw.fdb_get(5, "02:42:c0:a8:00:00")
    with pytest.raises(InvalidArgument):
        sw.neigh_get(VNIS[0], "not-an-ip")
