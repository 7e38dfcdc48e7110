#!/usr/bin/env python3
"""How exactly the NV12 kernel's arithmetic (tests/nv12_reference.py, its step-for-step transcription; with
--kernel the CUDA kernel itself) reproduces the CPU path the model was validated with: OpenCV's FFmpeg decode
(swscale yuv420p → BGR) then ``preprocess.resize_into``.

For each clip, the decoder's own NV12 pictures (ffmpeg's ``-pix_fmt nv12`` output, or NVDEC's through
PyNvVideoCodec where there is no ffmpeg binary) against OpenCV's decoded frames, per step:
  colour  NV12 → BGR at full size vs OpenCV's frame, for each colour matrix (the best one is used after);
  row     NV12 → row (the kernel's whole job) vs ``resize_into(opencv_frame, row)``, per output size.
Figures: % of bytes exactly equal, the mean and the largest difference. Prints OpenCV's version and its
FFmpeg/IPP build lines first (the result depends on them).

    python tools/nv12_match.py                                    # vtest_1080p (if present), demo, odd sizes
    python tools/nv12_match.py media/vtest_1080p.mp4 --frames 50 --json-out out/nv12_match.json
    python tools/nv12_match.py CLIP --nv12-from nvdec --kernel    # on the GPU host (no ffmpeg there)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.gpu.nv12 import MATRICES, ColorMatrix  # noqa: E402
from streamer.paths import DEMO_DIR  # noqa: E402
from streamer.preprocess import resize_into  # noqa: E402

DEFAULT_SIZES = "32x32,64x64,224x224,100x60,x1.25"  # WxH, or xF: F times the clip's size (an upscale)
ODD_CLIPS = (("odd_1002x566.mp4", "1002:566", ["-c:v", "libx264"]),  # width not a multiple of 8 or 16
             ("odd_641x361.mkv", "641:361", ["-c:v", "ffv1"]))  # odd height: swscale's generic path


def build_lines() -> list[str]:
    keys = ("FFMPEG", "avcodec", "avformat", "swscale", "Intel IPP", "CPU/HW features", "Baseline",
            "Dispatched")
    return [line.strip() for line in cv2.getBuildInformation().splitlines()
            if any(line.strip().startswith(k) for k in keys)]


def stats(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    return {"exact_pct": float((diff == 0).mean() * 100), "mean_diff": float(diff.mean()),
            "max_diff": int(diff.max())}


def merge(acc: dict[str, Any], s: dict[str, float], frames: int) -> None:
    """Running means of exact_pct and mean_diff, and the max of max_diff, over frames."""
    for key in ("exact_pct", "mean_diff"):
        acc[key] = (acc.get(key, 0.0) * frames + s[key]) / (frames + 1)
    acc["max_diff"] = max(acc.get("max_diff", 0), s["max_diff"])


def make_odd_clips(source: Path, out_dir: Path, frames: int) -> list[Path]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return []
    made = []
    for name, size, codec in ODD_CLIPS:
        out = out_dir / name
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(source), "-frames:v", str(frames), "-vf",
                        f"scale={size}", *codec, "-pix_fmt", "yuv420p", str(out)], check=True)
        made.append(out)
    return made


def ffmpeg_nv12(path: Path, frames: int, w: int, h: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("nv12_match: no ffmpeg binary on PATH; install ffmpeg, or use --nv12-from nvdec "
                         "(a GPU with PyNvVideoCodec)")
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-frames:v", str(frames), "-f", "rawvideo",
                          "-pix_fmt", "nv12", "-"], capture_output=True, check=True).stdout
    cw, ch = 2 * ((w + 1) // 2), (h + 1) // 2  # chroma rows: U, V interleaved, rounded up
    size = w * h + cw * ch
    for i in range(len(raw) // size):
        frame = np.frombuffer(raw, np.uint8, size, i * size)
        yield frame[:w * h].reshape(h, w), frame[w * h:].reshape(ch, cw)


def nvdec_nv12(path: Path, frames: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """NVDEC's pictures, copied to the host (what the kernel reads on the GPU host)."""
    import pycuda.driver as cuda

    from streamer.gpu.context import PrimaryContext
    from streamer.sources.nvdec import nvc_module, planes_of

    nvc = nvc_module()
    ctx = PrimaryContext.get(0)

    def copy(ptr: int, pitch: int, out: np.ndarray) -> np.ndarray:
        c = cuda.Memcpy2D()
        c.set_src_device(ptr)
        c.src_pitch = pitch
        c.set_dst_host(out)
        c.dst_pitch = out.strides[0]
        c.width_in_bytes, c.height = out.shape[1], out.shape[0]
        c(aligned=True)
        return out

    with ctx.active():
        stream = cuda.Stream()
        demuxer = nvc.CreateDemuxer(str(path))
        decoder = nvc.CreateDecoder(gpuid=0, codec=demuxer.GetNvCodecId(), cudacontext=ctx.handle,
                                    cudastream=int(stream.handle), usedevicememory=True)
        done = 0
        for packet in demuxer:
            for picture in decoder.Decode(packet):
                cuda.Context.synchronize()
                p = planes_of(picture)
                y = copy(p.y_ptr, p.y_pitch, np.empty((p.height, p.width), np.uint8))
                chroma_shape = ((p.height + 1) // 2, 2 * ((p.width + 1) // 2))
                uv = copy(p.uv_ptr, p.uv_pitch, np.empty(chroma_shape, np.uint8))
                yield y, uv
                done += 1
                if done >= frames:
                    return


class KernelRunner:
    """The CUDA kernel on host NV12 pictures: one launch per picture and one batched launch for them all."""

    def __init__(self) -> None:
        import pycuda.driver as cuda

        from streamer.gpu.context import PrimaryContext
        from streamer.gpu.nv12 import Nv12Resizer

        self.cuda = cuda
        self.ctx = PrimaryContext.get(0)
        with self.ctx.active():
            self.resizer = Nv12Resizer.get(self.ctx.handle)

    def run(self, pictures: list[tuple[np.ndarray, np.ndarray]], out_h: int, out_w: int,
            m: ColorMatrix) -> tuple[list[np.ndarray], list[np.ndarray]]:
        from streamer.gpu.nv12 import Nv12Planes

        cuda = self.cuda
        with self.ctx.active():
            stream = cuda.Stream()
            keep, planes = [], []
            for y, uv in pictures:
                dy, duv = cuda.to_device(np.ascontiguousarray(y)), cuda.to_device(np.ascontiguousarray(uv))
                keep += [dy, duv]
                planes.append(Nv12Planes(int(dy), y.shape[1], int(duv), uv.shape[1], y.shape[1], y.shape[0]))
            row = out_h * out_w * 3
            single, batch = cuda.mem_alloc(row * len(planes)), cuda.mem_alloc(row * len(planes))
            for i, p in enumerate(planes):
                self.resizer.launch(p, int(single) + i * row, out_h, out_w, stream, m)
            outs = [int(batch) + i * row for i in range(len(planes))]
            self.resizer.launch_batch(planes, outs, out_h, out_w, stream, m)
            stream.synchronize()
            got = []
            for buf in (single, batch):
                host = np.empty((len(planes), out_h, out_w, 3), np.uint8)
                cuda.memcpy_dtoh(host, buf)
                got.append(list(host))
                buf.free()
            for a in keep:
                a.free()
        return got[0], got[1]


def parse_size(text: str, w: int, h: int) -> tuple[int, int]:
    """(out_w, out_h) from 'WxH' or 'xF'."""
    if text.startswith("x"):
        f = float(text[1:])
        return max(1, round(w * f)), max(1, round(h * f))
    a, b = text.lower().split("x")
    return int(a), int(b)


def measure(path: Path, args: argparse.Namespace, kernel: KernelRunner | None) -> dict[str, Any]:
    sys.path.insert(0, str(Path(args.reference_dir).resolve()))
    from nv12_reference import nv12_resize

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise SystemExit(f"nv12_match: OpenCV cannot open {path}; pass a video file it can decode")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if args.nv12_from == "nvdec":
        source = nvdec_nv12(path, args.frames)
    else:
        source = ffmpeg_nv12(path, args.frames, w, h)
    sizes = [parse_size(s, w, h) for s in args.sizes.split(",")]
    result: dict[str, Any] = {"path": str(path), "size": [w, h], "frames": 0,
                              "colour": {name: {} for name in MATRICES}, "rows": {}, "kernel": {}}
    pairs = []
    for n, (y, uv) in enumerate(source):
        ok, frame = cap.read()
        if not ok:
            break
        for name, m in MATRICES.items():
            merge(result["colour"][name], stats(nv12_resize(y, uv, h, w, m), frame), n)
        pairs.append((y, uv, frame))
        result["frames"] = n + 1
    cap.release()
    if not pairs:
        raise SystemExit(f"nv12_match: no frames decoded from {path}")
    best = args.matrix
    if best == "auto":
        best = min(MATRICES, key=lambda k: result["colour"][k]["mean_diff"])
    result["matrix"] = best
    m = MATRICES[best]
    for out_w, out_h in sizes:
        key = f"{out_w}x{out_h}"
        acc: dict[str, Any] = {}
        refs, wants = [], []  # the reference rows and OpenCV's, per frame
        for n, (y, uv, frame) in enumerate(pairs):
            want = np.empty((out_h, out_w, 3), np.uint8)
            resize_into(frame, want)
            ref = nv12_resize(y, uv, out_h, out_w, m)
            refs.append(ref)
            wants.append(want)
            merge(acc, stats(ref, want), n)
        result["rows"][key] = acc
        if kernel is not None:
            single, batch = kernel.run([(y, uv) for y, uv, _ in pairs], out_h, out_w, m)
            k: dict[str, Any] = {"single_vs_reference": {}, "batch_vs_reference": {}, "single_vs_opencv": {}}
            for n, (ref, want, one, many) in enumerate(zip(refs, wants, single, batch, strict=True)):
                merge(k["single_vs_reference"], stats(one, ref), n)
                merge(k["batch_vs_reference"], stats(many, ref), n)
                merge(k["single_vs_opencv"], stats(one, want), n)
            result["kernel"][key] = k
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", type=Path, help="video files (default: media/vtest_1080p.mp4 if "
                    "present, the demo clip, and odd-size clips made from the first with ffmpeg)")
    ap.add_argument("--frames", type=int, default=20, help="frames per clip (default 20)")
    ap.add_argument("--sizes", default=DEFAULT_SIZES,
                    help=f"output sizes, WxH or xF (default {DEFAULT_SIZES})")
    ap.add_argument("--nv12-from", choices=("auto", "ffmpeg", "nvdec"), default="auto",
                    help="where the NV12 pictures come from (auto: ffmpeg if on PATH, else nvdec)")
    ap.add_argument("--matrix", choices=("auto", *MATRICES), default="auto",
                    help="colour matrix for the row step (auto: the one closest to OpenCV's colours)")
    ap.add_argument("--kernel", action="store_true", help="also run the CUDA kernel (needs a GPU and pycuda)")
    ap.add_argument("--reference-dir", default=str(ROOT / "tests"),
                    help="the folder holding nv12_reference.py (compare another version of it)")
    ap.add_argument("--json-out", type=Path, help="write every figure here as JSON")
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error("--frames must be at least 1")
    if args.nv12_from == "auto":
        args.nv12_from = "ffmpeg" if shutil.which("ffmpeg") else "nvdec"

    lines = build_lines()
    print(f"cv2 {cv2.__version__}")
    for line in lines:
        print(f"  {line}")
    kernel = KernelRunner() if args.kernel else None
    with tempfile.TemporaryDirectory() as tmp:
        clips = list(args.clips)
        if not clips:
            vtest = ROOT / "media" / "vtest_1080p.mp4"
            clips = [c for c in (vtest, DEMO_DIR / "shapes_demo.mp4") if c.is_file()]
            if clips and args.nv12_from == "ffmpeg":
                clips += make_odd_clips(clips[0], Path(tmp), args.frames)
        for clip in clips:
            if not clip.is_file():
                raise SystemExit(f"nv12_match: no video file at {clip}; pass an existing clip")
        report = {"cv2": cv2.__version__, "build": lines, "nv12_from": args.nv12_from,
                  "clips": [measure(c, args, kernel) for c in clips]}
    for r in report["clips"]:
        print(f"\n{Path(r['path']).name} {r['size'][0]}x{r['size'][1]}, {r['frames']} frames "
              f"(NV12 from {args.nv12_from})")
        for name, s in r["colour"].items():
            print(f"  colour {name:<6} exact {s['exact_pct']:9.5f}%  mean diff {s['mean_diff']:.4f}  "
                  f"max diff {s['max_diff']}")
        print(f"  rows with {r['matrix']}:")
        for key, s in r["rows"].items():
            line = (f"    {key:>11}  exact {s['exact_pct']:9.5f}%  mean diff {s['mean_diff']:.4f}  "
                    f"max diff {s['max_diff']}")
            if key in r["kernel"]:
                k = r["kernel"][key]
                line += (f" | kernel vs reference {k['single_vs_reference']['exact_pct']:.5f}% "
                         f"(batched {k['batch_vs_reference']['exact_pct']:.5f}%), "
                         f"vs OpenCV {k['single_vs_opencv']['exact_pct']:.5f}%")
            print(line)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
