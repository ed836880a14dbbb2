"""A soundfile workload for scripts/realworld: writes and reads WAV, FLAC and OGG files through
soundfile (cffi in ABI mode over libsndfile) and checks that the data round-trips.

Usage: soundfile_roundtrip.py OUTCOMES.json [ROUNDS]

Each check (format, subtype, channels, round, way of reading) is one named outcome, "passed" or
"failed: why", written to OUTCOMES.json; exit status 1 if any failed. The signal is seeded, so an
untraced and a traced run make the same files.
"""
import json
import os
import sys
import tempfile

import numpy as np
import soundfile as sf

RATE = 44100
# (format, subtype, largest error allowed after the round trip: lossless formats are exact to
# their quantisation step, Vorbis is lossy).
CASES = [
    ("WAV", "PCM_16", 1 / 32768),
    ("WAV", "FLOAT", 0.0),
    ("FLAC", "PCM_16", 1 / 32768),
    ("FLAC", "PCM_24", 1 / 8388608),
    ("OGG", "VORBIS", 0.05),
]


def signal(rng, frames, channels):
    t = np.arange(frames) / RATE
    tones = [0.4 * np.sin(2 * np.pi * f * t) for f in (220.0, 330.0, 440.0)[:channels]]
    data = np.stack(tones, axis=1) + 0.01 * rng.standard_normal((frames, channels))
    return np.clip(data, -0.99, 0.99).astype(np.float32)


def check(got, want, tolerance, what):
    if got.shape != want.shape:
        return f"failed: {what}: shape {got.shape}, expected {want.shape}"
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    if err > tolerance + 1e-12:
        return f"failed: {what}: max error {err:.3g} > {tolerance:.3g}"
    return "passed"


def main():
    out = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    rng = np.random.default_rng(1234)
    outcomes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for fmt, subtype, tolerance in CASES:
                for channels in (1, 2):
                    name = f"{fmt}-{subtype}-{channels}ch-round{r}"
                    path = os.path.join(tmp, f"{name}.{fmt.lower()}")
                    data = signal(rng, RATE // 4 + 997 * r, channels)
                    try:
                        sf.write(path, data, RATE, format=fmt, subtype=subtype)
                        info = sf.info(path)
                        if (info.samplerate, info.channels, info.subtype) != (RATE, channels, subtype):
                            outcomes[name + "::info"] = f"failed: info {info.samplerate} {info.channels} {info.subtype}"
                        else:
                            outcomes[name + "::info"] = "passed"
                        got, rate = sf.read(path, dtype="float32", always_2d=True)
                        outcomes[name + "::read"] = check(got, data, tolerance, "read") if rate == RATE else f"failed: rate {rate}"
                        # Block-wise reading: many small calls into libsndfile.
                        blocks = list(sf.blocks(path, blocksize=512, dtype="float32", always_2d=True))
                        outcomes[name + "::blocks"] = check(np.concatenate(blocks), data, tolerance, "blocks")
                        # Seek and read a window through an open SoundFile.
                        with sf.SoundFile(path) as f:
                            f.seek(1000)
                            part = f.read(2000, dtype="float32", always_2d=True)
                        outcomes[name + "::seek"] = check(part, data[1000:3000], tolerance, "seek")
                    except Exception as e:  # noqa: BLE001 - every failure is an outcome
                        outcomes[name + "::error"] = f"failed: {type(e).__name__}: {e}"
    with open(out, "w") as f:
        json.dump(outcomes, f, indent=0, sort_keys=True)
    failed = sum(1 for v in outcomes.values() if v != "passed")
    print(f"{len(outcomes)} checks, {failed} failed")
    sys.exit(1 if failed else 0)


main()
