"""The field-table machinery behind every SGX structure.

Each structure declares one table of :class:`Field` rows (name, offset, size, kind). From that
table this module derives, once at import time:

* a precompiled :class:`struct.Struct` that packs and unpacks the whole structure in one call;
* a check that the rows tile ``[0, SIZE)`` exactly (no gap, no overlap) and that the dataclass
  has one attribute per row, in the same order;
* strict parsing (exact length, every reserved range zero, then the structure's own checks) and
  raw parsing (exact length only), both raising only :class:`~sgxlaunch.errors.MalformedInput`;
* the per-class tables the hot paths run on (an :func:`operator.attrgetter` over every field,
  the nested and reserved fields with their zero values, one ``(kind, bound)`` row per field for
  validation), so that packing, raw parsing and validating a structure do no per-field dispatch
  on the row's kind. Raw parsing builds the object from the unpacked values without validating
  them again: ``struct`` yields integers in range and byte strings of the exact width.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from sgxlaunch.errors import MalformedInput

_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_KIND_INT, _KIND_BYTES, _KIND_STRUCT = 0, 1, 2

_S = TypeVar("_S", bound="type[Structure]")


@dataclass(frozen=True, slots=True)
class Field:
    """One row of a structure's layout table.

    Attributes:
        name: attribute name (the SDM field name in lower case).
        offset: byte offset in the structure.
        size: size in bytes.
        kind: ``"int"`` (little-endian unsigned), ``"bytes"``, ``"reserved"`` (bytes that must
            be zero in strict mode) or ``"struct"`` (a nested structure, see ``nested``).
        nested: the nested structure class for ``kind == "struct"``.
    """

    name: str
    offset: int
    size: int
    kind: str
    nested: Any = None

    @property
    def end(self) -> int:
        return self.offset + self.size


def u(name: str, offset: int, size: int) -> Field:
    """An unsigned little-endian integer field."""
    return Field(name, offset, size, "int")


def raw(name: str, offset: int, size: int) -> Field:
    """A byte-string field kept exactly as stored."""
    return Field(name, offset, size, "bytes")


def reserved(name: str, offset: int, size: int) -> Field:
    """A reserved range: must be zero in strict parsing."""
    return Field(name, offset, size, "reserved")


def nested(name: str, offset: int, cls: Any) -> Field:
    """A nested structure (e.g. ATTRIBUTES inside SIGSTRUCT)."""
    return Field(name, offset, int(cls.SIZE), "struct", cls)


class Structure:
    """Base of every SGX structure dataclass.

    Subclasses are frozen, slotted, keyword-only dataclasses that set ``SIZE``, ``NAME`` and
    ``FIELDS`` and then call :func:`finalize` on themselves.
    """

    __slots__ = ()

    SIZE: ClassVar[int]
    NAME: ClassVar[str]
    FIELDS: ClassVar[tuple[Field, ...]]
    _STRUCT: ClassVar[struct.Struct]
    _NAMES: ClassVar[tuple[str, ...]]
    _VALUES: ClassVar[operator.attrgetter[tuple[Any, ...]]]
    _NESTED: ClassVar[tuple[tuple[int, Any], ...]]
    _ZERO_CHECKS: ClassVar[tuple[tuple[str, bytes | None], ...]]
    _CHECKS: ClassVar[tuple[tuple[int, Any], ...]]

    # -- parsing ----------------------------------------------------------------------------

    @classmethod
    def from_bytes_raw(cls, data: bytes | bytearray | memoryview) -> Self:
        """Parse checking only the length (for the emulated processor, which checks itself).

        Raises:
            MalformedInput: ``data`` is not exactly ``SIZE`` bytes long.
        """
        if len(data) != cls.SIZE:
            raise MalformedInput(
                f"{cls.NAME} must be exactly {cls.SIZE} bytes, got {len(data)}",
                field=cls.NAME,
                offset=min(len(data), cls.SIZE),
            )
        values = cls._STRUCT.unpack(data)
        # Unpacked values are valid by construction (ints in range, exact-width bytes): set
        # them as the frozen dataclass's own __init__ would, without validating them again.
        obj = object.__new__(cls)
        setter = object.__setattr__
        # same length (finalize checked it); strict=True costs half a microsecond here
        for name, value in zip(cls._NAMES, values, strict=False):
            setter(obj, name, value)
        for i, inner in cls._NESTED:
            setter(obj, cls._NAMES[i], inner.from_bytes_raw(values[i]))
        return obj

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Parse strictly: exact length, every reserved range zero, the structure's constants.

        Raises:
            MalformedInput: naming the field and offset at fault.
        """
        obj = cls.from_bytes_raw(data)
        obj.check_strict()
        return obj

    def check_strict(self) -> None:
        """Raise :class:`MalformedInput` if a reserved range is non-zero or a constant is off."""
        if self.nonzero_reserved() is None:
            try:
                for i, _inner in self._NESTED:
                    getattr(self, self._NAMES[i]).check_strict()
            except MalformedInput:
                pass  # the field-by-field check names it, with the outer field and offset
            else:
                self._check_constants()
                return
        self._check_strict_slowly()

    def _check_strict_slowly(self) -> None:
        """The field-by-field check: the first range or nested structure at fault, in order."""
        for fld in self.FIELDS:
            value = getattr(self, fld.name)
            if fld.kind == "reserved" and any(value):
                first = next(i for i, b in enumerate(value) if b)
                raise MalformedInput(
                    f"{self.NAME}: reserved bytes {fld.offset}..{fld.end - 1} must be zero",
                    field=f"{self.NAME.lower()}.{fld.name}",
                    offset=fld.offset + first,
                )
            if fld.kind == "struct":
                try:
                    value.check_strict()
                except MalformedInput as exc:
                    raise MalformedInput(
                        f"{self.NAME}.{fld.name}: {exc.message}",
                        field=f"{self.NAME.lower()}.{fld.name}",
                        offset=fld.offset + (exc.offset or 0),
                    ) from None
        self._check_constants()

    def _check_constants(self) -> None:
        """Structure-specific strict checks; the default has none."""

    def nonzero_reserved(self) -> str | None:
        """Name of the first reserved range holding a non-zero byte, or ``None``.

        Ranges inside nested structures are named ``outer.inner`` (e.g. ``secinfo.reserved1``).
        """
        for name, zero in self._ZERO_CHECKS:
            value = getattr(self, name)
            if zero is None:
                inner = value.nonzero_reserved()
                if inner is not None:
                    return f"{name}.{inner}"
            elif value != zero:
                return name
        return None

    # -- serialization ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialize to exactly ``SIZE`` bytes."""
        values = self._VALUES(self)
        if self._NESTED:
            items = list(values)
            for i, _inner in self._NESTED:
                items[i] = items[i].to_bytes()
            return self._STRUCT.pack(*items)
        return self._STRUCT.pack(*values)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated like a new instance)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Fields as JSON-ready values: ints as numbers, bytes as lower-case hex."""
        out: dict[str, Any] = {}
        for fld in self.FIELDS:
            value = getattr(self, fld.name)
            if fld.kind == "struct":
                out[fld.name] = value.to_dict()
            elif fld.kind == "int":
                out[fld.name] = value
            else:
                out[fld.name] = bytes(value).hex()
        return out

    # -- validation of constructed values -----------------------------------------------------

    def _validate_fields(self) -> None:
        """Every field has its type and width (bytearray and memoryview become bytes)."""
        for value, (kind, bound) in zip(self._VALUES(self), self._CHECKS, strict=False):
            if kind == _KIND_INT:
                if value.__class__ is bool or not isinstance(value, int) or not 0 <= value < bound:
                    break
            elif kind == _KIND_BYTES:
                if value.__class__ is not bytes or len(value) != bound:
                    break
            elif not isinstance(value, bound):
                break
        else:
            return
        self._validate_fields_slowly()

    def _validate_fields_slowly(self) -> None:
        """The field-by-field check that names the field at fault (and converts buffers)."""
        for fld in self.FIELDS:
            value = getattr(self, fld.name)
            if fld.kind == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise MalformedInput(
                        f"{self.NAME}.{fld.name} must be an integer", field=fld.name
                    )
                if not 0 <= value < (1 << (8 * fld.size)):
                    raise MalformedInput(
                        f"{self.NAME}.{fld.name} = {value} does not fit in {fld.size} bytes",
                        field=fld.name,
                    )
            elif fld.kind == "struct":
                if not isinstance(value, fld.nested):
                    raise MalformedInput(
                        f"{self.NAME}.{fld.name} must be a {fld.nested.NAME}", field=fld.name
                    )
            else:
                if not isinstance(value, bytes):
                    if isinstance(value, bytearray | memoryview):
                        object.__setattr__(self, fld.name, bytes(value))
                        value = getattr(self, fld.name)
                    else:
                        raise MalformedInput(
                            f"{self.NAME}.{fld.name} must be bytes", field=fld.name
                        )
                if len(value) != fld.size:
                    raise MalformedInput(
                        f"{self.NAME}.{fld.name} must be {fld.size} bytes, got {len(value)}",
                        field=fld.name,
                    )

    def __post_init__(self) -> None:
        self._validate_fields()


def finalize(cls: _S) -> _S:
    """Check a structure's table against its size and dataclass fields; compile its packer."""
    fields = cls.FIELDS
    pos = 0
    fmt = "<"
    for fld in fields:
        assert fld.offset == pos, f"{cls.__name__}.{fld.name}: gap/overlap at {pos}"
        if fld.kind == "int":
            assert fld.size in _INT_CODES, f"{cls.__name__}.{fld.name}: bad int size"
            fmt += _INT_CODES[fld.size]
        else:
            fmt += f"{fld.size}s"
        pos = fld.end
    assert pos == cls.SIZE, f"{cls.__name__}: table covers {pos} bytes, SIZE is {cls.SIZE}"
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    assert names == tuple(f.name for f in fields), f"{cls.__name__}: dataclass/table mismatch"
    packer = struct.Struct(fmt)
    assert packer.size == cls.SIZE
    cls._STRUCT = packer
    cls._NAMES = names
    assert len(names) > 1, f"{cls.__name__}: a structure has at least two fields"
    # Raw parsing builds objects without calling __init__ or __post_init__: a structure's own
    # checks belong in _check_constants (strict parsing), never in __post_init__.
    assert cls.__post_init__ is Structure.__post_init__, f"{cls.__name__} overrides __post_init__"
    cls._VALUES = operator.attrgetter(*names)
    cls._NESTED = tuple((i, f.nested) for i, f in enumerate(fields) if f.kind == "struct")
    cls._ZERO_CHECKS = tuple(
        (f.name, None if f.kind == "struct" else bytes(f.size))
        for f in fields
        if f.kind in ("reserved", "struct")
    )
    cls._CHECKS = tuple(
        (_KIND_INT, 1 << (8 * f.size))
        if f.kind == "int"
        else (_KIND_STRUCT, f.nested)
        if f.kind == "struct"
        else (_KIND_BYTES, f.size)
        for f in fields
    )
    setattr(cls, "from_bytes_raw", classmethod(_compile_raw_parser(cls)))  # noqa: B010
    setattr(cls, "from_bytes", classmethod(_compile_strict_parser(cls)))  # noqa: B010
    return cls


