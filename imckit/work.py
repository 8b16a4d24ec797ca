"""Work counts of one MVM, the currency between the simulator, training and the energy model.

:func:`imckit.imc.mvm` reports a :class:`Work` for every call; :mod:`imckit.nn` sums them per
(layer, MVM) over a training run; :mod:`imckit.energy` multiplies them by per-event energies.
Digital MVMs report ``macs`` only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

WORK_SCHEMA = "imckit.work/2"
"""Version of the work record :func:`imckit.nn.collect_work` writes and
:func:`imckit.energy.energy_from_work` reads (2: the executed mapping, with ``outputs``, the
``dense_cycles`` / ``dense_drives`` behind the occupancy, and per-layer ``samples``; earlier
records have no ``schema`` key and are refused with one line)."""


def check_schema(record: dict, what: str = "work") -> None:
    """One-line ``ValueError`` unless ``record`` is a work record of :data:`WORK_SCHEMA`.

    >>> check_schema({"schema": WORK_SCHEMA})
    >>> check_schema({"steps": 1})
    Traceback (most recent call last):
    ...
    ValueError: work['schema']=None is not allowed: this imckit reads 'imckit.work/2' records; regenerate the record with imckit.nn.collect_work
    """
    got = record.get("schema") if isinstance(record, dict) else None
    if got != WORK_SCHEMA:
        raise ValueError(f"{what}['schema']={got!r} is not allowed: this imckit reads "
                         f"{WORK_SCHEMA!r} records; regenerate the record with "
                         "imckit.nn.collect_work")


@dataclass(frozen=True)
class Work:
    """Event counts of one or more MVMs (all plain integers, no units beyond "events").

    Attributes:
        macs: multiply-accumulates of the logical MVM (``B * N * M`` for a ``(B, N) @ (N, M)``).
        conversions: ADC column conversions (one per physical column per input cycle per row tile).
        cycles: input-plane cycles applied to arrays (one per non-empty input plane per row tile
            and column tile: every array of a column tile receives the cycle).
        row_drives: row-driver activations (rows driven with a nonzero input, summed over cycles).
        write_bits: bits written into arrays (stationary operands, transposes, activations).
        outputs: output values the MVM delivers (``B * M``), each written once by the back end.

    >>> w = Work(macs=10, conversions=2) + Work(macs=5, write_bits=8)
    >>> w.to_dict()
    {'macs': 15, 'conversions': 2, 'cycles': 0, 'row_drives': 0, 'write_bits': 8, 'outputs': 0}
    >>> Work.from_dict(w.to_dict()) == w
    True
    >>> Work.from_dict({"macs": 1.7})
    Traceback (most recent call last):
    ...
    ValueError: macs=1.7 is not allowed: a count must be an int >= 0
    """

    macs: int = 0
    conversions: int = 0
    cycles: int = 0
    row_drives: int = 0
    write_bits: int = 0
    outputs: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{f.name}={v!r} is not allowed: a count must be an int >= 0")

    def __add__(self, other: "Work") -> "Work":
        if not isinstance(other, Work):
            return NotImplemented
        return Work(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                       for f in dataclasses.fields(self)})

    def scaled(self, k: int) -> "Work":
        """The work of ``k`` identical calls."""
        return Work(**{f.name: getattr(self, f.name) * int(k) for f in dataclasses.fields(self)})

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Work":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"work fields {sorted(unknown)} are not known: allowed {sorted(names)}")
        # integral floats (e.g. 1e6 from a JSON writer) and numpy integers become ints; anything
        # else (1.7, True, "5") is left for __post_init__ to reject, never silently truncated
        def count(v):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            return int(v) if hasattr(v, "__index__") and not isinstance(v, bool) else v

        return cls(**{k: count(v) for k, v in d.items()})
