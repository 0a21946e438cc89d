# -*- test-case-name: tests.unit.test_cluster_codec -*-
"""memberlist's wire format: msgpack bodies, compound packets, LZW, CRC, AES-GCM.

Why by hand: no Python library speaks HashiCorp memberlist's format, and a stock
``serf agent`` (so Kong 0.9's own agents) must be able to gossip with kongtx
(DESIGN.md §5, /work/shared/notes/serf-wire.md).  The traps this module exists to
get right:

* Go's codec writes strings **and** byte slices as legacy msgpack "raw"
  (``use_bin_type=False`` here) and reads any string-ish type; we decode with
  ``raw=True`` because ``Meta``, IPs and payloads are not UTF-8.
* Streams are LZW-compressed with Go's ``compress/lzw`` (LSB, 8-bit literals),
  whose width changes happen one code earlier than GIF readers expect.
* Encrypted blobs are ``version | nonce(12) | AES-GCM(ciphertext|tag)``; the key is
  the base64-decoded ``cluster_encrypt_key`` used directly, no KDF.

Everything here is pure (bytes in, bytes out) and raises :class:`DecodeError` on
malformed input so that callers can drop and count bad packets.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# memberlist message types (only ever appended to upstream)
PING, INDIRECT_PING, ACK, SUSPECT, ALIVE, DEAD, PUSH_PULL, COMPOUND = 0, 1, 2, 3, 4, 5, 6, 7
USER, COMPRESS, ENCRYPT, NACK, HAS_CRC, ERR = 8, 9, 10, 11, 12, 13
HAS_LABEL = 244

#: pushPull node states
STATE_ALIVE, STATE_SUSPECT, STATE_DEAD, STATE_LEFT = 0, 1, 2, 3

#: What we advertise: protocol 1..5 speaking 2, delegate 2..5 speaking 4 (fits serf 0.7 to 0.10).
VSN = bytes([1, 5, 2, 2, 5, 4])

UDP_BUFFER = 1400
MAX_STREAM = 20 * 2**20


class DecodeError(ValueError):
    """A packet or stream that does not parse (dropped and counted, never raised further)."""


# ----------------------------------------------------------------------------- msgpack


def pack(obj: Any) -> bytes:
    """Encode like Go's zero-value ``MsgpackHandle``: str and bytes as legacy raw."""
    data: bytes = msgpack.packb(obj, use_bin_type=False)
    return data


def unpack(data: bytes) -> Any:
    """Decode one msgpack object, keeping raw strings as bytes."""
    try:
        return msgpack.unpackb(data, raw=True, strict_map_key=False)
    except Exception as e:
        raise DecodeError(f"bad msgpack: {e}") from e


def fields(obj: Any) -> dict[str, Any]:
    """A decoded Go struct (a map keyed by field name) with ``str`` keys."""
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a map, got {type(obj).__name__}")
    return {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v
        for k, v in obj.items()
    }


def text(value: Any) -> str:
    """A Go string field (raw bytes on the wire) as ``str``."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def raw(value: Any) -> bytes:
    """A Go ``[]byte`` field: raw, bin, or (Go accepts it) an array of small ints."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        try:
            return bytes(value)
        except (TypeError, ValueError) as e:
            raise DecodeError("bad byte array") from e
    raise DecodeError(f"expected bytes, got {type(value).__name__}")


