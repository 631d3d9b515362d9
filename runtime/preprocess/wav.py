"""The one WAV reader of training and the device: numpy + stdlib only, whole files or streamed blocks.

Reads RIFF/WAVE with PCM samples of 8 (unsigned), 16, 24 or 32 bits, IEEE float of 32 or 64 bits, and
WAVE_FORMAT_EXTENSIBLE with a PCM or float subformat; any number of channels, mixed down to mono by
averaging them. Samples come out as float64 in [-1, 1]: integers divided by 2^(bits-1) (16-bit:
int16 / 32768, exactly what training always used); float samples beyond +-1 (legal in float WAV)
are clipped to +-1. Anything else (A-law, mu-law, ADPCM, big-endian RIFX, RF64, ...) is refused with
one line that names the format and how to convert it.

A header whose data size is 0 or 0xFFFFFFFF (written by `arecord` and other recorders that do not
know the length when they start) means "read to the end of the stream".
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgekit.runtime.errors import InvalidInputError

FORMAT_PCM = 0x0001
FORMAT_FLOAT = 0x0003
FORMAT_EXTENSIBLE = 0xFFFE
FORMAT_NAMES = {0x0002: "Microsoft ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
                0x0031: "GSM 6.10", 0x0055: "MP3"}
CONVERT_HINT = "convert it to PCM, e.g. `ffmpeg -i IN -c:a pcm_s16le OUT.wav`"
BLOCK_FRAMES = 16384  # frames per block when streaming (a 48 kHz stereo 32-bit block is 512 KB)


class WavReader:
    """An open WAV file or stream (a path, or a binary file object such as sys.stdin.buffer).

        with WavReader("talk.wav") as wav:
            wav.rate, wav.channels, wav.bits, wav.encoding, wav.num_frames
            for block in wav.blocks():     # float64 mono blocks in [-1, 1]
                ...
    """

    def __init__(self, source: str | Path | BinaryIO, name: str | None = None) -> None:
        if isinstance(source, (str, Path)):
            path = Path(source)
            self.name = name or str(path)
            if not path.is_file():
                raise InvalidInputError(f"audio file not found: {path}")
            try:
                self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
            except OSError as exc:
                raise InvalidInputError(f"cannot open {path}: {exc.strerror or exc}") from None
            self._owned = True
        else:
            self.name = name or getattr(source, "name", "<stream>")
            self._file, self._owned = source, False
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise

    # -- header --------------------------------------------------------------------------------
    def _fail(self, why: str) -> InvalidInputError:
        return InvalidInputError(f"cannot read {self.name} as a WAV file: {why}")

    def _exact(self, count: int) -> bytes:
        data = _read_fully(self._file, count)
        if len(data) < count:
            raise self._fail("it ends inside its header")
        return data

    def _read_header(self) -> None:
        head = _read_fully(self._file, 12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
            raise self._fail("it does not start with a RIFF/WAVE header")
        if head[:4] != b"RIFF":
            raise self._fail(f"{head[:4].decode()} files (big-endian or over 4 GB) are not supported; "
                             + CONVERT_HINT)
        fmt = None
        while True:
            chunk = _read_fully(self._file, 8)
            if len(chunk) < 8:
                raise self._fail("no 'data' chunk" if fmt else "no 'fmt ' chunk")
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = self._exact(size + (size & 1))[:size]
            elif chunk_id == b"data":
                if fmt is None:
                    raise self._fail("its 'data' chunk comes before the 'fmt ' chunk")
                self._parse_format(fmt)
                self._remaining = None if size in (0, 0xFFFFFFFF) else size
                self.num_frames = None if self._remaining is None else size // self.frame_bytes
                return
            else:  # LIST, fact, cue, ... : skip (RIFF pads odd-sized chunks to even)
                self._exact(size + (size & 1))

    def _parse_format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise self._fail(f"its 'fmt ' chunk is {len(fmt)} bytes long")
        tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == FORMAT_EXTENSIBLE:
            if len(fmt) < 40:
                raise self._fail("its WAVE_FORMAT_EXTENSIBLE header is truncated")
            tag = struct.unpack("<H", fmt[24:26])[0]  # first two bytes of the subformat GUID
        if tag not in (FORMAT_PCM, FORMAT_FLOAT):
            what = FORMAT_NAMES.get(tag, f"format code {tag:#06x}")
            raise InvalidInputError(f"{self.name} holds {what} audio; edgekit reads PCM (8/16/24/32-bit) "
                                    f"and IEEE float (32/64-bit) WAV: {CONVERT_HINT}")
        if channels < 1 or rate < 1:
            raise self._fail(f"its header says {channels} channels at {rate} Hz")
        supported = (8, 16, 24, 32) if tag == FORMAT_PCM else (32, 64)
        if bits not in supported:
            kind = "PCM" if tag == FORMAT_PCM else "float"
            raise InvalidInputError(f"{self.name} has {bits}-bit {kind} samples; edgekit reads "
                                    f"{'/'.join(map(str, supported))}-bit {kind}: {CONVERT_HINT}")
        if block_align != channels * bits // 8:
            raise self._fail(f"block align {block_align} does not match {channels} channels of {bits} bits")
        self.encoding = "pcm" if tag == FORMAT_PCM else "float"
        self.channels, self.rate, self.bits = channels, rate, bits
        self.frame_bytes = block_align

    # -- samples -------------------------------------------------------------------------------
    def blocks(self, frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """Float64 mono blocks of up to `frames` samples until the data (or the stream) ends; a
        trailing partial frame is dropped."""
        step = max(1, frames) * self.frame_bytes
        while True:
            size = step if self._remaining is None else min(step, self._remaining - self._remaining % self.frame_bytes)
            if size <= 0:
                return
            data = _read_fully(self._file, size)
            if self._remaining is not None:
                self._remaining -= len(data)
            usable = len(data) - len(data) % self.frame_bytes
            if usable:
                yield self.decode(data[:usable])
            if len(data) < size:
                return  # the file or stream ended (a truncated file gives what it holds)

    def read(self) -> np.ndarray:
        """All remaining samples (float64 mono)."""
        blocks = list(self.blocks(1 << 20))
        return np.concatenate(blocks) if blocks else np.zeros(0)

    def decode(self, data: bytes) -> np.ndarray:
        """Raw interleaved frames -> float64 mono samples."""
        bits = self.bits
        if self.encoding == "float":
            samples = np.frombuffer(data, "<f4" if bits == 32 else "<f8").astype(np.float64)
            if not np.isfinite(samples).all():
                raise InvalidInputError(f"{self.name} contains NaN or infinite samples")
            np.clip(samples, -1.0, 1.0, out=samples)
        elif bits == 8:  # 8-bit WAV is unsigned, centred on 128
            samples = (np.frombuffer(data, np.uint8).astype(np.float64) - 128.0) / 128.0
        elif bits == 24:
            b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
            value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            samples = (value - ((value & 0x800000) << 1)).astype(np.float64) / 8388608.0
        else:
            samples = np.frombuffer(data, "<i2" if bits == 16 else "<i4").astype(np.float64) / float(1 << (bits - 1))
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1)
        return samples

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> WavReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_fully(stream: BinaryIO, count: int) -> bytes:
    """Read exactly `count` bytes unless the stream ends (pipes return short reads)."""
    parts, got = [], 0
    while got < count:
        part = stream.read(count - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_wav(source: str | Path | BinaryIO, name: str | None = None) -> tuple[np.ndarray, int]:
    """A whole WAV file (a path, or a binary file object such as a server's upload in io.BytesIO) ->
    (float64 mono samples in [-1, 1], sample rate). Raises InvalidInputError (a ValueError) with one
    line for anything it cannot read."""
    name = name or str(source if isinstance(source, (str, Path)) else getattr(source, "name", "<stream>"))
    try:
        with WavReader(source, name) as wav:
            samples = wav.read()
            rate = wav.rate
    except OSError as exc:
        raise InvalidInputError(f"cannot read {name}: {exc.strerror or exc}") from None
    if samples.size == 0:
        raise InvalidInputError(f"{name} holds no samples")
    return samples, rate
