"""Speak English text into 16 kHz wav files with espeak-ng: a standalone script, run only as a subprocess.

    python -m hftl.builtin.espeak_worker [--jobs N] < jobs.jsonl

espeak-ng is GPL-3.0 and hftl is Apache-2.0, so hftl keeps it at arm's length: no hftl module imports this
script (hftl.builtin.spoken starts it with `subprocess`), and this script imports nothing from hftl. It loads
libespeak-ng from the PyPI package `espeakng-loader` through ctypes (falling back to an `espeak-ng` program on
PATH), and talks to its parent only through pipes and the files it writes.

Protocol: one JSON job a line on stdin, `{"text", "voice", "rate", "pitch", "out"}` (voice `accent+variant`
such as `en-us+m3`; rate in words per minute, 80-450; pitch 0-99). One JSON line a job on stdout, in the
order jobs finish: `{"out": ..., "seconds": 1.23}`, or `{"out": ..., "error": "..."}`. Exit status 0 when
every job was written, 1 when one failed, 3 when no espeak-ng can be found (stderr names the pip command).

Each clip is synthesised in a forked child of a process that has never spoken: libespeak-ng keeps state
between utterances in C statics (the pitch flutter index, the wave phase), so the n-th clip of a process
depends on the clips before it. Forked, every clip comes out as a fresh process would make it, byte-identical
whatever the batch, order or number of parallel jobs; breath noise is seeded too (RANDOM_SEED). A clip costs
about 10 ms (most of it the child's first utterance); in one process it would be 2-3 ms, but order-dependent.
The `espeak-ng` program (one process a clip) is fresh anyway, but its breath noise is not seeded.

Example:
    $ echo '{"text": "seven", "voice": "en-us+f2", "rate": 160, "pitch": 50, "out": "/tmp/7.wav"}' \\
        | python -m hftl.builtin.espeak_worker
    {"out": "/tmp/7.wav", "seconds": 0.52}
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

INSTALL = 'pip install espeakng-loader==0.2.4 (or the speech-data extra: pip install -e ".[speech-data]")'
EXIT_NO_ESPEAK = 3
OUTPUT_RATE = 16_000
SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns once the synth callback has had every sample
RATE, PITCH = 1, 3  # espeak_PARAMETER: espeakRATE, espeakPITCH
POS_CHARACTER, CHARS_UTF8 = 1, 1
RANDOM_SEED = 0
TRIM_FLOOR_DB = -40.0  # frames this far below the loudest frame are silence ...
TRIM_PAD_SECONDS = 0.05  # ... and this much of it is kept either side, so no onset or release is cut
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Unavailable(Exception):
    """No espeak-ng to speak with (or a library it needs is missing)."""


class LibrarySpeaker:
    """libespeak-ng through ctypes, initialised once in the parent; `speak` runs in the forked children."""

    def __init__(self, library: str, data: str) -> None:
        import numpy as np

        self.np = np
        self.data = Path(data)
        self.lib = lib = ctypes.CDLL(library)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint]
        lib.espeak_Synth.argtypes += [ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = lib.espeak_Initialize(SYNCHRONOUS, 0, str(self.data).encode(), 0)
        if self.rate <= 0:
            raise Unavailable(f"libespeak-ng at {library} could not start with the voice data at {data}; reinstall: {INSTALL}")
        self.chunks: list = []
        self.callback = _CALLBACK(self._collect)  # kept on self: ctypes must not free it while espeak holds it
        lib.espeak_SetSynthCallback(self.callback)
        # The list of voices is read once here, not in every child: choosing a voice reads all ~300 voice files
        # to build it (a third of a clip's time). Listing changes nothing a clip is made from; loading a voice
        # would (the next voice keeps some of its settings), so no voice is chosen here.
        lib.espeak_ListVoices.restype = ctypes.c_void_p
        lib.espeak_ListVoices(None)

    def _collect(self, wav, count: int, events) -> int:
        if wav and count > 0:
            self.chunks.append(self.np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # go on

    def speak(self, text: str, voice: str, rate: int, pitch: int):
        """int16 samples at `self.rate` (22,050 Hz)."""
        accent, _, variant = voice.partition("+")
        # espeak silently ignores an unknown variant, and keeps the last voice on an unknown accent.
        if variant and not (self.data / "voices" / "!v" / variant).is_file():
            raise ValueError(f"no espeak-ng variant {variant!r} in {self.data / 'voices' / '!v'}")
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {accent!r}")
        # Variants with breath noise (f2, f3, f5, victor, ...) draw it from espeak's own generator, seeded anew in
        # every process; a fixed seed makes them the same every run, and leaves the other voices as they were.
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(RANDOM_SEED))
        self.lib.espeak_SetParameter(RATE, int(rate), 0)
        self.lib.espeak_SetParameter(PITCH, int(pitch), 0)
        self.chunks.clear()
        encoded = text.encode() + b"\0"
        status = self.lib.espeak_Synth(encoded, len(encoded), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        return self.np.concatenate(self.chunks) if self.chunks else self.np.zeros(0, self.np.int16)


class ProgramSpeaker:
    """The `espeak-ng` program: one process a clip, so every clip starts fresh anyway."""

    def __init__(self, program: str) -> None:
        self.program = program

    def speak(self, text: str, voice: str, rate: int, pitch: int):
        import soundfile as sf

        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "clip.wav"
            command = [self.program, "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "-w", str(wav), text]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0 or not wav.is_file():
                raise RuntimeError(f"{' '.join(command[:-1])} failed: {done.stderr.strip()[:300]}")
            samples, self.rate = sf.read(wav, dtype="int16")
        return samples


def find_speaker() -> LibrarySpeaker | ProgramSpeaker:
    """libespeak-ng from espeakng-loader, else the `espeak-ng` program on PATH, else Unavailable."""
    try:
        import espeakng_loader
    except ImportError:
        program = shutil.which("espeak-ng")
        if program is None:
            raise Unavailable(
                f"espeak-ng is not available: the Python package espeakng-loader is not installed in {sys.executable} "
                f"and there is no espeak-ng program on PATH. Install it: {INSTALL}"
            ) from None
        _require_audio_libraries()
        return ProgramSpeaker(program)
    _require_audio_libraries()
    return LibrarySpeaker(espeakng_loader.get_library_path(), espeakng_loader.get_data_path())


def _require_audio_libraries() -> None:
    try:
        import numpy  # noqa: F401
        import soundfile  # noqa: F401
        import soxr  # noqa: F401
    except ImportError as err:
        raise Unavailable(f"the espeak worker needs {err.name} (an hftl dependency): pip install numpy soundfile soxr") from None


def write_clip(speaker: LibrarySpeaker | ProgramSpeaker, job: dict) -> dict:
    """Speak one job into its 16 kHz mono 16-bit wav; the result line for it."""
    import numpy as np
    import soundfile as sf
    import soxr

    missing = sorted({"text", "voice", "rate", "pitch", "out"} - set(job))
    if missing:
        raise ValueError(f"the job lacks {', '.join(missing)}")
    samples = speaker.speak(str(job["text"]), str(job["voice"]), int(job["rate"]), int(job["pitch"]))
    audio = soxr.resample(samples.astype(np.float32) / 32768.0, speaker.rate, OUTPUT_RATE)
    audio = np.clip(trim(audio, OUTPUT_RATE), -1.0, 1.0)  # resampling can overshoot full scale a little
    if not audio.size or not np.any(audio):
        raise RuntimeError(f"espeak-ng gave no sound for {job['text']!r} in voice {job['voice']!r}")
    # Encoded in memory, then one write: libsndfile's many small writes and seeks cost ~10x more on some disks.
    encoded = io.BytesIO()
    sf.write(encoded, audio, OUTPUT_RATE, subtype="PCM_16", format="WAV")
    Path(job["out"]).write_bytes(encoded.getvalue())
    return {"out": job["out"], "seconds": round(len(audio) / OUTPUT_RATE, 3)}


def trim(audio, rate: int):
    """Cut the leading and trailing silence, keeping TRIM_PAD_SECONDS of it either side."""
    import numpy as np

    frame = rate // 100
    count = len(audio) // frame
    if count == 0:
        return audio
    energy = np.sqrt((audio[: count * frame].reshape(count, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(energy > energy.max() * 10 ** (TRIM_FLOOR_DB / 20))
    if not loud.size:
        return audio
    pad = int(TRIM_PAD_SECONDS * rate)
    return audio[max(loud[0] * frame - pad, 0) : min((loud[-1] + 1) * frame + pad, len(audio))]


def run_job(speaker: LibrarySpeaker | ProgramSpeaker, line: str) -> dict:
    """The result line for one job line; a bad job is an error line, never an exception."""
    try:
        job = json.loads(line)
    except ValueError as e:
        return {"out": None, "error": f"not a JSON job ({e}): {line[:100]!r}"}
    try:
        return write_clip(speaker, job)
    except Exception as e:  # noqa: BLE001 - every failure becomes that job's error line for the parent to report
        # Kept short: a forked child's result must fit the pipe buffer (64 KiB) before its parent reads it.
        error = f"{type(e).__name__}: {e}"[:1000]
        return {"out": job.get("out") if isinstance(job, dict) else None, "error": error}


def run_forked(speaker: LibrarySpeaker, lines, parallel: int) -> int:
    """Each job in a forked child (a fresh espeak state), up to `parallel` at once; the number that failed."""
    running: dict[int, int] = {}  # child pid -> the read end of its result pipe
    failed = 0
    for line in lines:
        while len(running) >= parallel:
            failed += _reap(running)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: speak, say how it went, and leave without running the parent's clean-ups
            os.close(read_end)
            try:
                os.write(write_end, json.dumps(run_job(speaker, line)).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        running[pid] = read_end
    while running:
        failed += _reap(running)
    return failed


def _reap(running: dict[int, int]) -> int:
    pid, status = os.wait()
    read_end = running.pop(pid)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    result = json.loads(raw) if raw else {"out": None, "error": f"the synthesis child died (wait status {status})"}
    print(json.dumps(result), flush=True)
    return int("error" in result)


def run_in_turn(speaker: LibrarySpeaker | ProgramSpeaker, lines) -> int:
    """Each job in this process, one after another (no fork: Windows; or the program, fresh per clip anyway)."""
    failed = 0
    for line in lines:
        result = run_job(speaker, line)
        print(json.dumps(result), flush=True)
        failed += "error" in result
    return failed


def main(argv: list[str] | None = None) -> int:
    """Read jobs from stdin, write their wavs, print one result line each; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m hftl.builtin.espeak_worker", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="clips synthesised at once")
    args = parser.parse_args(argv)
    try:
        speaker = find_speaker()
    except Unavailable as e:
        print(e, file=sys.stderr)
        return EXIT_NO_ESPEAK
    lines = (line for line in sys.stdin if line.strip())
    if isinstance(speaker, LibrarySpeaker) and hasattr(os, "fork"):
        failed = run_forked(speaker, lines, max(1, args.jobs))
    else:
        failed = run_in_turn(speaker, lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
