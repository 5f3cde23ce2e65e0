"""Files and measures for the upload attacks, shared by ``test_upload_attacks.py`` and
``benchmarks/upload_attacks.py``: each builder makes a file that once crashed the service or blew up its
memory, and ``PeakMemory`` measures the API process's peak memory (VmHWM, reset first) around a request."""

from __future__ import annotations

import io
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Protocol

CORPUS_FILES = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "real-files" / "files"


class Running(Protocol):
    """A server process started by the tests or a benchmark."""

    process: subprocess.Popen[bytes] | None


def reset_peak_memory(server: Running) -> None:
    """Make the process's VmHWM its current RSS."""
    assert server.process is not None
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")


def memory_bytes(server: Running, field: str) -> int:
    """A memory figure of the process from /proc (``VmHWM``: peak resident, ``VmRSS``: resident now)."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:"))) * 1024


class PeakMemory:
    """How much the API process's peak memory grew while the block ran."""

    def __init__(self, server: Running) -> None:
        self.server = server
        self.growth = 0

    def __enter__(self) -> PeakMemory:
        reset_peak_memory(self.server)
        self.baseline = memory_bytes(self.server, "VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = memory_bytes(self.server, "VmHWM") - self.baseline


def xlsx_of(sheet_xml: bytes, shared_strings: bytes | None = None, level: int = 6) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        if shared_strings is not None:
            archive.writestr("xl/sharedStrings.xml", shared_strings)
        archive.writestr("xl/worksheets/sheet1.xml", sheet_xml)
    return buffer.getvalue()


def shared_string_bomb(cells: int, string_bytes: int) -> bytes:
    """``cells`` cells that all point at one shared string of ``string_bytes`` (a few KB packed)."""
    shared = b"<sst><si><t>" + b"x" * string_bytes + b"</t></si></sst>"
    rows = b"".join(b'<row r="%d"><c r="A%d" t="s"><v>0</v></c></row>' % (row, row) for row in range(1, cells + 1))
    return xlsx_of(b"<worksheet><sheetData>" + rows + b"</sheetData></worksheet>", shared, level=9)


_PACKAGE = {
    "[Content_Types].xml": b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships'
    b'+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override '
    b'PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
    b'spreadsheetml.worksheet+xml"/></Types>',
    "_rels/.rels": b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>',
    "xl/workbook.xml": b'<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/'
    b'2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet '
    b'name="data" sheetId="1" r:id="rId1"/></sheets></workbook>',
    "xl/_rels/workbook.xml.rels": b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
    b'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
    b'2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
}


def dense_workbook(cells: int) -> bytes:
    """A valid workbook of ``cells`` one-digit cells in rows of 20: ~130:1 packed, so 100 million cells are
    12 MB that unpack to 1.5 GB, inside the zip checks (2 GiB, 200:1)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, part in _PACKAGE.items():
            archive.writestr(name, part)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
            block = (b"<row>" + b"<c><v>1</v></c>" * 20 + b"</row>") * 10_000
            for _ in range(cells // 200_000):
                sheet.write(block)
            sheet.write(b"</sheetData></worksheet>")
    return buffer.getvalue()


def looping_cfb() -> bytes:
    """A minimal OLE compound file (what .xls is) whose FAT chains the directory's sector to itself."""
    end_of_chain, free, fat_sector = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16)
    header += struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + bytes(6)
    # directory sectors, FAT sectors, first directory sector, transaction, mini-stream cutoff, first mini FAT
    # sector, mini FAT sectors, first DIFAT sector, DIFAT sectors; then the DIFAT: the FAT is sector 0.
    header += struct.pack("<9I", 0, 1, 1, 0, 4096, end_of_chain, 0, end_of_chain, 0)
    header += struct.pack("<109I", 0, *([free] * 108))
    fat = struct.pack("<128I", fat_sector, 1, *([free] * 126))  # sector 1 (the directory) is followed by 1
    return header + fat + bytes(512)


def large_csv(target_bytes: int) -> bytes:
    row = b"2025-01-01 10:00:00,north,web,retail,12345.67,89.5,3,17,0.25,alpha,beta,gamma,delta,1024\n"
    header = b"timestamp,region,channel,segment,amount,score,items,age,ratio,a,b,c,d,size\n"
    return header + row * (target_bytes // len(row))
