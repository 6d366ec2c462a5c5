"""What a file *is*, from its bytes and from what FFmpeg finds in it (never from its name).

:func:`stica.data.decode.decode_media` asks these questions before decoding: which video stream
is a real video (cover art is not), whether a file FFmpeg cannot open still looks like a damaged
media file (rejected: the user lost a video) or like something else (skipped: a README, a PDF).
"""

from __future__ import annotations

from pathlib import Path

import av

SNIFF_BYTES = 400  # enough for every signature below (MPEG-TS needs three 188-byte packets)

# Codecs with which FFmpeg renders *text* as a picture (ANSI art, binary text): a ``.nfo`` or a
# ``.bin`` file opens as a "video" through them, but no one wants it stored as one.
TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})

# Leading bytes of the containers and elementary streams that real downloads come in.
_PREFIXES = (
    b"\x1a\x45\xdf\xa3",  # Matroska, WebM
    b"OggS",  # Ogg (Theora, Vorbis, Opus)
    b"RIFF",  # AVI, WAV
    b"FLV",
    b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF, WMV, WMA
    b".RMF",  # RealMedia
    b"\x00\x00\x01\xba",  # MPEG program stream (.mpg, .vob)
    b"\x00\x00\x01\xb3",  # MPEG-1/2 video elementary stream (.m1v, .m2v)
    b"\x00\x00\x00\x01",  # H.264 / HEVC Annex B elementary stream
    b"FWS",  # Flash (.swf), uncompressed
    b"CWS",  # Flash, zlib
    b"ZWS",  # Flash, LZMA
    b"ID3",  # MP3 with a tag
    b"fLaC",
    b"FORM",  # AIFF
    b".snd",  # Sun AU
    b"#!AMR",
    b"DKIF",  # IVF (VP8/VP9/AV1)
    b"YUV4MPEG2",
    b"nut/multimedia container",
)
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")  # mp4, mov, 3gp


def looks_like_media(path: str | Path) -> bool:
    """True when the first bytes of ``path`` carry a known audio/video container signature.

    Used only for files FFmpeg could not open: a signature means a damaged media file (a
    truncated download), no signature means the file was never media.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError:
        return False
    if head.startswith(_PREFIXES) or head[4:8] in _ISO_BOXES:
        return True
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio / ADTS sync
        return True
    # MPEG-TS (188-byte packets) and M2TS (192-byte packets with a 4-byte prefix)
    return all(len(head) > i and head[i] == 0x47 for i in (0, 188, 376)) or all(
        len(head) > i and head[i] == 0x47 for i in (4, 196)
    )


def is_cover_art(stream) -> bool:
    """A video stream that is a picture attached to audio (album art, a thumbnail), not video."""
    disposition = stream.disposition
    flags = av.stream.Disposition
    return bool(disposition & flags.attached_pic) or bool(disposition & flags.timed_thumbnails)


def video_candidates(container) -> list:
    """The video streams that may be real video, FFmpeg's pick (``av_find_best_stream``) first.

    Cover art flagged as such is left out; cover art that lost the flag (Matroska keeps it as
    a plain one-frame MJPEG stream, sometimes before the real video) stays a candidate and is
    recognised when it decodes to a single picture.
    """
    streams = [s for s in container.streams.video if not is_cover_art(s)]
    if len(streams) > 1:
        try:
            best = container.streams.best("video")
        except (ValueError, av.FFmpegError):
            best = None
        if best is not None:
            streams.sort(key=lambda s: s.index != best.index)  # stable: the rest keep their order
    return streams


def no_video_reason(container) -> str:
    """Why a container without a usable video stream is skipped (one line)."""
    if any(is_cover_art(s) for s in container.streams.video):
        return "no video stream (audio with cover art)"
    if container.streams.audio:
        return "no video stream (audio only)"
    return "not a media file (no audio or video stream)"


def no_audio_reason(container) -> str:
    """Why a container is skipped by an audio-only layout (one line)."""
    if container.streams.video:
        return "no audio stream"
    return "not a media file (no audio or video stream)"


def is_text_art(stream) -> bool:
    """True for the pseudo-video FFmpeg makes of text files (``.nfo``, ``.ans``, ``.bin``)."""
    ctx = stream.codec_context
    return ctx is not None and ctx.name in TEXT_ART_CODECS
