"""QUERY_DIRECTORY in chunks (services.smb.listing): the entries as MS-FSCC packs them,
and a directory of 20,000 files listed by smbclient while another client is served."""

from __future__ import annotations

import os
import struct
import subprocess

from services.smb import listing
from tests.conftest import need
from tests.ftputil import smbclient


def names_in(buffer: bytes, info_class: int) -> list[str]:
    """Walk the NextEntryOffset chain, checking each entry's alignment."""
    names, at = [], 0
    name_at = {listing.NAMES: 12, listing.DIRECTORY: 64, listing.FULL: 68, listing.BOTH: 94,
               listing.ID_BOTH: 104, listing.ID_FULL: 80}[info_class]
    length_at = 8 if info_class == listing.NAMES else 60
    while True:
        assert at % 8 == 0
        following, = struct.unpack_from("<I", buffer, at)
        length, = struct.unpack_from("<I", buffer, at + length_at)
        names.append(buffer[at + name_at:at + name_at + length].decode("utf-16le"))
        if not following:
            assert at + name_at + length == len(buffer)  # no padding after the last
            return names
        at += following


def test_matching_lists_dot_entries_for_star_and_folds_case():
    names = ["Report.TXT", "notes.md", "a.txt"]
    assert listing.matching(names, "*") == [".", "..", *names]
    assert listing.matching(names, "*.txt") == ["Report.TXT", "a.txt"]
    assert listing.matching(names, "report.txt") == ["Report.TXT"]
    assert listing.matching(names, "?.TXT") == ["a.txt"]


def test_every_information_class_chains_aligned_entries(tmp_path):
    for number in range(5):
        (tmp_path / f"f{'x' * number}.bin").write_bytes(b"y" * number)
    (tmp_path / "sub").mkdir()
    names = sorted(os.listdir(tmp_path))
    for info_class in sorted(listing.CLASSES):
        enumeration = listing.Enumeration("*", listing.matching(names, "*"))
        buffer, taken = listing.answer(str(tmp_path), enumeration, info_class, 65536, False)
        assert taken == len(names) + 2 and names_in(buffer, info_class) == [".", "..", *names]
        assert enumeration.position == len(enumeration.names)
    enumeration = listing.Enumeration("*", ["sub", "fxx.bin"])
    buffer, _ = listing.answer(str(tmp_path), enumeration, listing.ID_BOTH, 65536, False)
    first = listing.COMMON.unpack_from(buffer)
    second = listing.COMMON.unpack_from(buffer, first[0])
    assert first[8] == listing.ATTRIBUTE_DIRECTORY and first[6] == 0  # a directory, no size
    assert second[8] == listing.ATTRIBUTE_ARCHIVE and second[6] == 2
    assert struct.unpack_from("<Q", buffer, first[0] + 96)[0] == os.stat(tmp_path / "fxx.bin").st_ino


def test_chunks_follow_the_output_buffer_and_resume_where_they_stopped(tmp_path):
    names = [f"file-{number:04d}" for number in range(300)]
    for name in names:
        (tmp_path / name).touch()
    enumeration = listing.Enumeration("*", list(names))
    seen: list[str] = []
    while enumeration.position < len(enumeration.names):
        buffer, taken = listing.answer(str(tmp_path), enumeration, listing.ID_BOTH, 4096, False)
        assert 0 < taken and len(buffer) <= 4096
        seen += names_in(buffer, listing.ID_BOTH)
    assert seen == names  # each once, in order
    single = listing.Enumeration("*", list(names))
    buffer, taken = listing.answer(str(tmp_path), single, listing.NAMES, 65536, True)
    assert taken == 1 and single.position == 1 and names_in(buffer, listing.NAMES) == names[:1]


def test_a_name_gone_meanwhile_is_skipped_and_none_is_lost(tmp_path):
    names = ["a", "b", "gone", "c"]
    for name in ("a", "b", "c"):
        (tmp_path / name).touch()
    enumeration = listing.Enumeration("*", names)
    one = len(listing.entry(listing.NAMES, "a", os.stat(tmp_path / "a"))) + 7
    seen = []
    while enumeration.position < len(names):
        buffer, taken = listing.answer(str(tmp_path), enumeration, listing.NAMES, 2 * one, False)
        seen += names_in(buffer, listing.NAMES) if taken else []
    assert seen == ["a", "b", "c"]


def test_chunks_are_bounded_whatever_the_client_allows(tmp_path):
    names = [f"{'n' * 100}{number:05d}" for number in range(3000)]
    for name in names:
        (tmp_path / name).touch()
    enumeration = listing.Enumeration("*", names)
    buffer, taken = listing.answer(str(tmp_path), enumeration, listing.ID_BOTH, 8 << 20, False)
    assert len(buffer) <= listing.CHUNK_LIMIT and 0 < taken < len(names)


def test_smbclient_lists_20000_files_while_another_client_is_served(lab, tmp_path):
    need("smbclient")
    server = lab.start(only="smb")
    crowded = server.data / "homes/alice/crowded"
    crowded.mkdir(parents=True)
    for number in range(20000):
        (crowded / f"entry-{number:05d}-of-a-crowded-directory.txt").touch()
    (server.data / "public/hello.txt").write_text("hi\n")
    port = str(server.port("smb", "smb"))
    big = subprocess.Popen(["smbclient", "//127.0.0.1/alice", "-p", port, "-U", "alice%alice",
                            "-c", "ls crowded\\*"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    other = smbclient(server, "public", "ls", "bob")
    out, err = big.communicate(timeout=300)
    assert other.returncode == 0 and "hello.txt" in other.stdout, other.stdout + other.stderr
    assert big.returncode == 0 and "NT_STATUS" not in out + err, out[-2000:] + err
    listed = {line.split()[0] for line in out.splitlines() if "crowded-directory" in line}
    assert len(listed) == 20000
    server.stop()
    assert "Traceback" not in server.stderr()
