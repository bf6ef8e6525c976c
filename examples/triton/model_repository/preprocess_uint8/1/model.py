"""Triton Python backend: uint8 BGR frames [N, H, W, 3] -> float32 RGB tensors [N, 3, H, W] scaled to 0..1.

What edgeinfer's CPU preprocessing does after the letterbox (colour order, scale, layout), moved to the server so
that the client sends a quarter of the bytes. For another network change the three lines marked below (and the
dims in config.pbtxt)."""

import numpy as np
import triton_python_backend_utils as pb_utils

SCALE = np.float32(1 / 255)  # the network's normalisation: pixel * SCALE (add mean/std here if it has them)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            frames = pb_utils.get_input_tensor_by_name(request, "frame").as_numpy()
            # BGR -> RGB and HWC -> CHW as one strided view; astype makes the one contiguous float32 copy
            tensor = frames[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
            np.multiply(tensor, SCALE, out=tensor)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("images", tensor)]))
        return responses
