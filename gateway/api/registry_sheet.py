"""Elders from a spreadsheet (CSV or XLSX): one row per elder, checked cell by cell.

The layout (documented in CONTRACT.md): a header row, then one elder per row. Only
``elder_id`` and ``name`` are required; a column left out of the file keeps what is
stored for an elder already registered, so a sheet with ``elder_id,grid`` moves elders
between grids and touches nothing else. Errors name the spreadsheet row (the header is
row 1) and the column, so an operator can fix the file in Excel.

Errors:

    SheetError        -- the file as a whole cannot be read (not CSV/XLSX, bad header)
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import msgspec

from gateway.api.schemas import RowError
from gateway.domain.registry import ElderSpec, RegistryError, RegistryFile, validate

MAX_ROWS = 100_000
MAX_UNZIPPED_BYTES = 64 * 1024 * 1024  # an XLSX that inflates past this is refused (zip bomb)
CONTACTS = 3

SCALAR = ("elder_id", "name", "community", "grid", "address", "language")
COLUMNS: tuple[str, ...] = (
    *SCALAR,
    "lives_alone",
    "conditions",
    "home_lat",
    "home_lon",
    "home_fence_m",
    "devices",
    "thresholds",
    *(f"contact{i}_{part}" for i in range(1, CONTACTS + 1) for part in ("name", "phone", "relation")),
)
_TRUE = {"yes", "y", "true", "1", "是", "x"}
_FALSE = {"no", "n", "false", "0", "否", ""}


class SheetError(ValueError):
    """The file cannot be read as an elder sheet at all."""


@dataclass(slots=True)
class SheetResult:
    """Elders (as registry dicts, merged with what is stored) and every row's errors."""

    elders: list[dict[str, Any]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # spreadsheet row of each elder
    errors: list[RowError] = field(default_factory=list)


def read_table(filename: str, data: bytes) -> list[list[str]]:
    """Rows of cells (as text) of a CSV or the first sheet (or the one named "elders") of an XLSX."""
    name = filename.lower()
    if name.endswith(".xlsx"):
        return list(_xlsx_rows(data))
    if name.endswith(".csv"):
        return _csv_rows(data)
    raise SheetError("Upload a .csv or .xlsx file.")


def _csv_rows(data: bytes) -> list[list[str]]:
    for encoding in ("utf-8-sig", "gb18030"):  # Excel in China saves CSV as GBK unless told otherwise
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise SheetError("The CSV file is neither UTF-8 nor GB18030 text.")
    if "\x00" in text:
        raise SheetError("The CSV file contains binary data.")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise SheetError(f"The CSV file cannot be read: {error}.") from None
    if len(rows) > MAX_ROWS + 1:
        raise SheetError(f"The file has more than {MAX_ROWS} rows; split it.")
    return rows


def _xlsx_rows(data: bytes) -> Iterator[list[str]]:
    """The elders sheet's cells as text, read with calamine (Rust).

    openpyxl took 2.2 s for a 12,000-row sheet, most of the 3 s an import may take
    (issue 19); calamine reads it in under 0.2 s. Errors say the file is unreadable,
    whatever the library's own exception.
    """
    from python_calamine import CalamineWorkbook

    if not data.startswith(b"PK\x03\x04"):
        raise SheetError("The file named .xlsx is not an Excel workbook.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED_BYTES:
                raise SheetError("The workbook expands to more than 64 MiB; refused.")
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
        names = book.sheet_names
        if not names:
            raise SheetError("The workbook has no sheets.")
        rows = book.get_sheet_by_name("elders" if "elders" in names else names[0]).to_python(skip_empty_area=False)
    except SheetError:
        raise
    except Exception as error:  # calamine's errors vary by what is broken in the file
        raise SheetError(f"The file named .xlsx is not a readable Excel workbook ({type(error).__name__}).") from None
    if len(rows) > MAX_ROWS + 1:
        raise SheetError(f"The sheet has more than {MAX_ROWS} rows; split it.")
    for row in rows:
        yield [_cell_text(v) for v in row]


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value).strip()


class _Cell(ValueError):
    def __init__(self, column: str, detail: str) -> None:
        super().__init__(detail)
        self.column = column


def parse_sheet(table: list[list[str]], stored: dict[str, dict[str, Any]]) -> SheetResult:
    """Check every row; ``stored`` holds registered elders (registry dicts) to merge with."""
    result = SheetResult()
    if not table or not any(table[0]):
        raise SheetError("The file is empty; the first row must name the columns.")
    header = [h.strip().lower() for h in table[0]]
    unknown = [h for h in header if h and h not in COLUMNS]
    missing = [c for c in ("elder_id",) if c not in header]
    if unknown or missing or len(set(filter(None, header))) != len(list(filter(None, header))):
        detail = (
            f"unknown column {unknown[0]!r} (known: {', '.join(COLUMNS)})"
            if unknown
            else "the column elder_id is required"
            if missing
            else "a column is named twice"
        )
        result.errors.append(RowError(row=1, column=unknown[0] if unknown else None, detail=detail))
        return result
    seen_elders: dict[str, int] = {}
    seen_devices: dict[str, int] = {}
    for n, cells in enumerate(table[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        row = {h: (cells[i].strip() if i < len(cells) else "") for i, h in enumerate(header) if h}
        errors, elder = _row(row, stored)
        elder_id = row.get("elder_id", "")
        if elder_id in seen_elders:
            errors.append(
                RowError(row=n, column="elder_id", detail=f"elder {elder_id} is already on row {seen_elders[elder_id]}")
            )
        seen_elders.setdefault(elder_id, n)
        for device in (elder or {}).get("devices", []) if "devices" in row else []:
            first = seen_devices.setdefault(device["id"], n)
            if first != n:
                errors.append(
                    RowError(row=n, column="devices", detail=f"device {device['id']} is already bound on row {first}")
                )
        for error in errors:
            error.row = n
        result.errors.extend(errors)
        if not errors and elder is not None:
            result.elders.append(elder)
            result.rows.append(n)
    if not result.elders and not result.errors:
        result.errors.append(RowError(row=2, column=None, detail="the file has no elder rows"))
    return result


def _row(row: dict[str, str], stored: dict[str, dict[str, Any]]) -> tuple[list[RowError], dict[str, Any] | None]:
    errors: list[RowError] = []
    elder_id = row.get("elder_id", "")
    if not elder_id:
        return [RowError(row=0, column="elder_id", detail="elder_id is empty")], None
    base = stored.get(elder_id)
    elder: dict[str, Any] = dict(base) if base else {"id": elder_id, "name": "", "fences": [], "devices": []}
    if base is None and not row.get("name"):
        errors.append(RowError(row=0, column="name", detail=f"a new elder ({elder_id}) needs a name"))
    for parse in (_scalars, _flags, _home, _devices, _thresholds, _contacts):
        try:
            parse(row, elder)
        except _Cell as cell:
            errors.append(RowError(row=0, column=cell.column, detail=str(cell)))
    if errors:
        return errors, None
    try:
        spec = msgspec.convert(elder, ElderSpec, strict=False)
        validate(RegistryFile(elders=[spec]))
    except msgspec.ValidationError as error:
        return [RowError(row=0, column=_column_of(str(error)), detail=str(error))], None
    except RegistryError as error:
        return [RowError(row=0, column=_column_of(str(error)), detail=str(error))], None
    return [], elder


def _scalars(row: dict[str, str], elder: dict[str, Any]) -> None:
    for column in SCALAR:
        if column in row and (row[column] or column not in ("elder_id", "name")):
            key = "id" if column == "elder_id" else column
            elder[key] = row[column] or ("zh" if column == "language" else "")
    if "language" in row and elder.get("language") not in ("zh", "en"):
        raise _Cell("language", f"language must be zh or en, not {row['language']!r}")


def _flags(row: dict[str, str], elder: dict[str, Any]) -> None:
    if "lives_alone" in row:
        text = row["lives_alone"].lower()
        if text not in _TRUE | _FALSE:
            raise _Cell("lives_alone", f"lives_alone must be yes or no, not {row['lives_alone']!r}")
        elder["lives_alone"] = text in _TRUE
    if "conditions" in row:
        elder["conditions"] = _split(row["conditions"])


def _home(row: dict[str, str], elder: dict[str, Any]) -> None:
    if "home_lat" in row or "home_lon" in row:
        lat, lon = row.get("home_lat", ""), row.get("home_lon", "")
        if bool(lat) != bool(lon):
            raise _Cell("home_lat" if not lat else "home_lon", "give both home_lat and home_lon, or neither")
        elder["home"] = {"lat": _number(lat, "home_lat"), "lon": _number(lon, "home_lon")} if lat else None
    if row.get("home_fence_m"):
        radius = _number(row["home_fence_m"], "home_fence_m")
        home = elder.get("home")
        if not home:
            raise _Cell("home_fence_m", "a home fence needs home_lat and home_lon")
        if not 10 <= radius <= 10_000:
            raise _Cell("home_fence_m", "home_fence_m must be 10 to 10000 metres")
        fences = [f for f in elder.get("fences", []) if f.get("id") != "home"]
        elder["fences"] = [*fences, {"id": "home", "name": "home", "circle": {**home, "radius_m": radius}}]


def _devices(row: dict[str, str], elder: dict[str, Any]) -> None:
    if "devices" not in row:
        return
    devices = []
    for item in _split(row["devices"]):
        kind, sep, device_id = item.partition(":")
        if not sep or not device_id.strip():
            raise _Cell("devices", f"{item!r} is not type:id (e.g. wristband:wb-001)")
        devices.append({"id": device_id.strip(), "type": kind.strip().lower()})
    elder["devices"] = devices


def _thresholds(row: dict[str, str], elder: dict[str, Any]) -> None:
    if "thresholds" not in row:
        return
    found: dict[str, float] = {}
    for item in _split(row["thresholds"]):
        name, sep, value = item.partition("=")
        if not sep:
            raise _Cell("thresholds", f"{item!r} is not name=value (e.g. hr_high=120)")
        found[name.strip()] = _number(value, "thresholds")
    elder["thresholds"] = found


def _contacts(row: dict[str, str], elder: dict[str, Any]) -> None:
    if not any(c.startswith("contact") for c in row):
        return
    contacts = []
    for i in range(1, CONTACTS + 1):
        name, phone = row.get(f"contact{i}_name", ""), row.get(f"contact{i}_phone", "").replace(" ", "")
        if not name and not phone:
            continue
        if not name or not phone:
            raise _Cell(f"contact{i}_{'name' if not name else 'phone'}", f"contact {i} needs a name and a phone")
        if not re.fullmatch(r"\+[1-9]\d{6,14}", phone):
            raise _Cell(f"contact{i}_phone", f"{phone!r} is not an E.164 number (e.g. +8613800138000)")
        contacts.append({"name": name, "phone": phone, "relation": row.get(f"contact{i}_relation", ""), "priority": i})
    elder["contacts"] = contacts


def _split(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[;；]", text) if p.strip()]


def _number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Cell(column, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise _Cell(column, f"{text!r} is not a number")
    return value


_PATH_COLUMNS = (
    ("$.home.lat", "home_lat"),
    ("$.home.lon", "home_lon"),
    ("$.home", "home_lat"),
    ("$.conditions", "conditions"),
    ("$.devices", "devices"),
    ("$.thresholds", "thresholds"),
    ("$.language", "language"),
    ("$.fences", "home_fence_m"),
    ("$.name", "name"),
    ("$.community", "community"),
    ("$.grid", "grid"),
    ("$.address", "address"),
)


def _column_of(message: str) -> str | None:
    contact = re.search(r"\$\.contacts\[(\d+)\]\.(\w+)", message)
    if contact:
        return f"contact{int(contact.group(1)) + 1}_{contact.group(2)}"
    for path, column in _PATH_COLUMNS:
        if path in message:
            return column
    lowered = message.lower()
    for word, column in (("threshold", "thresholds"), ("device", "devices"), ("fence", "home_fence_m")):
        if word in lowered:
            return column
    return None