def integer(value: Any) -> int:
    """A Go integer field (missing = 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"expected an integer, got {type(value).__name__}")
    return value


def encode(msg_type: int, body: Any) -> bytes:
    """One message: its type byte then its msgpack body."""
    return bytes([msg_type]) + pack(body)


# ----------------------------------------------------------------------------- compound


def compound(parts: Sequence[bytes]) -> bytes:
    """Up to 255 messages in one packet: count, u16 lengths, then the parts."""
    if not 0 < len(parts) <= 255:
        raise ValueError("a compound holds 1..255 messages")
    head = bytes([COMPOUND, len(parts)]) + b"".join(struct.pack(">H", len(p)) for p in parts)
    return head + b"".join(parts)


def split_compound(body: bytes) -> list[bytes]:
    """The parts of a compound body (after the type byte); a truncated tail is dropped."""
    if not body:
        raise DecodeError("empty compound")
    count = body[0]
    if len(body) < 1 + 2 * count:
        raise DecodeError("truncated compound header")
    lengths = struct.unpack(f">{count}H", body[1 : 1 + 2 * count])
    parts, at = [], 1 + 2 * count
    for length in lengths:
        if at + length > len(body):
            break  # memberlist tolerates (and logs) a truncated tail
        parts.append(body[at : at + length])
        at += length
    return parts


def batch(messages: Iterable[bytes], limit: int = UDP_BUFFER) -> list[bytes]:
    """Pack messages into as few packets as fit ``limit`` (compound when >1)."""
    packets: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for msg in messages:
        cost = len(msg) + 2
        if group and (size + cost + 2 > limit or len(group) == 255):
            packets.append(group[0] if len(group) == 1 else compound(group))
            group, size = [], 0
        group.append(msg)
        size += cost
    if group:
        packets.append(group[0] if len(group) == 1 else compound(group))
    return packets


# ----------------------------------------------------------------------------- CRC, label


def add_crc(packet: bytes) -> bytes:
    """Prefix ``hasCrc`` and the CRC-32/IEEE (big-endian) of ``packet``."""
    return bytes([HAS_CRC]) + struct.pack(">I", zlib.crc32(packet)) + packet


def strip_label(data: bytes) -> tuple[bytes, bytes]:
    """``(label, rest)``; a stock agent sends no label."""
    if data and data[0] == HAS_LABEL:
        if len(data) < 2 or data[1] == 0 or len(data) < 2 + data[1]:
            raise DecodeError("bad label header")
        return data[2 : 2 + data[1]], data[2 + data[1] :]
    return b"", data


# ----------------------------------------------------------------------------- LZW

_CLEAR, _EOF, _MAX_WIDTH = 256, 257, 12


def lzw_encode(data: bytes) -> bytes:
    """Go's ``compress/lzw`` writer (LSB order, 8-bit literals), bit for bit."""
    out = bytearray()
    acc = nbits = 0
    width, hi, overflow = 9, _EOF, 512
    table: dict[tuple[int, int], int] = {}

    def write(code: int) -> None:
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    def inc_hi() -> bool:
        nonlocal width, hi, overflow
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == (1 << _MAX_WIDTH) - 1:
            write(_CLEAR)
            width, hi, overflow = 9, _EOF, 512
            table.clear()
            return True
        return False

    write(_CLEAR)
    if data:
        code = data[0]
        for x in data[1:]:
            found = table.get((code, x))
            if found is not None:
                code = found
                continue
            write(code)
            key, code = (code, x), x
            if not inc_hi():
                table[key] = hi
        write(code)
        inc_hi()
    write(_EOF)
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def lzw_decode(data: bytes, limit: int = MAX_STREAM) -> bytes:
    """Go's ``compress/lzw`` reader; raises DecodeError on an invalid code or no EOF."""
    out = bytearray()
    width, hi, overflow = 9, _EOF, 512
    last: int | None = None
    table: dict[int, bytes] = {}
    acc = nbits = pos = 0

    def expand(code: int) -> bytes:
        return bytes([code]) if code < _CLEAR else table[code]

    while True:
        while nbits < width:
            if pos >= len(data):
                raise DecodeError("lzw: missing EOF code")
            acc |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = acc & ((1 << width) - 1)
        acc >>= width
        nbits -= width
        if code == _CLEAR:
            width, hi, overflow, last = 9, _EOF, 512, None
            continue
        if code == _EOF:
            return bytes(out)
        if code < _CLEAR:
            entry = bytes([code])
        elif code == hi and last is not None:
            prev = expand(last)
            entry = prev + prev[:1]
        elif code < hi and code in table:
            entry = table[code]
        else:
            raise DecodeError("lzw: invalid code")
        if last is not None:
            table[hi] = expand(last) + entry[:1]
        out += entry
        if len(out) > limit:
            raise DecodeError("lzw: output too large")
        last, hi = code, hi + 1
        if hi >= overflow:
            if width == _MAX_WIDTH:
                last, hi = None, hi - 1
            else:
                width += 1
                overflow <<= 1


