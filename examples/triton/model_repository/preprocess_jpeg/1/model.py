"""Triton Python backend: JPEG files (BYTES [N, 1]) -> float32 RGB tensors [N, 3, H, W] scaled to 0..1.

The server's venv needs Pillow (tests/triton-server-requirements.txt). A JPEG that does not decode, or decodes
to another size than the network's input, fails that request with a message naming what came."""

import io

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image

SCALE = np.float32(1 / 255)


class TritonPythonModel:
    def initialize(self, args):
        import json

        dims = json.loads(args["model_config"])["output"][0]["dims"]
        self.size = (int(dims[2]), int(dims[1]))  # (W, H) as Pillow gives it

    def execute(self, requests):
        responses = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, "jpeg").as_numpy().reshape(-1)
            try:
                tensor = np.stack([self._decode(item) for item in items]).transpose(0, 3, 1, 2).astype(np.float32)
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            np.multiply(tensor, SCALE, out=tensor)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("images", tensor)]))
        return responses

    def _decode(self, data) -> np.ndarray:
        try:
            image = Image.open(io.BytesIO(bytes(data)))
            image = image.convert("RGB")  # decodes; JPEGs are YCbCr, Pillow gives RGB
        except Exception as exc:
            raise ValueError(f"a batch item is not a decodable JPEG ({len(data)} bytes): {exc}") from None
        if image.size != self.size:
            raise ValueError(f"a JPEG of {image.size[0]}x{image.size[1]} came; the network takes "
                             f"{self.size[0]}x{self.size[1]} (send the letterboxed frame)")
        return np.asarray(image)