def _plain(inner: Any) -> bool:
    """Whether a nested structure's strict parse is its raw parse and holds no structure itself
    (no reserved range, no constant, no nested structure: ATTRIBUTES)."""
    return (
        not inner._NESTED
        and not inner._ZERO_CHECKS
        and inner._check_constants is Structure._check_constants
    )


def _straight_line(
    cls: type[Structure], namespace: dict[str, Any], *, strict: bool
) -> tuple[str, list[str], list[str]]:
    """The parts of a compiled parser of ``cls``: the unpack format, the unpacked names (``v3``,
    a plain nested structure's fields as ``v3_0``, ``v3_1`` …: one unpack for all of them) and
    the lines that build the object from them (each slot set through its descriptor, a plain
    nested structure built in line; another nested structure parsed by its own parser, its
    strict one if ``strict``: its failure goes to the generic parser, ``_generic``)."""
    fmt = "<"
    names: list[str] = []
    lines = [" obj = _new(cls)"]
    nested = dict(cls._NESTED)
    for i, (name, fld) in enumerate(zip(cls._NAMES, cls.FIELDS, strict=True)):
        namespace[f"_set{i}"] = cls.__dict__[name].__set__
        inner = nested.get(i)
        if inner is None:
            fmt += _INT_CODES[fld.size] if fld.kind == "int" else f"{fld.size}s"
            names.append(f"v{i}")
            lines.append(f" _set{i}(obj, v{i})")
        elif _plain(inner):
            fmt += inner._STRUCT.format.lstrip("<")
            namespace[f"_nested{i}"] = inner
            lines.append(f" n{i} = _new(_nested{i})")
            for j, inner_name in enumerate(inner._NAMES):
                namespace[f"_set{i}_{j}"] = inner.__dict__[inner_name].__set__
                names.append(f"v{i}_{j}")
                lines.append(f" _set{i}_{j}(n{i}, v{i}_{j})")
            lines.append(f" _set{i}(obj, n{i})")
        else:
            fmt += f"{inner.SIZE}s"
            names.append(f"v{i}")
            namespace[f"_nested{i}"] = inner
            if strict:
                lines += [
                    " try:",
                    f"  _set{i}(obj, _nested{i}.from_bytes(v{i}))",
                    " except MalformedInput:",
                    "  return _generic(cls, data)",
                ]
            else:
                lines.append(f" _set{i}(obj, _nested{i}.from_bytes_raw(v{i}))")
    return fmt, names, lines