def compress(message: bytes) -> bytes:
    """A ``compress`` message wrapping ``message`` (type byte included)."""
    return encode(COMPRESS, {"Algo": 0, "Buf": lzw_encode(message)})


def decompress(body: Any) -> bytes:
    """The message inside a decoded ``compress`` body."""
    f = fields(body)
    if integer(f.get("Algo")) != 0:
        raise DecodeError("unknown compression algorithm")
    return lzw_decode(raw(f.get("Buf")))


# ----------------------------------------------------------------------------- AES-GCM


def decode_key(key: str) -> bytes:
    """A base64 ``cluster_encrypt_key`` as AES key bytes (16, 24 or 32 of them)."""
    try:
        data = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("cluster_encrypt_key is not valid base64") from e
    if len(data) not in (16, 24, 32):
        raise ValueError("cluster_encrypt_key must be 16, 24 or 32 bytes")
    return data


def keygen(size: int = 16) -> str:
    """A fresh random key, base64 (what ``kong cluster keygen`` prints)."""
    return base64.b64encode(os.urandom(size)).decode()


def encrypt(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """memberlist encryption version 1: ``01 | nonce | AES-GCM(plaintext)``."""
    nonce = os.urandom(12)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext, aad or None)


def decrypt(keys: Sequence[bytes], blob: bytes, aad: bytes = b"") -> bytes:
    """Try every key of the ring; version 0 blobs carry PKCS#7 padding."""
    if len(blob) < 1 + 12 + 16 or blob[0] > 1:
        raise DecodeError("bad encrypted payload")
    nonce, body = blob[1:13], blob[13:]
    for key in keys:
        try:
            plain = AESGCM(key).decrypt(nonce, body, aad or None)
        except InvalidTag:
            continue
        if blob[0] == 0:
            pad = plain[-1] if plain else 0
            if not 0 < pad <= 16 or pad > len(plain):
                raise DecodeError("bad padding")
            plain = plain[:-pad]
        return plain
    raise DecodeError("no installed key could decrypt the message")


def seal_stream(key: bytes, message: bytes) -> bytes:
    """An encrypted TCP stream: ``0a | u32 length | blob`` with the header as AAD."""
    length = 1 + 12 + len(message) + 16
    header = bytes([ENCRYPT]) + struct.pack(">I", length)
    nonce = os.urandom(12)
    return header + b"\x01" + nonce + AESGCM(key).encrypt(nonce, message, header)


# ----------------------------------------------------------------------------- packets


def open_packet(data: bytes, keys: Sequence[bytes]) -> list[bytes]:
    """Unwrap one UDP datagram into its messages (each starting with its type byte).

    Order as memberlist's ingestPacket: label, decryption (when keyed, plaintext is
    refused), CRC check, then compound and compress recursively.
    """
    label, data = strip_label(data)
    if keys:
        data = decrypt(keys, data, label)
    if data and data[0] == HAS_CRC:
        if len(data) < 5 or struct.unpack(">I", data[1:5])[0] != zlib.crc32(data[5:]):
            raise DecodeError("bad CRC")
        data = data[5:]
    return _expand(data, 0)


def _expand(msg: bytes, depth: int) -> list[bytes]:
    if not msg:
        raise DecodeError("empty message")
    if depth > 4:
        raise DecodeError("messages nested too deep")
    if msg[0] == COMPOUND:
        return [m for part in split_compound(msg[1:]) for m in _expand(part, depth + 1)]
    if msg[0] == COMPRESS:
        return _expand(decompress(unpack(msg[1:])), depth + 1)
    return [msg]


def seal_packet(packet: bytes, key: bytes | None, crc: bool = False) -> bytes:
    """Wrap an outgoing datagram: optional CRC, then encryption."""
    if crc:
        packet = add_crc(packet)
    return encrypt(key, packet) if key else packet
