"""What Whisper base costs on a CPU per clip, by encoder window: forward, forward + backward, and the feature
cache's size. The numbers behind `model.window_seconds` and the per-1,000-clip costs in docs/guides/speech.md.

    python benchmarks/whisper_window.py                      # 30, 5 and 2 s windows, 2 threads
    python benchmarks/whisper_window.py --windows 30 3 --threads 2 --batch 8

Times are the median of `--repeats` batches after one warm-up, divided by the batch size. The cache holds the
frozen encoder's output per clip (positions x 512 floats); head_only and the decoder-only speech-recognition
mode read it after the first epoch instead of running the encoder.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _timed(step, repeats: int) -> float:
    step()  # warm-up: allocations, oneDNN kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(window: int, batch: int, repeats: int) -> dict[str, float]:
    from transformers import AutoProcessor, WhisperForAudioClassification

    from hftl.builtin import whisper_base
    from hftl.models.audio_window import shorten_audio_window

    folder = whisper_base()
    model = WhisperForAudioClassification.from_pretrained(folder, num_labels=10)
    processor = AutoProcessor.from_pretrained(folder)
    if window != 30:
        shorten_audio_window(model, processor, window)
    clips = [torch.randn(16000).numpy() * 0.1 for _ in range(batch)]
    features = processor.feature_extractor(clips, sampling_rate=16000, return_tensors="pt").input_features
    encoder = model.encoder

    def forward() -> None:
        with torch.no_grad():
            encoder(features)

    def backward() -> None:
        encoder(features).last_hidden_state.float().pow(2).mean().backward()

    model.eval()
    fwd = _timed(forward, repeats) / batch
    model.train()
    bwd = _timed(backward, repeats) / batch
    positions = encoder.embed_positions.num_embeddings
    return {"window_s": window, "positions": positions, "forward_s": fwd, "forward_backward_s": bwd,
            "cache_mb": positions * model.config.d_model * 4 / 1e6}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[30, 5, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| window (s) | encoder positions | forward (s/clip) | forward + backward (s/clip) | cache (MB/clip) |")
    print("|---|---|---|---|---|")
    for window in args.windows:
        r = measure(window, args.batch, args.repeats)
        print(
            f"| {window} | {r['positions']} | {r['forward_s']:.3f} | {r['forward_backward_s']:.3f} | {r['cache_mb']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
