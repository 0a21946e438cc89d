"""memberlist wire format: golden vectors captured from a real serf agent, plus codec rules.

``cluster_vectors.json`` was captured by ``tests/cluster/capture_vectors.py`` from
Debian's serf 0.9.4: the agent's push/pull stream (LZW-compressed; encrypted in the
second set; 152 members in the third, long enough to fill and clear the LZW table) and
the UDP datagrams it sent us afterwards.  These keep the codec
honest where no agent is installed.
"""

from __future__ import annotations

import json
import os
import struct

import hypothesis.strategies as st
from hypothesis import given, settings
from twisted.trial.unittest import SynchronousTestCase

from kongtx.cluster import codec, transport
from kongtx.cluster.codec import DecodeError

with open(os.path.join(os.path.dirname(__file__), "cluster_vectors.json")) as _f:
    VECTORS = json.load(_f)


def _keys(mode: str) -> list[bytes]:
    key = VECTORS[mode]["key"]
    return [codec.decode_key(key)] if key else []


class GoldenVectorTests(SynchronousTestCase):
    def _push_pull(self, mode: str) -> tuple[dict[str, object], list[dict[str, object]], bytes]:
        data = bytes.fromhex(VECTORS[mode]["stream"])
        found = transport.parse_stream(data, _keys(mode))
        assert found is not None
        (kind, body), used = found
        self.assertEqual((kind, used), (codec.PUSH_PULL, len(data)))
        header, nodes, user = body
        return codec.fields(header), nodes, user

    def test_agent_push_pull_decodes(self) -> None:
        """The agent's LZW-compressed push/pull names go1 with its Vsn, ``ff 80`` meta and serf state."""
        for mode in ("plain", "encrypted"):
            header, nodes, user = self._push_pull(mode)
            self.assertTrue(header["Join"])
            go1 = [n for n in nodes if codec.text(n["Name"]) == "go1"][0]
            self.assertEqual(codec.raw(go1["Vsn"]), bytes([1, 5, 2, 2, 5, 5]))
            self.assertEqual(codec.raw(go1["Meta"]), b"\xff\x80")
            self.assertEqual(user[0], 2)
            state = codec.fields(codec.unpack(user[1:]))
            self.assertIn(b"go1", state["StatusLTimes"])

    def test_plain_stream_is_lzw_and_our_encoder_matches_go_bit_for_bit(self) -> None:
        """Re-encoding the agent's decompressed stream with our LZW gives Go's exact bytes."""
        data = bytes.fromhex(VECTORS["plain"]["stream"])
        self.assertEqual(data[0], codec.COMPRESS)
        body = codec.fields(codec.unpack(data[1:]))
        buf = codec.raw(body["Buf"])
        plain = codec.lzw_decode(buf)
        self.assertEqual(plain[0], codec.PUSH_PULL)
        self.assertEqual(codec.lzw_encode(plain), buf)

    def test_large_push_pull_fills_the_lzw_table_and_matches_go(self) -> None:
        """A 152-member push/pull (LZW table filled and cleared mid-stream) decodes; our encoder gives Go's bytes."""
        data = bytes.fromhex(VECTORS["large"]["stream"])
        found = transport.parse_stream(data, [])
        assert found is not None
        (kind, (header, nodes, user)), _ = found
        self.assertEqual((kind, len(nodes)), (codec.PUSH_PULL, 152))
        buf = codec.raw(codec.fields(codec.unpack(data[1:]))["Buf"])
        # at most 12 bits per code: more than 4096 codes means at least one table reset
        self.assertGreater(len(buf) * 8 // 12, 4096)
        self.assertEqual(codec.lzw_encode(codec.lzw_decode(buf)), buf)

    def test_encrypted_stream_needs_the_key(self) -> None:
        """An encrypted stream with a wrong key, or none, is refused."""
        data = bytes.fromhex(VECTORS["encrypted"]["stream"])
        with self.assertRaises(DecodeError):
            transport.parse_stream(data, [codec.decode_key(codec.keygen(32))])
        with self.assertRaises(DecodeError):
            transport.parse_stream(data, [])

    def test_agent_datagrams_decode(self) -> None:
        """Every captured datagram unwraps into known messages; pings name our node."""
        for mode in ("plain", "encrypted"):
            kinds = []
            for hex_packet in VECTORS[mode]["packets"]:
                for msg in codec.open_packet(bytes.fromhex(hex_packet), _keys(mode)):
                    kinds.append(msg[0])
                    if msg[0] == codec.PING:
                        ping = codec.fields(codec.unpack(msg[1:]))
                        self.assertEqual(codec.text(ping["Node"]), "capture")
            self.assertIn(codec.PING, kinds)
            self.assertTrue(set(kinds) <= {0, 2, 3, 4, 5, 8})

    def test_encrypted_datagrams_refused_without_the_key(self) -> None:
        """A keyed agent's datagram does not open with another key."""
        packet = bytes.fromhex(VECTORS["encrypted"]["packets"][0])
        with self.assertRaises(DecodeError):
            codec.open_packet(packet, [codec.decode_key(codec.keygen(16))])


class MsgpackTests(SynchronousTestCase):
    def test_strings_and_bytes_are_legacy_raw(self) -> None:
        """str and bytes both encode as msgpack raw (fixstr/0xda), never str8 or bin."""
        self.assertEqual(codec.pack("abc"), b"\xa3abc")
        self.assertEqual(codec.pack(b"\x01\x02"), b"\xa2\x01\x02")
        self.assertEqual(codec.pack(b"x" * 40)[:1], b"\xda")

    def test_byte_fields_accept_go_alternatives(self) -> None:
        """[]byte fields read raw, str, or an array of small ints; bad types raise DecodeError."""
        self.assertEqual(codec.raw([1, 5, 2]), bytes([1, 5, 2]))
        self.assertEqual(codec.raw(None), b"")
        with self.assertRaises(DecodeError):
            codec.raw(3)
        with self.assertRaises(DecodeError):
            codec.integer("x")


class FramingTests(SynchronousTestCase):
    def test_compound_round_trip_and_truncated_tail(self) -> None:
        """Compound parts come back in order; a truncated last part is dropped, not raised."""
        parts = [b"\x00abc", b"\x02de"]
        packet = codec.compound(parts)
        self.assertEqual(codec.split_compound(packet[1:]), parts)
        self.assertEqual(codec.split_compound(packet[1:-1]), parts[:1])
        with self.assertRaises(DecodeError):
            codec.split_compound(b"\x05\x00")

    def test_batch_respects_the_udp_buffer(self) -> None:
        """Batched messages never exceed the limit and keep every message."""
        msgs = [bytes([codec.ALIVE]) + os.urandom(300) for _ in range(10)]
        packets = codec.batch(msgs, 1400)
        self.assertTrue(all(len(p) <= 1400 for p in packets))
        out = [m for p in packets for m in codec.open_packet(p, [])]
        self.assertEqual(out, msgs)

    def test_crc_checked(self) -> None:
        """A hasCrc packet with a wrong checksum is refused; a right one opens."""
        good = codec.add_crc(codec.encode(codec.PING, {"SeqNo": 1}))
        self.assertEqual(len(codec.open_packet(good, [])), 1)
        bad = good[:1] + struct.pack(">I", 0) + good[5:]
        with self.assertRaises(DecodeError):
            codec.open_packet(bad, [])

    def test_label_stripped(self) -> None:
        """A label prefix is taken off before the message."""
        self.assertEqual(codec.strip_label(b"\xf4\x02ab\x00x"), (b"ab", b"\x00x"))
        with self.assertRaises(DecodeError):
            codec.strip_label(b"\xf4\x05ab")

    def test_incremental_stream_parse(self) -> None:
        """Every strict prefix of a push/pull stream is 'not yet'; the whole is one message."""
        head = codec.encode(codec.PUSH_PULL, {"Nodes": 1, "UserStateLen": 3, "Join": True})
        msg = head + codec.pack({"Name": "n", "State": 0}) + b"\x02\x80\x80"
        for cut in range(1, len(msg)):
            self.assertIsNone(transport.parse_stream(msg[:cut], []))
        found = transport.parse_stream(msg + b"extra", [])
        assert found is not None
        self.assertEqual(found[1], len(msg))

    def test_plaintext_stream_refused_when_keyed(self) -> None:
        """With encryption on, a plaintext stream is an error (memberlist verifies incoming)."""
        with self.assertRaises(DecodeError):
            transport.parse_stream(codec.encode(codec.PING, {"SeqNo": 1}), [b"k" * 16])


class CryptoTests(SynchronousTestCase):
    def test_round_trip_and_wrong_key(self) -> None:
        """Version-1 blobs decrypt with any key of the ring and fail with others."""
        k1, k2 = codec.decode_key(codec.keygen(16)), codec.decode_key(codec.keygen(32))
        blob = codec.encrypt(k1, b"hello")
        self.assertEqual(codec.decrypt([k2, k1], blob), b"hello")
        with self.assertRaises(DecodeError):
            codec.decrypt([k2], blob)
        with self.assertRaises(DecodeError):
            codec.decrypt([k1], blob[:10])

    def test_version_zero_padding_removed(self) -> None:
        """Version 0 (memberlist protocol 1) pads with PKCS#7; the padding is removed."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key, nonce = b"k" * 16, b"n" * 12
        blob = b"\x00" + nonce + AESGCM(key).encrypt(nonce, b"abc" + bytes([13]) * 13, None)
        self.assertEqual(codec.decrypt([key], blob), b"abc")

    def test_stream_header_is_authenticated(self) -> None:
        """A sealed stream opens; changing its header breaks authentication."""
        key = b"k" * 16
        sealed = codec.seal_stream(key, codec.encode(codec.PING, {"SeqNo": 7}))
        found = transport.parse_stream(sealed, [key])
        assert found is not None
        self.assertEqual(found[0][0], codec.PING)
        with self.assertRaises(DecodeError):
            transport.parse_stream(sealed[:4] + b"\x00" + sealed[5:] + b"\x00", [key])

    def test_key_validation(self) -> None:
        """Keys must be base64 of 16, 24 or 32 bytes."""
        with self.assertRaises(ValueError):
            codec.decode_key("not base64!")
        with self.assertRaises(ValueError):
            codec.decode_key("YWJj")


class LZWTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(st.binary(max_size=3000))
    def test_round_trip(self, data: bytes) -> None:
        """Anything we compress decompresses to itself."""
        self.assertEqual(codec.lzw_decode(codec.lzw_encode(data)), data)

    def test_full_table_resets(self) -> None:
        """Inputs that fill the 4096-code table (clear code mid-stream) still round-trip."""
        data = os.urandom(40000) + bytes(range(256)) * 50
        self.assertEqual(codec.lzw_decode(codec.lzw_encode(data)), data)

    def test_garbage_raises_decode_error(self) -> None:
        """A stream without EOF or with an invalid code is a DecodeError."""
        with self.assertRaises(DecodeError):
            codec.lzw_decode(b"")
        with self.assertRaises(DecodeError):
            codec.lzw_decode(b"\xff\xff\xff\xff")

    def test_compress_message_round_trip(self) -> None:
        """A compress message wraps a whole message that open_packet unwraps."""
        msg = codec.encode(codec.ALIVE, {"Node": "x" * 200, "Incarnation": 1})
        self.assertEqual(codec.open_packet(codec.compress(msg), []), [msg])
