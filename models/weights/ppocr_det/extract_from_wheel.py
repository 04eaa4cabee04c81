"""Extract the PP-OCRv4 text-detection ONNX model from the rapidocr_onnxruntime wheel.

    python models/weights/ppocr_det/extract_from_wheel.py [--wheel PATH]

Without --wheel it runs ``pip download --no-deps rapidocr_onnxruntime==1.4.4`` into a
temporary folder. The extracted file must match the recorded sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
SHA256 = "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded rapidocr_onnxruntime wheel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "-q",
                    "-d",
                    tmp,
                    "rapidocr_onnxruntime==1.4.4",
                ],
                check=True,
            )
            wheel = next(Path(tmp).glob("rapidocr_onnxruntime-*.whl"))
        data = zipfile.ZipFile(wheel).read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        print(f"sha256 {digest} differs from the recorded {SHA256}", file=sys.stderr)
        return 1
    out = HERE / Path(MEMBER).name
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
