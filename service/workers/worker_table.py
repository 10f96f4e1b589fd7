"""What the gunicorn workers of one server tell each other: a small table in shared memory
that the gunicorn master creates before it forks them (``service/gunicorn.conf.py``).

Each worker has a slot that says until when it is busy (``service.workers.core_share``: a
forward borrows the cores of idle workers).

Every entry has one writer at a time (its worker's event loop; the master only when it hands
the slot out or the worker has exited); readers take plain reads. A stale read costs one
forward on a less suited thread count, never a wrong answer.
"""

import mmap

_ENTRY = "d"  # 8-byte floats


class WorkerTable:
    """Per slot: until when the worker is busy (``time.monotonic()``, one clock for all
    processes of the host; inf while working). Entry 0 holds how many slots were ever handed
    out, so that readers scan only those."""

    def __init__(self, slots: int) -> None:
        self._memory = mmap.mmap(-1, (slots + 1) * 8)  # MAP_SHARED: the forks see one table
        entries = memoryview(self._memory).cast(_ENTRY)
        self._used = entries[:1]
        self._busy_until = entries[1:]

    @property
    def slots(self) -> int:
        return len(self._busy_until)

    def free_slot(self, taken: set[int]) -> int | None:
        """The lowest slot no live worker holds, cleared (None when all are held)."""
        for slot in range(self.slots):
            if slot not in taken:
                self.clear(slot)
                self._used[0] = max(self._used[0], slot + 1)
                return slot
        return None

    def clear(self, slot: int) -> None:
        """An exited worker, or one that has not started: idle."""
        self._busy_until[slot] = 0.0

    def set_busy_until(self, slot: int, until: float) -> None:
        self._busy_until[slot] = until

    def others_busy(self, slot: int, now: float) -> bool:
        busy = self._busy_until[:int(self._used[0])]
        return max(busy[:slot], default=0.0) > now or max(busy[slot + 1:], default=0.0) > now


# The master's table (set by ``create_table``) and, in a worker, its own slot (``join``).
_table: WorkerTable | None = None
_slot: int | None = None
_SLOT_ATTRIBUTE = "worker_table_slot"


def create_table(slots: int = 1024) -> None:
    """In the gunicorn master, before forking: the table every worker will share."""
    global _table
    _table = WorkerTable(slots)


def assign_slot(worker: object, live_workers: list[object]) -> None:
    """In the master (gunicorn's ``pre_fork``): give ``worker`` a slot no live worker holds.
    Without a free slot the worker never borrows cores, and counts for nobody."""
    if _table is None:
        return
    taken = {getattr(other, _SLOT_ATTRIBUTE, None) for other in live_workers}
    setattr(worker, _SLOT_ATTRIBUTE, _table.free_slot(taken))


def join(worker: object) -> None:
    """In the worker, right after the fork (``post_fork``): take the slot the master gave."""
    global _slot
    _slot = getattr(worker, _SLOT_ATTRIBUTE, None)


def release(worker: object) -> None:
    """In the master when a worker exited (``child_exit``): nothing in flight."""
    slot = getattr(worker, _SLOT_ATTRIBUTE, None)
    if _table is not None and slot is not None:
        _table.clear(slot)


def this_worker() -> tuple[WorkerTable, int] | None:
    """The table and this process's slot when gunicorn's hooks gave it one, else None (a
    worker run without ``service/gunicorn.conf.py`` cannot see the others)."""
    if _table is None or _slot is None:
        return None
    return _table, _slot