def _compile_raw_parser(cls: type[Structure]) -> Any:
    """``from_bytes_raw`` of one structure as straight-line code: one unpack, then each slot
    set through its descriptor (no ``__init__``: raw values are valid by construction), a plain
    nested structure (ATTRIBUTES) unpacked in the same call and built in line, any other parsed
    by its own raw parser. The result equals :meth:`Structure.from_bytes_raw` (the generic
    version, which also names a wrong length)."""
    namespace: dict[str, Any] = {
        "_size": cls.SIZE,
        "_generic": Structure.from_bytes_raw.__func__,  # type: ignore[attr-defined]
        "_new": object.__new__,
    }
    fmt, names, build = _straight_line(cls, namespace, strict=False)
    namespace["_unpack"] = struct.Struct(fmt).unpack
    assert struct.calcsize(fmt) == cls.SIZE
    lines = [
        "def from_bytes_raw(cls, data):",
        " if len(data) != _size:",
        "  return _generic(cls, data)",
        f" ({', '.join(names)},) = _unpack(data)",
        *build,
        " return obj",
    ]
    exec("\n".join(lines), namespace)  # noqa: S102 - source generated above from FIELDS only
    return namespace["from_bytes_raw"]


def _compile_strict_parser(cls: type[Structure]) -> Any:
    """``from_bytes`` of one structure as straight-line code: the unpack of
    :func:`_compile_raw_parser`, each reserved range compared with zeros, the object built as
    the raw parser builds it (a nested structure with checks of its own parsed strictly), then
    the structure's ``_check_constants``. Anything out of the ordinary (a wrong length, a
    non-zero reserved range, a nested structure that fails its strict parse) goes to
    :meth:`Structure.from_bytes`, which names the field at fault; so the result and every error
    equal the generic version's (raw parse, then :meth:`Structure.check_strict`: reserved
    ranges, nested structures, constants)."""
    namespace: dict[str, Any] = {
        "_size": cls.SIZE,
        "_generic": Structure.from_bytes.__func__,  # type: ignore[attr-defined]
        "_new": object.__new__,
        "MalformedInput": MalformedInput,
    }
    fmt, names, build = _straight_line(cls, namespace, strict=True)
    namespace["_unpack"] = struct.Struct(fmt).unpack
    zeros = dict(cls._ZERO_CHECKS)
    zero_checks = []
    for i, fld in enumerate(cls.FIELDS):
        if fld.kind == "reserved":
            namespace[f"_zero{i}"] = zeros[fld.name]
            zero_checks.append(f"v{i} != _zero{i}")
    lines = [
        "def from_bytes(cls, data):",
        " if len(data) != _size:",
        "  return _generic(cls, data)",
        f" ({', '.join(names)},) = _unpack(data)",
    ]
    if zero_checks:
        lines += [f" if {' or '.join(zero_checks)}:", "  return _generic(cls, data)"]
    lines += build
    if cls._check_constants is not Structure._check_constants:
        lines.append(" obj._check_constants()")
    lines.append(" return obj")
    exec("\n".join(lines), namespace)  # noqa: S102 - source generated above from FIELDS only
    return namespace["from_bytes"]


def zeros(n: int) -> Any:
    """A dataclass default of ``n`` zero bytes."""
    return dataclasses.field(default=bytes(n))
